"""``PatchingResult``: every effect of one sweep, and its JSON form (a ``patching.json`` block)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from circuits.patching.sites import Site


@dataclass
class PatchingResult:
    """Every effect of one sweep: ``values[i]`` is the metric with patch ``i`` applied.

    ``effect = value - clean`` (negative: the patch lowered the metric); ``relative = effect /
    clean``. ``detail`` holds per-receiver-layer values for the sink metric. ``metric`` and
    ``counterfactual`` are the readout's and counterfactual's ``describe()``: every result says
    which question it answers.
    """

    names: list[str]
    patches: list[list[dict[str, Any]]]
    values: Tensor
    clean: float
    metric: dict[str, Any]
    counterfactual: dict[str, Any]
    detail: Tensor | None = None
    kind: str = "activation"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_estimates(
        cls,
        sites: list[Site],
        estimates: Tensor,
        clean: float,
        metric: dict[str, Any],
        counterfactual: dict[str, Any],
        kind: str,
    ) -> PatchingResult:
        """An estimate of each single-site patch's effect on the metric: its
        ``values`` are ``clean + estimate`` so that ``effects`` compare directly with exact
        patching of the same sites and metric."""
        return cls(
            names=[s.name for s in sites],
            patches=[[s.to_dict()] for s in sites],
            values=(clean + estimates).float(),
            clean=clean,
            metric=metric,
            counterfactual=counterfactual,
            kind=kind,
        )

    @property
    def effects(self) -> Tensor:
        return self.values - self.clean

    @property
    def relative(self) -> Tensor:
        return (
            self.effects / self.clean if self.clean != 0 else torch.full_like(self.values, math.nan)
        )

    def as_dict(self) -> dict[str, float]:
        """name -> effect."""
        return dict(zip(self.names, self.effects.tolist(), strict=True))

    def to_dict(self) -> dict[str, Any]:
        cleans = self.extra.get("per_path_clean") or [self.clean] * len(self.names)
        rows = []
        for i, name in enumerate(self.names):
            effect = float(self.values[i]) - cleans[i]
            row = {
                "name": name,
                "sites": self.patches[i],
                "value": float(self.values[i]),
                "clean": cleans[i],
                "effect": effect,
                "relative": effect / cleans[i] if cleans[i] and not math.isnan(cleans[i]) else None,
            }
            if self.detail is not None:
                row["per_receiver"] = [float(x) for x in self.detail[i].tolist()]
            rows.append(row)
        return {
            "kind": self.kind,
            "counterfactual": self.counterfactual["name"],
            "counterfactual_definition": self.counterfactual["definition"],
            "counterfactual_params": {
                k: v for k, v in self.counterfactual.items() if k not in ("name", "definition")
            },
            "metric": self.metric,
            "clean": None if math.isnan(self.clean) else self.clean,
            "effects": rows,
            **self.extra,
        }
