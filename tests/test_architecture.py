"""The house rules: layers import downwards only, one stage module per DVC stage, short files."""

from __future__ import annotations

import yaml

from imports import SRC, direct_imports, module_name

# Lowest first. A module may import its own layer and the ones below, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("olives", "olives.errors", "olives.io", "olives.config"),
    (
        "olives.data.schema",
        "olives.data.ids",
        "olives.data.decode",
        "olives.data.shards",
        "olives.data.splits",
        "olives.data.synthetic",
        "olives.evaluation.metrics",
        "olives.training.losses",
        "olives.training.contrastive",
        "olives.training.augment",
        "olives.runtime",
        "olives.tracking.runs",
        "olives.io",
        "olives.initaxis",
        "olives.runtime",
        "olives.training.checkpoint",
        "olives.evaluation.calibration",
    ),
    (
        "olives.data",
        "olives.data.sources",
        "olives.data.cache",
        "olives.data.prepare",
        "olives.models",
        "olives.evaluation.scoring",
        "olives.evaluation.compare",
        "olives.serving.scans",
    ),
    ("olives.data.loader",),
    ("olives.reporting",),  # below training: a report never trains or evaluates
    (
        "olives.models.inference",
        "olives.training.loop",
        "olives.training.pretrain",
        "olives.serving.predictor",
        "olives.serving.pyfunc",
        "olives.serving.mlflow_model",
        "olives.serving.predict",
    ),
    ("olives.stages",),
    ("olives.cli", "olives.__main__"),
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


def test_no_module_imports_one_above_it():
    upward = [
        f"{m} (layer {layer(m)}) imports {i} (layer {layer(i)})"
        for m in modules()
        for i in direct_imports(m)
        if layer(i) > layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_one_stage_module_per_dvc_stage():
    names = set()
    for path in (SRC.parent / "dvc.yaml", SRC.parent / "paper/dvc.yaml"):
        names |= set(yaml.safe_load(path.read_text())["stages"])
    stage_files = {p.stem for p in (SRC / "olives/stages").glob("*.py")} - {"__init__"}
    assert stage_files == names


def test_stage_commands_run_their_module():
    for path in (SRC.parent / "dvc.yaml", SRC.parent / "paper/dvc.yaml"):
        for name, stage in yaml.safe_load(path.read_text())["stages"].items():
            assert stage["cmd"].split()[:2] == ["olives", name]


def test_no_source_file_is_long():
    long = {
        str(p.relative_to(SRC)): n
        for p in (SRC / "olives").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long
