"""Files: the JSON, folder and hash helpers every stage shares, and where each stage writes.

Folders come from the params that name them (`train.report_dir`, `evaluate.out_dir`,
`report.out_dir`); the files inside are fixed here (`TrainFiles`, `EvaluateFiles` ...), and
both the stage that writes a file and the stage that reads it take its path from here."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, BinaryIO

from olives.errors import InputError


def write_json(path: str | Path, data: Any) -> Path:
    """Pretty JSON with a trailing newline (stable bytes for DVC and git)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def recorded_source(report: str | Path) -> str:
    """The source `download` fetched from, as its report records it: what later stages say
    they ran on (the params may have changed since)."""
    path = Path(report)
    if not path.is_file():
        raise InputError(f"{path}: not found; run `olives stage download` first")
    source = read_json(path).get("source")
    if not isinstance(source, str):
        raise InputError(f"{path}: no 'source' recorded; re-run `olives stage download`")
    return source


def inside(root: str | Path, name: str) -> Path:
    """`root / name` when it stays inside `root`: a path read from a file (`metadata.csv`'s
    `file_name`) must not reach the rest of the disk, by `..`, an absolute path or a link.
    The message names the path; the caller adds the file and line."""
    text = str(name)
    if not text.strip():
        raise InputError("empty file name")
    windows = PureWindowsPath(text)
    if Path(text).is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        raise InputError(f"file name {text!r} is absolute; give it relative to {root}")
    base = Path(root).resolve()
    path = Path(root) / text
    try:
        resolved = path.resolve()
    except RuntimeError:  # Python 3.11 on a link loop
        raise InputError(f"file name {text!r} is a symbolic link loop") from None
    except OSError as exc:
        raise InputError(f"file name {text!r} cannot be resolved: {exc.strerror}") from None
    if not resolved.is_relative_to(base):
        raise InputError(f"file name {text!r} leads outside {root}")
    return path


def reset_dir(path: str | Path) -> Path:
    """Empty `path` (a stage output), so nothing stale from an earlier run survives."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def none_if_nan(value: Any) -> float | None:
    """A JSON-ready number: None for None or NaN (an undefined metric), else a float."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (identifies a model file across stages and MLflow)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


CURVES = ("roc", "pr", "calibration")


@dataclass(frozen=True)
class PretrainFiles:
    """`pretrain.out_dir`: the pre-trained encoder and its record."""

    root: Path

    @property
    def encoder(self) -> Path:
        return self.root / "encoder.safetensors"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def summary(self) -> Path:
        return self.root / "pretrain.json"


@dataclass(frozen=True)
class TrainFiles:
    """`train.report_dir`: the training record beside the model."""

    root: Path

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def thresholds(self) -> Path:
        return self.root / "thresholds.json"

    @property
    def val_per_label(self) -> Path:
        return self.root / "val_per_label.csv"

    @property
    def params(self) -> Path:
        return self.root / "params.json"

    @property
    def learning_curves(self) -> Path:
        return self.root / "learning_curves.png"


@dataclass(frozen=True)
class EvaluateFiles:
    """`evaluate.out_dir`: test predictions, metrics, curves."""

    root: Path

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def vip_submission(self) -> Path:
        return self.root / "vip_submission.csv"

    @property
    def vip_labels(self) -> Path:
        """The test split's true labels in the VIP Cup layout (what `olives score` reads)."""
        return self.root / "vip_labels.csv"

    @property
    def metrics(self) -> Path:
        """Every metric with its interval (the report reads it)."""
        return self.root / "metrics.json"

    @property
    def summary(self) -> Path:
        """The few headline numbers that DVC shows as metrics."""
        return self.root / "summary.json"

    def curve_dir(self, kind: str) -> Path:
        """`plots/<kind>/<label>.csv` (DVC plots), kind in `CURVES`."""
        return self.root / "plots" / kind

    def figure(self, kind: str) -> Path:
        return self.root / "figures" / f"{kind}.png"


@dataclass(frozen=True)
class ReportFiles:
    """`report.out_dir`: the Markdown report, its tables and gallery figures."""

    root: Path

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def gallery(self) -> Path:
        return self.root / "figures" / "report"


