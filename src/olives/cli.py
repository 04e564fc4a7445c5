"""`olives <command>`: one sub-command per DVC stage, plus scoring and run comparison.

Each stage command is a thin entry: load its `params.yaml` section into a typed config, call
the pure core function, write the outputs. The cores live in their own modules and are tested
without the CLI.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from olives.compare import DEFAULT_METRICS, DEFAULT_PARAMS
from olives.config import ConfigError, Params, load_params

log = logging.getLogger("olives")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def cmd_download(params: Params, args: argparse.Namespace) -> None:
    from olives.data.sources import download

    report = download(params)
    write_json(Path(params.data.raw_dir).parent / "raw_report.json", report)
    for split, info in report["splits"].items():
        log.info(
            "%s: %d rows, %d labelled, %d patients",
            split,
            info["rows"],
            info["labelled_rows"],
            info["patients"],
        )
        for warning in info["warnings"]:
            log.warning(warning)


def cmd_preprocess(params: Params, args: argparse.Namespace) -> None:
    from olives.data.cache import build_cache
    from olives.data.sources import Columns

    report = build_cache(Path(params.data.raw_dir), params.preprocess, Columns.from_params(params))
    write_json(Path("reports/preprocess.json"), report)
    log.info(
        "cached %d images (%d skipped, %d duplicate rows) at %s images/s",
        report["cached"],
        report["skipped_corrupt"],
        report["duplicate_rows"],
        report["images_per_second"],
    )


def cmd_split(params: Params, args: argparse.Namespace) -> None:
    from olives.data.cache import open_cache
    from olives.data.prepare import make_splits, write_outputs
    from olives.data.sources import Columns

    images, index = open_cache(Path(params.preprocess.cache_dir))
    index, stats, summary = make_splits(
        index, images, params.split, Columns.from_params(params), params.seed
    )
    write_outputs(Path(params.split.out_dir), index, stats, summary)
    for name, part in summary["splits"].items():
        log.info("%s: %d patients, %d rows", name, part["n_patients"], part["n_rows"])


def cmd_train(params: Params, args: argparse.Namespace) -> None:
    from olives.train_stage import run_train

    metrics = run_train(params)
    if metrics:
        log.info(
            "best epoch %s: val macro AUROC %.4f, macro F1 %.4f",
            metrics["best_epoch"],
            metrics["val_macro_auroc"] or float("nan"),
            metrics["val_macro_f1"] or 0.0,
        )


def cmd_evaluate(params: Params, args: argparse.Namespace) -> None:
    from olives.evaluate_stage import run_evaluate

    metrics = run_evaluate(params)
    macro = metrics["macro"]
    log.info(
        "test: macro AUROC %s, macro F1 %s, VIP phase-1 %s, phase-2 %s",
        _fmt(macro.get("auroc")),
        _fmt(macro.get("f1")),
        _fmt(metrics.get("vip_phase1")),
        _fmt(metrics.get("vip_phase2")),
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def cmd_score(params: Params | None, args: argparse.Namespace) -> None:
    from olives.scoring import score_files

    print(score_files(Path(args.submission), Path(args.labels)).format())


def cmd_compare(params: Params, args: argparse.Namespace) -> None:
    from olives.compare import compare_runs, write_tables
    from olives.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(params.tracking)
    table = compare_runs(
        uri,
        args.experiment or params.tracking.experiment,
        args.params_cols or DEFAULT_PARAMS,
        args.metrics or DEFAULT_METRICS,
        args.sort_by,
        args.ascending,
    )
    print(table.to_markdown(index=False, floatfmt=".4f"))
    for path in write_tables(table, Path(args.out)):
        log.info("wrote %s", path)


def cmd_report(params: Params, args: argparse.Namespace) -> None:
    from olives.reporting.report import build_report

    log.info("wrote %s", build_report(params))


def cmd_ablate(params: Params, args: argparse.Namespace) -> None:
    from olives.reporting.ablation import run_cell

    metrics = run_cell(params, args.fusion, args.loss, args.seed)
    log.info(
        "%s/%s/seed %d: test macro AUROC %s",
        args.fusion,
        args.loss,
        args.seed,
        _fmt(metrics["macro"].get("auroc")),
    )


def cmd_paper(params: Params, args: argparse.Namespace) -> None:
    from olives.reporting.ablation import write_ablation

    out = Path(params.paper.out_dir)
    log.info("wrote %s", write_ablation(out / "runs", out))


COMMANDS: dict[str, tuple[Callable[[Params, argparse.Namespace], None], str]] = {
    "download": (cmd_download, "fetch the data source into data/raw (parquet, hub schema)"),
    "preprocess": (cmd_preprocess, "decode images once into the uint8 cache + index"),
    "split": (cmd_split, "patient-level train/val/test splits and train-only statistics"),
    "train": (cmd_train, "fit the model on the cache; log the run to MLflow"),
    "evaluate": (cmd_evaluate, "test-split predictions, metrics with CIs, ROC/PR curves"),
    "report": (cmd_report, "reports/report.md: data, results with CIs, curves, error analysis"),
    "score": (cmd_score, "score a VIP Cup submission CSV against a label CSV (phase-1 F1)"),
    "compare": (cmd_compare, "table of the experiment's MLflow runs: params vs metrics"),
    "ablate": (cmd_ablate, "train + evaluate one cell of the paper's ablation grid"),
    "paper": (cmd_paper, "aggregate the ablation: mean ± std over seeds per cell"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="olives", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="parameter file (params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {name: sub.add_parser(name, help=text) for name, (_, text) in COMMANDS.items()}
    parsers["score"].add_argument("submission", help="VIP Cup layout: path column, then B1..B6")
    parsers["score"].add_argument("labels", help="the same layout with the true labels")
    ablate = parsers["ablate"]
    ablate.add_argument("--fusion", required=True, choices=["image", "clinical", "concat", "film"])
    ablate.add_argument("--loss", required=True, choices=["focal", "bce", "asl"])
    ablate.add_argument("--seed", required=True, type=int)
    compare = parsers["compare"]
    compare.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment)")
    compare.add_argument(
        "--params",
        dest="params_cols",
        nargs="+",
        metavar="NAME",
        help=f"param columns (default: {' '.join(DEFAULT_PARAMS)})",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler, _ = COMMANDS[args.command]
    try:
        params = None if args.command == "score" else load_params(args.params)
        handler(params, args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except user_errors() as exc:
        if args.verbose:
            raise
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    return 0


def user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by inputs (data, files, servers): one clear line, no traceback
    (`-v` shows it). Anything else is a bug and keeps its traceback."""
    from olives.compare import CompareError
    from olives.data.cache import TooManyCorruptError
    from olives.data.decode import DecodeError
    from olives.data.schema import SchemaError
    from olives.data.sources import SourceError
    from olives.data.splits import SplitError
    from olives.scoring import ScoreError
    from olives.tracking import TrackingUnavailableError
    from olives.training import InitialLossError

    return (
        CompareError,
        TooManyCorruptError,
        DecodeError,
        SchemaError,
        SourceError,
        SplitError,
        ScoreError,
        TrackingUnavailableError,
        InitialLossError,
        FileNotFoundError,
    )


if __name__ == "__main__":
    sys.exit(main())
