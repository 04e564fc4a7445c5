"""Static import graph of the `olives` package (ast only: nothing is imported or run)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_file(name: str) -> Path | None:
    """`olives.a.b` -> src/olives/a/b.py or src/olives/a/b/__init__.py (None if neither)."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def lazy_exports(package: str) -> dict[str, str]:
    """Name -> defining module of a package whose `__init__` re-exports lazily
    (`lazy_loader.attach(__name__, submod_attrs={...})`): `from olives.data import open_cache`
    runs `olives.data.cache` when the name is first used."""
    path = module_file(package)
    if path is None or path.name != "__init__.py":
        return {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "submod_attrs":
            table = ast.literal_eval(node.value)
            return {
                name: f"{package}.{module}" for module, names in table.items() for name in names
            }
    return {}


@cache
def direct_imports(name: str) -> frozenset[str]:
    """Modules of `olives` that module `name` imports anywhere (top level or in functions)."""
    path = module_file(name)
    assert path is not None, name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from olives.stages import train` imports the submodule olives.stages.train, and
            # `from olives.models import ModelBundle` the module that defines the name
            lazy = lazy_exports(node.module)
            found.update(lazy.get(a.name, f"{node.module}.{a.name}") for a in node.names)
    return frozenset(m for m in found if m.split(".")[0] == "olives" and module_file(m))


def with_parents(name: str) -> set[str]:
    """Importing `olives.a.b` runs olives/__init__.py and olives/a/__init__.py too."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def closure(name: str) -> set[str]:
    """Every `olives` module that importing `name` can run."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for module in with_parents(current) - seen:
            seen.add(module)
            todo.extend(direct_imports(module))
    return seen


def closure_files(name: str) -> set[Path]:
    return {module_file(m) for m in closure(name)}  # type: ignore[misc]
