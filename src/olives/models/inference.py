"""Predictions of a model on one split, on the runtime's device, for train, evaluate and report.

Under torchrun each rank predicts its share of the split and the logits are all-gathered, so
every rank ends with the whole split in row order: metrics and thresholds always use all of it.
The logits stay on the device until the end (no host sync per batch).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from torch import nn

from olives.data.loader import BatchSource
from olives.runtime import Runtime, padded_length


def autocast(amp: bool, runtime: Runtime) -> AbstractContextManager:
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported); full precision elsewhere."""
    if not (amp and runtime.cuda):
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def predict_logits(
    model: nn.Module, source: BatchSource, runtime: Runtime, batch_size: int, amp: bool
) -> torch.Tensor:
    """Logits [N, L] (float32, on the device) of the whole split, in its row order."""
    model.eval()
    n = len(source)
    positions = np.resize(np.arange(n), padded_length(n, runtime.world_size))
    mine = positions[runtime.shard(n)]
    parts = []
    for batch in source.batches(mine, batch_size):
        with autocast(amp, runtime):
            parts.append(model(batch.images, batch.clinical).float())
    num_labels = source.labels.shape[1]
    local = torch.cat(parts) if parts else torch.zeros((0, num_labels), device=runtime.device)
    gathered = runtime.all_gather(local)  # rank 0's share, then rank 1's, ...
    if not runtime.distributed:
        return gathered
    padded = np.arange(len(positions)).reshape(-1, runtime.world_size).T.reshape(-1)
    first_n = np.argsort(padded)[:n]  # where each of the n positions sits in `gathered`
    return gathered[runtime.to_device(torch.from_numpy(first_n))]


def predict(
    model: nn.Module, source: BatchSource, runtime: Runtime, batch_size: int, amp: bool
) -> np.ndarray:
    """Sigmoid probabilities [N, L] on the host, in the split's row order."""
    logits = predict_logits(model, source, runtime, batch_size, amp)
    return runtime.to_host(torch.sigmoid(logits))
