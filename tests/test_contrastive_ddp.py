"""The contrastive loss over the global batch under DDP: two gloo processes on the CPU, each
with half of a batch, give the loss and the all-reduced gradients of one process on the
whole batch; the single-process path is bit for bit the one before the gather."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from olives.runtime import Runtime
from olives.training.contrastive import (
    ContrastiveLoss,
    GatherWithGradient,
    ProjectionHead,
    supcon_loss,
)

SCANS, PIXELS, TEMPERATURE, WORLD = 8, 12, 0.07, 2


def supcon_before_gather(features: torch.Tensor, codes: torch.Tensor, t: float) -> torch.Tensor:
    """`supcon_loss` as it was before anchors and the DDP gather (the reference)."""
    batch, views, _ = features.shape
    z = F.normalize(features.float(), dim=-1).transpose(0, 1).reshape(batch * views, -1)
    ids = codes.repeat(views)
    itself = torch.eye(batch * views, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / t).masked_fill(itself, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (ids[:, None] == ids[None, :]) & ~itself
    per_anchor = log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1)
    return -per_anchor.mean()


def tiny_encoder() -> nn.Module:
    """A fixed small encoder without BatchNorm (DDP does not sync its statistics)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(PIXELS, 16), nn.ReLU(), ProjectionHead(16, 8))


