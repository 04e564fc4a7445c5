"""`olives <command>`: parse the arguments, load `params.yaml`, dispatch.

The user's commands first (predict, score, compare, promote, request, ui); the main pipeline's
stages under `olives stage <name>` (`olives.stages.<name>.run(params)`) and the paper's under
`olives paper <name>` (`olives.stages.paper.<name>`); an old stage name (`olives train`) gets
one line that names the new one. Input errors (`olives.errors.InputError`, a missing file)
print one line and exit 1 (2 for a bad parameter); `-v` shows the traceback. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from olives.config import TTA_SHIFT, ConfigError, EvaluateConfig, Params, TtaView, load_params
from olives.data.volumes import VOLUME_FROM
from olives.errors import InputError
from olives.evaluation.compare import DEFAULT_METRICS

log = logging.getLogger("olives")

STAGES = {  # the main pipeline (dvc.yaml), in order: `olives stage <name>`
    "check": "check params.yaml (unknown or missing keys) before any stage deletes outputs",
    "download": "fetch the data source into data/raw (parquet, hub schema)",
    "preprocess": "decode images once into the uint8 cache + index",
    "split": "patient-level train/val/test splits and train-only statistics",
    "pretrain": "clinically supervised contrastive pre-training of the backbone (off at 0 epochs)",
    "train": "fit the model on the cache; log the run to MLflow",
    "evaluate": "test-split predictions, metrics with CIs, ROC/PR curves",
    "report": "reports/report.md: data, results with CIs, curves, error analysis",
    "track": "make MLflow hold what DVC holds: run, registered model, test metrics, champion",
}
PAPER = {  # the paper's axes (paper/dvc.yaml, paper/teacher/dvc.yaml): `olives paper <name>`
    "data": "the axes' own synthetic data and one patient split per split seed",
    "ablate": "the fusion x loss axis: train + evaluate one run (split, seed)",
    "init_pretrain": "the init axis: the contrastive encoder of one (split, seed)",
    "init_cell": "the init axis: train + evaluate one init x mode run (split, seed)",
    "aggregate": "the fusion x loss and init tables: paired comparisons per protocol",
    "fold": "the teacher axis: one k-fold teacher within a split's training patients",
    "ensemble": "the teacher axis: a pair's fold teachers as one model file, gated, tested",
    "pseudo": "the teacher axis: the ensemble's soft labels on training patients' unlabelled scans",
    "single": "the teacher axis: the baseline, one model on the labelled scans",
    "student": "the teacher axis: one model on labelled + pseudo-labelled scans, tested +/- TTA",
    "control": "the teacher axis: a control of the student (same steps, self-training, shuffled)",
    "teacher_table": "the teacher axis's table: paired comparisons per protocol",
    "teacher_track": "the teacher axis in MLflow: each pair's ensemble and student registered",
}
PAIR = {  # a run of the paper's axes: its patient split's seed and its training seed
    "split": {"required": True, "type": int},
    "seed": {"required": True, "type": int},
}
PAPER_ARGS: dict[str, dict[str, dict[str, Any]]] = {  # each stage's matrix coordinates
    "ablate": {
        "fusion": {"required": True, "choices": ["image", "clinical", "concat", "film"]},
        "loss": {"required": True, "choices": ["focal", "bce", "asl"]},
        **PAIR,
    },
    "init_pretrain": PAIR,
    "init_cell": {
        "init": {"required": True, "choices": ["imagenet", "contrastive"]},
        "mode": {"required": True, "choices": ["linear", "finetune"]},
        **PAIR,
    },
    "fold": {**PAIR, "fold": {"required": True, "type": int}},
    "ensemble": PAIR,
    "pseudo": PAIR,
    "single": PAIR,
    "student": PAIR,
    "control": {
        "kind": {"required": True, "choices": ["same_steps", "self_training", "shuffled"]},
        **PAIR,
    },
}
TOOLS = {  # what a user types by hand, listed first
    "predict": "apply a trained model to scans, folders, parquet or DICOM",
    "score": "score a VIP Cup submission CSV against labels (phase-1 F1)",
    "compare": "the experiment's MLflow runs as a table: params vs metrics",
    "promote": "move @champion to the workspace's model (or --version N)",
    "request": "print the JSON body of a request to the served model",
    "ui": "start the MLflow UI on the project's runs table",
}
GROUPS = {
    "stage": "run one stage of the main pipeline (dvc repro runs them)",
    "paper": "run one stage of the paper's grids (make paper, teacher)",
}
STAGE_NOTE = (
    ". Its settings are read from params.yaml (--params); for an experiment use "
    "`dvc exp run -S <key>=<value>`, which also records the result."
)
# What each command reads and writes, and one example (the end of its --help).
USAGE = {
    "check": ("params.yaml", "data/params_checked.txt", "olives stage check"),
    "download": ("data.source", "data/raw/, data/raw_report.json", "dvc repro download"),
    "preprocess": ("data/raw/", "data/cache/, reports/preprocess.json", "dvc repro preprocess"),
    "split": ("data/cache/index.parquet", "data/split/", "dvc exp run -S split.val_fraction=0.2"),
    "pretrain": ("data/cache/, data/split/", "pretrain/", "dvc exp run -S pretrain.epochs=10"),
    "train": (
        "data/cache/, data/split/",
        "models/, reports/train/, an MLflow run",
        "dvc exp run -S train.epochs=3",
    ),
    "evaluate": (
        "models/, data/cache/, data/split/",
        "reports/metrics.json, summary.json, predictions.csv, plots/, figures/",
        "dvc repro evaluate",
    ),
    "report": (
        "models/, reports/",
        "reports/report.md, tables/, figures/report/",
        "dvc repro report",
    ),
    "track": (
        "models/, reports/",
        "MLflow: run, registered version, test metrics, champion",
        "dvc repro track",
    ),
    "teacher_track": (
        "reports/paper/teacher/p<split>-s<seed>/{ensemble,student}/",
        "MLflow: olives-biomarkers-ensemble and -student versions, aliases p<split>-s<seed>",
        "make teacher",
    ),
    "promote": ("models/ (or --version)", "the champion alias in MLflow", "olives promote"),
    "compare": (
        "the MLflow store",
        "reports/compare/",
        "olives compare --sort-by test_macro_auroc",
    ),
    "predict": (
        "scans, folders, parquet, DICOM; a model",
        "OUT.csv, OUT.json",
        "olives predict scans/ --out predictions.csv --by volume",
    ),
    "request": (
        "image files",
        "a JSON request on stdout",
        "olives request scan.png > request.json",
    ),
    "score": (
        "two VIP Cup CSVs",
        "the score on stdout",
        "olives score reports/vip_submission.csv reports/vip_labels.csv",
    ),
    "ui": (
        "the MLflow store (tracking.tracking_uri or MLFLOW_TRACKING_URI)",
        "nothing: it serves the store until Ctrl-C",
        "olives ui --port 5000",
    ),
}
WITHOUT_PARAMS = ("score", "predict", "request")  # tools that read no params.yaml


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help that lists sub-commands in the order given, without argparse's {a,b,c} line."""

    def _format_action(self, action: argparse.Action) -> str:
        if isinstance(action, argparse._SubParsersAction):
            return "".join(self._format_action(a) for a in action._get_subactions())
        return super()._format_action(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="olives",
        usage="olives [-v] [--params FILE] COMMAND ...",
        description="Retinal-biomarker detection on OLIVES OCT B-scans: apply, serve and compare\n"
        "trained models. The pipeline's stages are under `olives stage` (`dvc repro` runs\n"
        "them), the paper's under `olives paper`.",
        epilog="Stage settings live in params.yaml; change them for one experiment with\n"
        "`dvc exp run -S train.epochs=3`. See README.md and docs/.",
        formatter_class=Formatter,
    )
    parser.add_argument(
        "--params", default="params.yaml", metavar="FILE", help="parameter file (params.yaml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks, debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    tools = {name: add(sub, name, text) for name, text in TOOLS.items()}
    add_tool_arguments(tools)
    for group, text in GROUPS.items():
        names = STAGES if group == "stage" else PAPER
        stages = add(sub, group, text, prog=f"olives {group}").add_subparsers(
            dest="stage", required=True, metavar="STAGE", title="stages"
        )
        for name, stage_text in names.items():
            stage = add(stages, name, stage_text + STAGE_NOTE, prog=f"olives {group} {name}")
            for arg, spec in PAPER_ARGS.get(name, {}).items() if group == "paper" else ():
                stage.add_argument(f"--{arg}", **spec)
    return parser


def add(sub: Any, name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
    """One sub-command: its help line, its description and what it reads and writes."""
    return sub.add_parser(
        name,
        help=text.split(". ")[0],
        description=textwrap.fill(text, 79),
        epilog=usage(name),
        formatter_class=Formatter,
        **kwargs,
    )


def add_tool_arguments(parsers: dict[str, argparse.ArgumentParser]) -> None:
    predict = parsers["predict"]
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    predict.add_argument(
        "--model",
        default="models",
        help="model file or folder, or an MLflow URI (models:/NAME/VERSION, models:/NAME@ALIAS, "
        "runs:/ID/model); default: models/",
    )
    predict.add_argument(
        "--out",
        type=Path,
        default=Path("predictions.csv"),
        help="CSV with one row per scan: ids, probabilities, decisions (1/0, empty where the "
        "scan failed), warning, error, and model_sha256 (the model file's SHA-256); beside it "
        "OUT.json says what these predictions are: the model file or URI and its SHA-256, the "
        "data it was trained on (with a warning for synthetic data), labels, thresholds, input "
        "size, scans predicted/failed/warned (default: predictions.csv, predictions.json)",
    )
    predict.add_argument(
        "--by",
        choices=["scan", "volume", "eye", "visit"],
        default="scan",
        help="also write one row per volume, eye or visit to OUT.<by>.csv",
    )
    predict.add_argument(
        "--gradcam",
        type=Path,
        metavar="DIR",
        help="Grad-CAM overlays here: one PNG per scan and biomarker, the scan at its own aspect "
        "ratio under a strip with the biomarker, probability, threshold and decision",
    )
    predict.add_argument(
        "--batch-size",
        type=int,
        default=EvaluateConfig().batch_size,
        help="scans per forward pass (default: evaluate.batch_size's default)",
    )
    predict.add_argument(
        "--volume-from",
        choices=VOLUME_FROM,
        default="file",
        help="volumes of scans whose input names none (no metadata volume, not DICOM): one per "
        "file (default) or one per folder",
    )
    predict.add_argument(
        "--tta",
        nargs="+",
        choices=typing.get_args(TtaView),
        default=[],
        metavar="VIEW",
        help="test-time augmentation: average each scan's logits over the scan itself and these "
        f"views (hflip: flipped left-right; shift: moved left and right by {TTA_SHIFT:.0%}% of "
        "the width, zero fill) before calibration and thresholds, as evaluate.tta does; one "
        "forward pass for the scan and one per view, shift being two (default: none)",
    )
    for name, unit in (("bcva", "ETDRS letters"), ("cst", "micrometres")):
        predict.add_argument(
            f"--{name}",
            type=float,
            help=f"{name.upper()} ({unit}) for every scan whose input gives none (default: "
            "the metadata's, else imputed and flagged)",
        )
    parsers["ui"].add_argument("--host", default="127.0.0.1", help="address (127.0.0.1)")
    parsers["ui"].add_argument("--port", type=int, default=5000, help="port (5000)")
    parsers["promote"].add_argument(
        "--version", help="registered version to promote (default: the file in train.model_dir)"
    )
    request = parsers["request"]
    request.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, TIFF or JPEG files")
    request.add_argument("--bcva", type=float, help="BCVA (ETDRS letters) on every row")
    request.add_argument("--cst", type=float, help="CST (micrometres) on every row")
    parsers["score"].add_argument("submission", help="VIP Cup layout: path column, then B1..B6")
    parsers["score"].add_argument("labels", help="the same layout with the true labels")
    compare = parsers["compare"]
    compare.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment)")
    compare.add_argument(
        "--params",
        dest="params_cols",
        nargs="+",
        metavar="NAME",
        help="param columns (default: the params that differ between the runs)",
    )
    compare.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        help=f"metric columns (default: {' '.join(DEFAULT_METRICS)})",
    )
    compare.add_argument("--sort-by", help="column to sort by (default: first metric)")
    compare.add_argument("--ascending", action="store_true", help="smallest first")
    compare.add_argument("--out", default="reports/compare", help="folder for .md and .csv")


