"""CUDA only (skipped without a GPU; benchmarks/gpu_check.sh runs them on a lent GPU): the
training, prediction and data paths on the device, AMP bf16, channels_last, torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_tiny_cache
from olives.data.loader import BatchSource, load_splits
from olives.models import ModelBundle
from olives.models.inference import predict
from olives.runtime import Runtime
from test_training import LABELS, params, run_fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("gpu"))


def data(root):
    return load_splits(root / "data/cache", root / "data/split", LABELS, ("BCVA", "CST"))


@pytest.mark.parametrize("device_cache", [True, False])
def test_fit_on_cuda_with_amp_and_channels_last(tiny, device_cache):
    cuda = Runtime(torch.device("cuda", 0))
    cfg = params(tiny, epochs=2, device_cache=device_cache, amp=True, channels_last=True)
    result = run_fit(cfg, data(tiny), tiny / f"ckpt-{device_cache}.pt", runtime=cuda)
    assert next(result.model.parameters()).is_cuda
    assert all(np.isfinite(h["train_loss"]) and h["val_macro_auroc"] for h in result.state.history)


def test_cuda_predictions_equal_cpu_predictions(tiny, tmp_path):
    cfg = params(tiny, epochs=1)
    result = run_fit(cfg, data(tiny))  # trained on the CPU
    bundle = ModelBundle(result.model.cpu(), LABELS, ("BCVA", "CST"), (0.5,) * 6, {}, (32, 32))
    bundle.save(tmp_path)
    val = data(tiny)["val"]
    out = {}
    for device in ("cpu", "cuda"):
        runtime = Runtime(torch.device(device))
        model = ModelBundle.load(tmp_path, runtime.device).model
        out[device] = predict(model, BatchSource(val, runtime), runtime, 16, amp=False)
    np.testing.assert_allclose(out["cuda"], out["cpu"], atol=1e-4)


def test_fit_with_torch_compile(tiny):
    cuda = Runtime(torch.device("cuda", 0))
    cfg = params(tiny, epochs=1, compile=True)
    result = run_fit(cfg, data(tiny), runtime=cuda)
    assert np.isfinite(result.state.history[0]["train_loss"])