def scans() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two views [SCANS, PIXELS] each and float codes [SCANS, 2] (as the loop's labels) with
    positives on both halves of the batch, so that half of them cross the ranks."""
    g = torch.Generator().manual_seed(1)
    first, second = torch.randn(2, SCANS, PIXELS, generator=g)
    codes = torch.tensor([[0, 1], [1, 0], [2, 1], [0, 2], [1, 1], [0, 0], [2, 3], [3, 2]])
    return first, second, codes.float()


def share(rank: int) -> slice:
    """Rank `rank`'s B = SCANS / WORLD scans of the batch."""
    return slice(rank * SCANS // WORLD, (rank + 1) * SCANS // WORLD)


def ddp_worker(rank: int, folder: str) -> None:
    """One DDP step's loss and all-reduced parameter gradients, saved to `folder`."""
    store = f"file://{Path(folder) / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=WORLD)
    try:
        runtime = Runtime(torch.device("cpu"), rank, WORLD, rank)
        encoder = tiny_encoder()
        net = runtime.wrap(encoder)
        first, second, codes = scans()
        mine = share(rank)
        projected = net(torch.cat([first[mine], second[mine]]))  # [2B, D]: view 1, then view 2
        loss = ContrastiveLoss(TEMPERATURE, runtime)(projected, codes[mine])
        loss.backward()
        grads = [p.grad.clone() for p in encoder.parameters()]
        local = ContrastiveLoss(TEMPERATURE)(projected.detach(), codes[mine])
        torch.save({"loss": loss.detach(), "grads": grads, "local": local}, f"{folder}/{rank}.pt")
        torch.save(gather_probe(rank), f"{folder}/gather{rank}.pt")
    finally:
        dist.destroy_process_group()


def gather_probe(rank: int) -> dict[str, torch.Tensor]:
    """`GatherWithGradient` of a [3, 2] tensor of `rank + 1`s, and its gradient when each rank
    weighs the gathered [6, 2] by `(rank + 1) * WEIGHTS`."""
    x = torch.full((3, 2), float(rank + 1), requires_grad=True)
    gathered = GatherWithGradient.apply(x, rank, WORLD)
    (gathered * (rank + 1) * WEIGHTS).sum().backward()
    return {"gathered": gathered.detach(), "grad": x.grad}


WEIGHTS = torch.arange(12.0).view(6, 2)


def test_two_ranks_match_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(ddp_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(WORLD)]

    encoder = tiny_encoder()
    first, second, codes = scans()
    whole = ContrastiveLoss(TEMPERATURE)(encoder(torch.cat([first, second])), codes)
    whole.backward()

    # train_epoch reports the mean of the ranks' losses (equal batches): it is the whole loss.
    ddp_loss = torch.stack([r["loss"] for r in ranks]).mean()
    assert ddp_loss.item() == pytest.approx(whole.item(), abs=1e-6)
    for r in ranks:  # DDP's all-reduce leaves every rank with the whole batch's gradient
        for got, want in zip(r["grads"], encoder.parameters(), strict=True):
            torch.testing.assert_close(got, want.grad, atol=1e-6, rtol=1e-5)
    # Without the gather each anchor sees only its rank's negatives: a different loss.
    local = torch.stack([r["local"] for r in ranks]).mean()
    assert abs(local.item() - whole.item()) > 0.05

    # The gather itself: rank order forward; backward sums the ranks' gradients (1 + 2 = 3).
    probes = [torch.load(tmp_path / f"gather{r}.pt") for r in range(WORLD)]
    ones = torch.ones(3, 2)
    for q, probe in enumerate(probes):
        assert torch.equal(probe["gathered"], torch.cat([ones, 2 * ones]))
        assert torch.equal(probe["grad"], 3 * WEIGHTS[3 * q : 3 * q + 3])


def test_single_process_path_is_bit_identical_to_before():
    g = torch.Generator().manual_seed(2)
    projected = torch.randn(2 * SCANS, 8, generator=g, requires_grad=True)
    codes = scans()[2]
    got = ContrastiveLoss(TEMPERATURE)(projected, codes)
    (got_grad,) = torch.autograd.grad(got, projected)
    views = projected.view(2, SCANS, -1).transpose(0, 1)
    want = sum(supcon_before_gather(views, codes[:, k].long(), TEMPERATURE) for k in range(2))
    (want_grad,) = torch.autograd.grad(want, projected)
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad)
    single = Runtime(torch.device("cpu"))
    assert torch.equal(ContrastiveLoss(TEMPERATURE, single)(projected, codes), got)


def loop_reference(features: torch.Tensor, codes: torch.Tensor, t: float, scans: range) -> float:
    """Khosla et al. eq. 2 with loops, over the views of `scans` as anchors only."""
    z = F.normalize(features.double(), dim=-1)
    views = [(i, v) for v in range(z.shape[1]) for i in range(z.shape[0])]
    anchors = [(i, v) for i, v in views if i in scans]
    total = 0.0
    for i, v in anchors:
        others = [(j, w) for j, w in views if (j, w) != (i, v)]
        log_denom = torch.logsumexp(torch.stack([z[i, v] @ z[j, w] / t for j, w in others]), 0)
        positives = [z[i, v] @ z[j, w] / t - log_denom for j, w in others if codes[j] == codes[i]]
        total -= float(torch.stack(positives).mean())
    return total / len(anchors)


def test_anchor_subset_matches_the_loop_reference_and_shares_average_to_the_whole():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(SCANS, 2, 5, generator=g)
    codes = torch.tensor([0, 1, 0, 2, 1, 3, 0, 2])
    some = supcon_loss(features, codes, 0.1, slice(2, 5)).item()
    assert some == pytest.approx(loop_reference(features, codes, 0.1, range(2, 5)), rel=1e-5)
    whole = supcon_loss(features, codes, 0.1)
    halves = [supcon_loss(features, codes, 0.1, slice(h, h + 4)) for h in (0, 4)]
    assert torch.stack(halves).mean().item() == pytest.approx(whole.item(), abs=1e-6)


@pytest.mark.parametrize("anchors", [slice(3, 3), slice(0, 8, 2), slice(9, 12)])
def test_bad_anchor_slices_are_refused(anchors):
    with pytest.raises(ValueError, match="anchors must be a non-empty contiguous slice"):
        supcon_loss(torch.randn(8, 2, 4), torch.zeros(8, dtype=torch.long), 0.1, anchors)