def usage(name: str) -> str | None:
    if name not in USAGE:
        return None
    reads, writes, example = USAGE[name]
    return f"reads: {reads}\nwrites: {writes}\nexample: {example}"


def dispatch(params: Params | None, args: argparse.Namespace) -> None:
    if args.command in ("stage", "paper"):
        package = "olives.stages" + ".paper" * (args.command == "paper")
        module = importlib.import_module(f"{package}.{args.stage}")
        coordinates = {arg: getattr(args, arg) for arg in PAPER_ARGS.get(args.stage, {})}
        module.run(params, **coordinates)
    elif args.command == "predict":
        from olives.serving import predict

        predict.run(
            args.inputs,
            args.model,
            args.out,
            by=args.by,
            gradcam_dir=args.gradcam,
            batch_size=args.batch_size,
            volume_from=args.volume_from,
            tta=args.tta,
            bcva=args.bcva,
            cst=args.cst,
        )
    elif args.command == "request":
        import json

        from olives.serving.request import request_body

        clinical = {"BCVA": args.bcva, "CST": args.cst}
        print(json.dumps(request_body(args.images, clinical), allow_nan=False))
    elif args.command == "score":
        from olives.evaluation.scoring import score_files

        print(score_files(Path(args.submission), Path(args.labels)).format())
    elif args.command == "compare":
        compare(params, args)
    elif args.command == "promote":
        promote(params, args.version)
    elif args.command == "ui":
        from olives.tracking.ui import run_ui

        run_ui(params.tracking, host=args.host, port=args.port)


