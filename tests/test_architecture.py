"""The house rules: layers import downwards only, one stage module per DVC stage, short files."""

from __future__ import annotations

import ast

import yaml

from imports import SRC, direct_imports, lazy_exports, module_file, module_name, with_parents

# Lowest first, by package: a module may import its own package, the foundation and the layers
# below, never a layer above nor (but in the foundation and the entry points) a neighbour.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("olives", "olives.errors", "olives.io", "olives.config", "olives.runtime"),  # foundation
    ("olives.data", "olives.evaluation", "olives.tracking"),
    ("olives.models",),
    ("olives.training", "olives.serving", "olives.reporting"),
    ("olives.stages",),
    ("olives.cli", "olives.__main__"),
)
SHARED_LAYERS = (0, len(LAYERS) - 1)  # modules of these layers may import each other
LOOSE = {"__init__", "__main__", "cli", "config", "errors", "io", "runtime"}
# Rules written once: each of these names is defined in exactly one module of src/olives.
ONE_DEFINITION = (
    "torchrun",
    "needs_launch",
    "LaunchError",
    "volume_of",
    "volume_ids",
    "build_loop",
)
MAX_LINES = 700


def layer(module: str) -> int:
    """The layer of the longest prefix of `module` listed in LAYERS."""
    best, depth = None, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(f"{name}.")) and name.count(".") > depth:
                best, depth = index, name.count(".")
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def modules() -> list[str]:
    return sorted(module_name(p) for p in (SRC / "olives").rglob("*.py"))


def unit(module: str) -> str:
    """The package or top-level module that `module` belongs to (`olives.data.cache` -> data)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_module_imports_one_above_it_or_a_neighbour():
    wrong = [
        f"{m} (layer {layer(m)}) imports {i} (layer {layer(i)})"
        for m in modules()
        for i in direct_imports(m)
        if layer(i) > layer(m)
        or (layer(i) == layer(m) and unit(i) != unit(m) and layer(m) not in SHARED_LAYERS)
    ]
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> str | None:
    """A cycle of the directed `graph` as `a -> b -> a`, or None (depth-first search)."""
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> str | None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                return " -> ".join([*path, node, nxt])
            if nxt not in seen and (cycle := visit(nxt, [*path, node])):
                return cycle
        seen[node] = 2
        return None

    for node in sorted(graph):
        if node not in seen and (cycle := visit(node, [])):
            return cycle
    return None


def test_packages_form_no_cycle():
    edges = {(unit(m), unit(i)) for m in modules() for i in direct_imports(m) if unit(m) != unit(i)}
    assert not find_cycle({a: {b for x, b in edges if x == a} for a, _ in edges})


def test_no_loose_module_at_the_top():
    loose = {p.stem for p in (SRC / "olives").glob("*.py")} - LOOSE
    assert not loose, f"put these in a package: {sorted(loose)}"


def test_every_package_re_exports_its_public_names():
    for init in sorted((SRC / "olives").glob("*/__init__.py")):
        package = module_name(init)
        exported = set(lazy_exports(package).values())
        if package.startswith("olives.stages"):  # stages are run by name, not for names
            continue
        modules_with_names = {
            module_name(p)
            for p in init.parent.glob("*.py")
            if p.stem != "__init__" and public_names(p)
        }
        missing = modules_with_names - exported - {"olives.serving.mlflow_model"}
        assert not missing, f"{package}/__init__.py does not re-export {sorted(missing)}"


def public_names(path) -> set[str]:
    tree = ast.parse(path.read_text())
    defined = (ast.FunctionDef, ast.ClassDef)
    return {n.name for n in tree.body if isinstance(n, defined) and not n.name.startswith("_")}


def test_imports_from_a_package_name_a_module_or_a_re_exported_name():
    """What the import analysis (and so every stage's DVC deps) can see is what runs."""
    unknown = []
    for path in (SRC / "olives").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("olives")):
                continue
            target = module_file(node.module)
            if target is None or target.name != "__init__.py":
                continue
            table = lazy_exports(node.module)
            defined = public_names(target) | {"__version__"}
            for alias in node.names:
                name = alias.name
                if (
                    name not in table
                    and name not in defined
                    and not module_file(f"{node.module}.{name}")
                ):
                    unknown.append(f"{path.relative_to(SRC)}: from {node.module} import {name}")
    assert not unknown, "\n".join(unknown)


def test_each_rule_is_defined_once():
    definitions: dict[str, list[str]] = {name: [] for name in ONE_DEFINITION}
    for path in (SRC / "olives").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in definitions:
                definitions[node.name].append(str(path.relative_to(SRC)))
    twice = {name: where for name, where in definitions.items() if len(where) != 1}
    assert not twice, twice
    launchers = [
        str(p.relative_to(SRC))
        for p in (SRC / "olives").rglob("*.py")
        if "torch.distributed.run" in p.read_text()
    ]
    assert launchers == ["olives/runtime.py"]


PIPELINE_FILES = tuple(
    SRC.parent / p for p in ("dvc.yaml", "paper/dvc.yaml", "paper/teacher/dvc.yaml")
)


def pipeline_stages(path) -> dict:
    return yaml.safe_load(path.read_text())["stages"]


def test_one_stage_module_per_dvc_stage_the_main_pipeline_apart():
    """stages/ holds the main pipeline's stages, stages/paper/ the paper's, nothing else."""
    main, *papers = PIPELINE_FILES
    paper = set().union(*(pipeline_stages(p) for p in papers))
    stage_dir = SRC / "olives/stages"
    assert {p.stem for p in stage_dir.glob("*.py")} - {"__init__"} == set(pipeline_stages(main))
    assert {p.stem for p in (stage_dir / "paper").glob("*.py")} - {"__init__"} == paper


def test_stage_commands_run_their_module():
    for path, group in zip(PIPELINE_FILES, ("stage", "paper", "paper"), strict=True):
        for name, stage in pipeline_stages(path).items():
            assert stage["cmd"].split()[:3] == ["olives", group, name]


def test_main_stages_never_import_the_papers():
    wrong = [
        f"{m} imports {i}"
        for m in modules()
        if not m.startswith("olives.stages.paper") and m != "olives.cli"
        for i in direct_imports(m)
        if i.startswith("olives.stages.paper")
    ]
    assert not wrong, "\n".join(wrong)


def test_modules_form_no_import_cycle():
    """No module imports one that (directly or not) imports it back, lazily or not: a cycle
    hides which module is the lower one (models.bundle <-> models.ensemble was one). A module
    running its own package's `__init__` is no edge."""
    graph = {m: set(direct_imports(m)) - with_parents(m) for m in modules()}
    assert not find_cycle(graph)
    assert find_cycle({**graph, "olives.models.ensemble": {"olives.models.bundle"}})


def test_no_source_file_is_long():
    long = {
        str(p.relative_to(SRC)): n
        for p in (SRC / "olives").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long
