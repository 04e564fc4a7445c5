"""The network of an ensemble of trained models (e.g. the k fold models); `olives.models.combine`
makes the `ModelBundle` of it.

`EnsembleNet` is a drop-in for `BiomarkerNet`: forward(images, clinical) -> logits [B, L], so
evaluate, report, `olives predict` and the MLflow model take an ensemble bundle unchanged.

What it computes, per biomarker: each member k's calibrated probability
p_k = sigmoid(z_k / T_k) (its own temperatures), their mean p, and returns logit(p). The bundle
of the ensemble therefore has temperatures 1 and its thresholds apply to the averaged
calibrated probabilities (tune them on out-of-fold predictions with
`olives.evaluation.metrics.tune_thresholds`). logit(mean p) is computed in log space,
logsumexp_k log p_k - logsumexp_k log(1 - p_k) (the 1/K cancels), so it stays exact where the
members are confident instead of rounding p to 0 or 1; it is clamped to +-`LOGIT_LIMIT` so an
overflowing member cannot give an infinite logit (NaN stays NaN: the predictor reports it).

Clinical input: the caller standardises BCVA/CST with the ENSEMBLE's `clinical_stats` (the
bundle's, as for any model), and each member was trained on its own train-split statistics.
So each member gets its own standardisation back: value = z * std_e + mean_e, then
(value - mean_k) / std_k. A missing value is not mapped: the caller imputed it with the
ensemble's median, but member k was trained with missing values set to ITS train median, so a
flagged row gets (median_k - mean_k) / std_k, exactly what the member saw in training for a
missing value. The missing flags pass through unchanged.

The members' statistics and temperatures are part of the description (the model file's
metadata, like a single bundle's temperatures); the weights are the members' under
`members.<k>.`, covered by the bundle's weights digest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from olives.config import ModelConfig
from olives.models.fusion import BiomarkerNet, model_from_description

KIND = "ensemble"
LOGIT_LIMIT = 40.0  # |logit| cap; sigmoid(40) is 1 - 4e-18, past float32's resolution


@dataclasses.dataclass(frozen=True)
class Member:
    """One trained model with what maps the ensemble's input to its own: its temperatures
    and the clinical statistics it was trained with."""

    model: BiomarkerNet
    temperatures: tuple[float, ...]
    clinical_stats: dict[str, dict[str, float]]


class EnsembleNet(nn.Module):
    """forward(images, clinical standardised with `clinical_stats`) -> logit(mean calibrated
    probability of the members) [B, L]. See the module docstring."""

    def __init__(
        self,
        members: Sequence[Member],
        clinical: Sequence[str],
        clinical_stats: dict[str, dict[str, float]],
    ) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0].model
        self.members = nn.ModuleList(m.model for m in members)
        self.clinical = tuple(clinical)
        self.clinical_stats = {name: dict(clinical_stats[name]) for name in self.clinical}
        self.member_temperatures = [tuple(float(t) for t in m.temperatures) for m in members]
        self.member_stats = [
            {name: dict(m.clinical_stats[name]) for name in self.clinical} for m in members
        ]
        self.num_labels, self.num_clinical = first.num_labels, first.num_clinical
        temps = torch.tensor(self.member_temperatures, dtype=torch.float32)
        if temps.shape != (len(members), self.num_labels) or not bool((temps > 0).all()):
            raise ValueError(f"each member needs {self.num_labels} positive temperatures")
        self.register_buffer("temperatures", temps[:, None, :], persistent=False)
        scale, shift, imputed = _member_maps(self.clinical, self.clinical_stats, self.member_stats)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        self.register_buffer("imputed", imputed, persistent=False)

    @property
    def cfg(self) -> ModelConfig:
        """The members' model config, for reports and run records (never to build a model):
        a field the members disagree on is their values joined by '+'."""
        configs = [dataclasses.asdict(m.cfg) for m in self.members]
        merged = {
            key: value
            if all(c[key] == value for c in configs)
            else "+".join(dict.fromkeys(str(c[key]) for c in configs))
            for key, value in configs[0].items()
        }
        return ModelConfig(**merged)

    @property
    def backbone(self) -> nn.Module | None:
        """The first member's backbone (what says the ensemble has an image path); Grad-CAM
        hooks every member's (`gradcam.explained_layers`). None when the members use no image."""
        return self.members[0].backbone

    def member_clinical(self, clinical: torch.Tensor | None, k: int) -> torch.Tensor | None:
        """The ensemble-standardised input [B, 2C] as member k's own [values, flags]."""
        if clinical is None or self.num_clinical == 0:
            return clinical
        c = self.num_clinical
        values, missing = clinical[:, :c].float(), clinical[:, c:].float()
        mapped = values * self.scale[k] + self.shift[k]
        mapped = torch.where(missing > 0.5, self.imputed[k].expand_as(mapped), mapped)
        return torch.cat([mapped, missing], dim=1)

    def forward(
        self, images: torch.Tensor | None, clinical: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = torch.stack(
            [
                member(images, self.member_clinical(clinical, k)).float()
                for k, member in enumerate(self.members)
            ]
        )
        scaled = logits / self.temperatures  # [K, B, L]
        positive = torch.logsumexp(nn.functional.logsigmoid(scaled), dim=0)
        negative = torch.logsumexp(nn.functional.logsigmoid(-scaled), dim=0)
        return (positive - negative).clamp(-LOGIT_LIMIT, LOGIT_LIMIT)

    def describe(self) -> dict[str, Any]:
        """Everything `ensemble_from_description` needs to rebuild this ensemble."""
        return {
            "kind": KIND,
            "clinical": list(self.clinical),
            "clinical_stats": self.clinical_stats,
            "members": [
                {"description": m.describe(), "temperatures": list(t), "clinical_stats": s}
                for m, t, s in zip(
                    self.members, self.member_temperatures, self.member_stats, strict=True
                )
            ],
        }


def _member_maps(
    clinical: tuple[str, ...],
    stats: dict[str, dict[str, float]],
    member_stats: list[dict[str, dict[str, float]]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per member [K, C]: z_k = z * scale + shift for a present value, and the standardised
    median that member imputes for a missing one."""
    scale, shift, imputed = [], [], []
    for own in member_stats:
        scale.append([stats[n]["std"] / own[n]["std"] for n in clinical])
        shift.append([(stats[n]["mean"] - own[n]["mean"]) / own[n]["std"] for n in clinical])
        imputed.append([(own[n]["median"] - own[n]["mean"]) / own[n]["std"] for n in clinical])
    shape = (len(member_stats), len(clinical))
    scale_t, shift_t, imputed_t = (
        torch.tensor(t, dtype=torch.float32).reshape(shape) for t in (scale, shift, imputed)
    )
    return scale_t, shift_t, imputed_t


def is_ensemble(description: dict[str, Any]) -> bool:
    return description.get("kind") == KIND


def ensemble_from_description(description: dict[str, Any]) -> EnsembleNet:
    """Rebuild the ensemble of `EnsembleNet.describe()` with random weights."""
    members = [
        Member(
            model_from_description(m["description"]),
            tuple(m["temperatures"]),
            m["clinical_stats"],
        )
        for m in description["members"]
    ]
    return EnsembleNet(members, description["clinical"], description["clinical_stats"])