def moved(argv: Sequence[str]) -> str | None:
    """The line for a stage called by its old name (`olives train`): where it lives now."""
    words = iter(argv)
    for word in words:
        if word == "--params":
            next(words, None)
        elif not word.startswith("-"):
            group = "stage" if word in STAGES else "paper" if word in PAPER else None
            if group is None:
                return None
            return f"`olives {word}` is now `olives {group} {word}` (or `dvc repro`)"
    return None


def compare(params: Params, args: argparse.Namespace) -> None:
    from olives.evaluation.compare import compare_runs, write_tables
    from olives.tracking.runs import resolve_tracking_uri

    table = compare_runs(
        resolve_tracking_uri(params.tracking),
        args.experiment or params.tracking.experiment,
        args.params_cols,
        args.metrics or DEFAULT_METRICS,
        args.sort_by,
        args.ascending,
    )
    print(table.to_markdown(index=False, floatfmt=".4f"))
    for path in write_tables(table, Path(args.out)):
        log.info("wrote %s", path)


def promote(params: Params, version: str | None) -> None:
    from olives.io import file_sha256
    from olives.models.bundle import FILE
    from olives.tracking.registry import promote_file
    from olives.tracking.runs import Tracker

    sha = file_sha256(Path(params.train.model_dir) / FILE)
    log.info("%s", promote_file(Tracker(params.tracking), sha, version))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if line := moved(argv):
        print(f"olives: error: {line}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    if int(os.environ.get("RANK", 0)) > 0:
        level = logging.WARNING  # under torchrun, rank 0 alone reports progress
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = None if args.command in WITHOUT_PARAMS else load_params(args.params)
        dispatch(params, args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except (InputError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