@dataclass(frozen=True)
class PaperFiles:
    """`paper.out_dir`: one folder per run of an axis, keyed by its patient split and training
    seed (`pair`), then the aggregated tables."""

    root: Path

    @staticmethod
    def pair(split: int, seed: int) -> str:
        """`p<split>-s<seed>`: the patient split's seed and the training seed of a run."""
        return f"p{split}-s{seed}"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def cell(self, name: str) -> Path:
        """`runs/<cell>/` holding `train/` and `eval/` of that fusion x loss run."""
        return self.runs / name

    def cell_evaluation(self, cell: Path) -> EvaluateFiles:
        return EvaluateFiles(cell / "eval")

    @property
    def init_runs(self) -> Path:
        """`init/<init>-<mode>-p<split>-s<seed>/`: the initialisation axis's runs."""
        return self.root / "init"

    def teacher(self, split: int, seed: int, fold: int) -> Path:
        """`teacher/p<split>-s<seed>/folds/f<fold>/`: one k-fold teacher (split, model, train
        record, oof.csv)."""
        return self.teachers(split, seed) / "folds" / f"f{fold}"

    def teachers(self, split: int, seed: int) -> Path:
        """`teacher/p<split>-s<seed>/`: the fold teachers (`folds/`), `ensemble/`, the
        pseudo-label tables, `single/`, `student/` and the controls (each `model/`, `train/`,
        `eval/`)."""
        return self.root / "teacher" / self.pair(split, seed)

    def encoder(self, split: int, seed: int) -> Path:
        """`pretrain/p<split>-s<seed>/`: one contrastive encoder (`PretrainFiles` layout)."""
        return self.root / "pretrain" / self.pair(split, seed)


# ---------------------------------------------------------------------------------------------
# Regular files: what every reader of outside files (download, predict, serving) opens
# ---------------------------------------------------------------------------------------------

FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    return next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")


def not_a_file(path: Path, info: os.stat_result) -> str:
    return f"{path} is {file_kind(info.st_mode)}, not a regular file"


def stat_or_why(path: Path) -> os.stat_result | str:
    """The file's status, links followed, or why there is none (one line naming the path)."""
    try:
        return os.stat(path)
    except OSError as exc:
        if not os.path.islink(path):
            if exc.errno == errno.ENOENT:
                return f"not found: {path}"
            return f"cannot read {path}: {exc.strerror or exc}"
        if exc.errno == errno.ELOOP:
            return f"{path}: symbolic link loop"
        try:
            return f"{path}: broken link to {os.readlink(path)}"
        except OSError:
            return f"{path}: broken link"


def not_regular(path: Path) -> str | None:
    """Why `path` is no regular file (links followed), or None when it is one."""
    info = stat_or_why(path)
    if isinstance(info, str):
        return info
    return None if stat.S_ISREG(info.st_mode) else not_a_file(path, info)


def open_regular(path: Path) -> BinaryIO:
    """Open a file for reading only if it is a regular file: non-blocking (a FIFO swapped in
    after `stat` does not hang) and checked again on the descriptor."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    handle = os.fdopen(os.open(path, flags), "rb")
    info = os.fstat(handle.fileno())
    if not stat.S_ISREG(info.st_mode):
        handle.close()
        raise InputError(not_a_file(path, info))
    return handle


def read_regular(path: Path, max_bytes: int | None = None) -> bytes:
    """A regular file's bytes, its size checked before reading (at most `max_bytes + 1` read);
    an `InputError` naming the path otherwise (also for an empty file)."""
    problem = not_regular(path)
    if problem:
        raise InputError(problem)
    try:
        with open_regular(path) as handle:
            _check_file_size(path, os.fstat(handle.fileno()).st_size, max_bytes)
            data = handle.read(-1 if max_bytes is None else max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    _check_file_size(path, len(data), max_bytes)  # it may have changed since fstat
    return data


def _check_file_size(path: Path, size: int, max_bytes: int | None) -> None:
    if size == 0:
        raise InputError(f"empty file: {path}")
    if max_bytes is not None and size > max_bytes:
        raise InputError(
            f"{path}: {size:,} bytes, over the limit of {max_bytes:,} bytes "
            f"({max_bytes / 2**20:g} MiB)"
        )
