"""Typed configs for every `params.yaml` section.

Each DVC stage reads its own section (plus the shared top-level keys) into a frozen dataclass.
Loading is strict: an unknown key, a missing required key or a value of the wrong type raises
`ConfigError` naming the key's full path, so a typo in `params.yaml` or in `dvc exp run -S`
can never be silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from olives.errors import InputError

T = TypeVar("T")

# The params that name the dataset's columns: every stage that reads rows depends on them.
COLUMN_KEYS = ("labels", "clinical", "image_column", "patient_column", "eye_column")

# The six biomarkers of OLIVES's `biomarker_detection` config (the VIP Cup 2023 labels).
BIOMARKERS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6")
BIOMARKER_NAMES: dict[str, str] = {
    "B1": "IR HRF",
    "B2": "Partially attached vitreous face",
    "B3": "Fully attached vitreous face",
    "B4": "Vitreous debris",
    "B5": "DRT/ME",
    "B6": "Fluid (IRF)",
}


class ConfigError(InputError, ValueError):
    """A parameter is unknown, missing or of the wrong type."""


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HuggingFaceSource:
    """The Hugging Face hub (or a local folder in the hub's repository layout)."""

    repo_id: str = "gOLIVES/OLIVES_Dataset"
    config: str = "biomarker_detection"
    revision: str = "main"
    splits: tuple[str, ...] = ("train", "test")
    shard_rows: int = 500


@dataclass(frozen=True)
class LocalSource:
    """An ImageFolder (images + metadata.csv) or a folder of parquet files."""

    path: str = ""
    split_column: str | None = None
    # Listed files that may be absent before `download` stops (skipped with a WARNING below):
    # one in 60 passes, a mistyped or half-copied folder (50 of 60 absent) stops the stage.
    max_missing_fraction: float = 0.02


@dataclass(frozen=True)
class SyntheticSource:
    """The embedded offline default: a deterministic OLIVES-like generator."""

    preset: Literal["default", "full", "tiny"] = "default"
    patients: int | None = None
    test_patients: int | None = None
    visits: int | None = None
    scans_per_volume: int | None = None
    width: int = 504
    height: int = 496
    difficulty: float = 0.3
    unlabeled_fraction: float = 0.1
    shard_rows: int = 500
    num_workers: int = 0  # processes that render volumes; 0 = every core


@dataclass(frozen=True)
class DataConfig:
    source: Literal["synthetic", "huggingface", "local"] = "synthetic"
    include_unlabeled: bool = False
    raw_dir: str = "data/raw"
    report: str = "data/raw_report.json"
    huggingface: HuggingFaceSource = field(default_factory=HuggingFaceSource)
    local: LocalSource = field(default_factory=LocalSource)
    synthetic: SyntheticSource = field(default_factory=SyntheticSource)


@dataclass(frozen=True)
class SplitConfig:
    """Patient-level splits of the labelled rows."""

    val_fraction: float = 0.2
    test_fraction: float = 0.2
    n_folds: int = 1
    fold: int = 0
    candidates: int = 32
    out_dir: str = "data/split"


@dataclass(frozen=True)
class PreprocessConfig:
    height: int = 128
    width: int = 128
    resize: Literal["stretch", "pad", "crop"] = "stretch"
    max_corrupt_fraction: float = 0.01
    num_workers: int = 0  # decoding threads; 0 = every core
    batch_rows: int = 256
    cache_dir: str = "data/cache"
    report: str = "reports/preprocess.json"


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str = "package"
    fusion: Literal["image", "clinical", "concat", "film"] = "concat"
    clinical_hidden: int = 32
    dropout: float = 0.2
    drop_path: float = 0.0


@dataclass(frozen=True)
class LossConfig:
    name: Literal["focal", "bce", "asl"] = "focal"
    gamma: float = 2.0
    alpha: float | list[float] | str | None = "auto"
    pos_weight: list[float] | str | None = None
    gamma_neg: float = 4.0
    gamma_pos: float = 1.0
    clip: float = 0.05


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    hflip: float = 0.5
    vflip: float = 0.0
    max_shift: float = 0.05
    max_rotate_deg: float = 5.0
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.1
    noise_std: float = 0.02
    speckle_std: float = 0.05


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    layer_decay: float | None = None
    freeze_backbone: bool = False  # linear evaluation: only the fusion and head learn
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    clinical_dropout: float = 0.25  # share of training rows whose clinical record is hidden
    patience: int = 3
    monitor: Literal["val_macro_auroc", "val_macro_f1", "val_loss"] = "val_macro_auroc"
    check_initial_loss: bool = True
    calibrate: bool = True
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    cudnn_benchmark: bool = False
    device_cache: bool | Literal["auto"] = "auto"
    nproc_per_node: int = 1
    num_threads: int = 0
    progress: bool = True
    resume: bool = True
    checkpoint_dir: str = "checkpoints"
    model_dir: str = "models"
    report_dir: str = "reports/train"
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class PretrainConfig:
    """Clinically supervised contrastive pre-training (`pretrain` stage); off when `epochs` is
    0. The encoder is `model.backbone`, started from `model.pretrained` (unless that is
    `pretrain`, which starts from random weights)."""

    epochs: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    temperature: float = 0.07
    positives: tuple[str, ...] = ("bcva", "cst")
    cst_bin: float = 25.0  # CST values within one bin (micrometres) are positives
    projection_dim: int = 128
    out_dir: str = "pretrain"
    checkpoint_dir: str = "checkpoints/pretrain"


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    experiment: str = "olives-biomarkers"
    tracking_uri: str | None = None
    log_model: bool = True
    registered_model: str | None = "olives-biomarkers"
    champion_alias: str | None = "champion"


# Test-time views `evaluate.tta` and `olives predict --tta` may add to the identity
# (`olives.models.inference`): a horizontal flip; shifts left and right by a few % of the width.
TtaView = Literal["hflip", "shift"]
TTA_SHIFT = 0.05  # the shift, as a fraction of the width: train.augment.max_shift's default


@dataclass(frozen=True)
class EvaluateConfig:
    bootstrap: int = 1000
    ci: float = 0.95
    batch_size: int = 64
    amp: bool = True
    tta: tuple[TtaView, ...] = ()  # test-time augmentation: () is off
    out_dir: str = "reports"

    def __post_init__(self) -> None:
        if len(set(self.tta)) != len(self.tta):
            raise ConfigError(f"'evaluate.tta' = {list(self.tta)!r} names a view twice")


@dataclass(frozen=True)
class ReportConfig:
    out_dir: str = "reports"
    gallery_size: int = 4


@dataclass(frozen=True)
class PaperDataConfig:
    """The paper axes' own synthetic OLIVES (`olives paper data`): labelled and unlabelled scans
    (`unlabeled_fraction` per labelled scan) cached at `size` px, cut into one patient split per
    seed of `paper.splits`, each with a large test split (`test_fraction` of the patients:
    evaluation only costs inference) so that per-run intervals narrow. Separate from the main
    pipeline's data, so `make repro` stays as it is."""

    dir: str = "data/paper"
    preset: str = "paper"
    unlabeled_fraction: float = 2.0
    size: int = 64
    test_fraction: float = 0.62
    val_fraction: float = 0.25

    def __post_init__(self) -> None:
        for name in ("test_fraction", "val_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"'paper.data.{name}' = {getattr(self, name)} must be in (0, 1)")
        if self.size < 32:
            raise ConfigError(f"'paper.data.size' = {self.size} must be >= 32")


@dataclass(frozen=True)
class InitAxisConfig:
    """The paper's initialisation axis: an ImageNet encoder vs the same encoder after clinically
    supervised contrastive pre-training, each under linear evaluation and fine-tuning."""

    inits: tuple[Literal["imagenet", "contrastive"], ...] = ("imagenet", "contrastive")
    modes: tuple[Literal["linear", "finetune"], ...] = ("linear", "finetune")
    pretrain_epochs: int = 2
    epochs: int = 5
    fusion: Literal["image", "clinical", "concat", "film"] = "image"


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher axis (paper/teacher/dvc.yaml) on the paper's data: k-fold teachers within the
    training patients of a split (one model per fold, each predicting its held-out fold, so
    every labelled training scan gets out-of-fold probabilities and no validation patient is
    seen; `folds` is the matrix, k = len(folds), so 0..k-1), their ensemble, its pseudo-labels
    on the unlabelled scans of training patients (confidence: the mean over biomarkers of
    |2p - 1|), a student trained on both (`training/distill.py`) and its controls. A member
    whose best epoch is 0 or whose out-of-fold macro AUROC is below `min_member_auroc` is
    named in the table (the ensemble still includes it, and says so)."""

    folds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 5
    fusion: Literal["image", "clinical", "concat", "film"] = "image"
    weight: float = 0.5  # a pseudo-labelled row's loss weight; a labelled row's is 1
    min_confidence: float = 0.0  # rows below it are not learned; 0 keeps every row
    tta: tuple[TtaView, ...] = ("hflip", "shift")  # the student + TTA row's views
    min_member_auroc: float = 0.6  # the members' quality gate (out-of-fold macro AUROC)

    def __post_init__(self) -> None:
        if not 0 < self.weight <= 1:
            raise ConfigError(f"'paper.teacher.weight' = {self.weight} must be in (0, 1]")
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(
                f"'paper.teacher.min_confidence' = {self.min_confidence} must be in [0, 1]"
            )
        if not self.tta or len(set(self.tta)) != len(self.tta):
            raise ConfigError(f"'paper.teacher.tta' = {list(self.tta)!r}: one or more views, once")


@dataclass(frozen=True)
class PaperConfig:
    """The paper's axes (paper/dvc.yaml, paper/teacher/dvc.yaml): fusion x loss, init x mode
    and the teacher axis, each over every patient split (`splits`, split seeds) x training
    seed (`seeds`), so comparisons are paired by (split, seed); protocols in paper/protocol/."""

    splits: tuple[int, ...] = (0, 1, 2)
    seeds: tuple[int, ...] = (0, 1)
    fusions: tuple[str, ...] = ("image", "clinical", "concat")
    losses: tuple[str, ...] = ("focal", "bce")
    epochs: int | None = 5
    out_dir: str = "reports/paper"
    data: PaperDataConfig = field(default_factory=PaperDataConfig)
    init: InitAxisConfig = field(default_factory=InitAxisConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def __post_init__(self) -> None:
        for name in ("splits", "seeds"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values) or min(values) < 0:
                raise ConfigError(
                    f"'paper.{name}' = {list(values)}: one or more distinct seeds >= 0"
                )


@dataclass(frozen=True)
class Params:
    """The whole `params.yaml`."""

    seed: int = 42
    labels: tuple[str, ...] = BIOMARKERS
    clinical: tuple[str, ...] = ("BCVA", "CST")
    image_column: str = "Image"
    patient_column: str = "Patient_ID"
    eye_column: str | None = "Eye_ID"
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)


# ---------------------------------------------------------------------------------------------
# Strict loading
# ---------------------------------------------------------------------------------------------


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read `params.yaml` into `Params`; every key is checked."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: parameter file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return from_dict(Params, raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def from_dict(cls: type[T], raw: Any, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{_join(prefix, near[0])}'?)" if near else ""
            raise ConfigError(f"unknown parameter '{_join(prefix, key)}'{hint}")
    values = {}
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        if f.name in raw:
            values[f.name] = _coerce(hints[f.name], raw[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required parameter '{key}'")
    return cls(**values)


def to_dict(obj: Any) -> Any:
    """The inverse of `from_dict`: plain YAML/JSON-ready values."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """`{"train.lr": 0.001, ...}`: the form MLflow params and `dvc exp run -S` use."""
    mapping = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = _join(prefix, key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def select(params: Params, keys: Iterable[str]) -> dict[str, Any]:
    """The flattened values under `keys` (dotted; a section name selects all its keys), as
    `{"train.lr": 0.002, ...}`: what a stage's results depend on."""
    flat = flatten(params)
    chosen: dict[str, Any] = {}
    for key in keys:
        found = {k: v for k, v in flat.items() if k == key or k.startswith(f"{key}.")}
        if not found:
            raise ConfigError(f"no parameter '{key}'")
        chosen.update(found)
    return dict(sorted(chosen.items()))


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against type `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in sorted(args, key=_union_order):
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"'{key}' = {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"'{key}' = {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' = {value!r} is not {_type_name(tp)}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"'{key}' = {value!r} must have {len(args)} items")
        item_types = [args[0]] * len(value) if (origin is list or args[-1] is Ellipsis) else args
        pairs = enumerate(zip(item_types, value, strict=True))
        items = [_coerce(t, v, f"{key}[{i}]") for i, (t, v) in pairs]
        return tuple(items) if origin is tuple else items
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"'{key}' = {value!r} is not null")
        return None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' = {value!r} is not a number")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"'{key}' = {value!r} is not {tp.__name__}")
        return value
    raise ConfigError(f"'{key}': unsupported parameter type {tp!r}")


def _union_order(tp: Any) -> int:
    """Try None first, then scalars, then containers, then str (so '1' stays a str)."""
    if tp is type(None):
        return 0
    if tp is str:
        return 3
    if typing.get_origin(tp) in (list, tuple):
        return 2
    return 1


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))
