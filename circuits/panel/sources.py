"""Where a panel's question comes from: a model and prompts, or a saved ``discover`` directory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuits.circuit.graph import CircuitGraph
from circuits.circuit.record import DiscoveryRecord
from circuits.core.conventions import CIRCUIT_JSON, PATCHING_FILE
from circuits.core.errors import UsageError
from circuits.core.records import load_result
from circuits.panel.session import PatchSession
from circuits.patching.positions import Condition
from circuits.prompts import prompt_set
from circuits.zoo.model import ZooModel, as_zoo_model


@dataclass
class PanelSource:
    """A model and prompts, and what is already known about them (from a discovery: the
    counterfactual, receivers, exact single effects and the circuit)."""

    name: str
    zm: ZooModel
    tokens: Tensor
    counterfactual: str = "shift"
    receivers: Sequence[int] | None = None
    effects: dict[str, float] = field(default_factory=dict)
    circuit: list[str] = field(default_factory=list)
    conditions: tuple[Condition, ...] = ()

    def session(self, **changes: Any) -> PatchSession:
        return PatchSession(
            self.zm.model,
            self.tokens,
            counterfactual=changes.get("counterfactual", self.counterfactual),
            receivers=changes.get("receivers", self.receivers),
            readout=changes.get("readout", "sink score"),
            head=changes.get("head"),
            conditions=self.conditions,
        )


def _discovered(path: Path) -> tuple[DiscoveryRecord, dict[str, float], list[str]]:
    record = DiscoveryRecord.of(
        load_result(path, "discover", CIRCUIT_JSON), f"{path / PATCHING_FILE}"
    )
    effects = {name: float(row.effect or 0.0) for name, row in record.exact_effects().items()}
    circuit = list(record.circuit or [])
    if (path / CIRCUIT_JSON).is_file():
        graph = CircuitGraph.load(path / CIRCUIT_JSON)
        circuit = [n for n, d in graph.g.nodes(data=True) if d.get("role") in ("core", "backup")]
    return record, effects, circuit


def panel_source(
    model: Any,
    prompts: str | Tensor | None,
    *,
    discover_dir: str | os.PathLike | None,
    counterfactual: str | None,
    receivers: Sequence[int] | None,
    n_prompts: int,
    n_tokens: int,
    dtype: str | None = None,
) -> PanelSource:
    """A ``PanelSource`` from ``explore``'s arguments (checked, with the fix in each error)."""
    if discover_dir is not None:
        path = Path(discover_dir)
        record, effects, circuit = _discovered(path)
        if model is None:
            model = record.model
        zm = _load(model, dtype)
        if not record.tokens or not record.counterfactual or not record.receiver_layers:
            raise UsageError(
                f"{path / PATCHING_FILE} lacks its tokens, counterfactual or receiver layers: "
                "re-run discover into that folder"
            )
        tokens = torch.tensor(record.tokens, dtype=torch.long)
        same = counterfactual in (None, record.counterfactual)
        return PanelSource(
            name=f"{zm.name} ({path.name})",
            zm=zm,
            tokens=tokens,
            counterfactual=counterfactual or record.counterfactual,
            receivers=receivers or record.receiver_layers,
            effects=effects if same and receivers is None else {},
            circuit=circuit,
        )
    if model is None:
        raise UsageError("explore needs a model (a zoo name, a ZooModel or a HookedTransformer)")
    zm = _load(model, dtype)
    if isinstance(prompts, Tensor):
        tokens = prompts if prompts.ndim == 2 else prompts.reshape(1, -1)
    else:
        tokens = prompt_set(
            zm, n_prompts=n_prompts, n_tokens=n_tokens, bos=zm.natural_bos, text=prompts
        )
    return PanelSource(zm.name, zm, tokens, counterfactual or "shift", receivers)


def _load(model: Any, dtype: str | None) -> ZooModel:
    if isinstance(model, str):
        from circuits.zoo.load import load_model

        return load_model(model, progress=False, dtype=dtype or "float32")  # type: ignore[arg-type]
    zm = as_zoo_model(model)
    if dtype is not None and str(zm.model.cfg.dtype) != f"torch.{dtype}":
        raise UsageError(
            f"explore(dtype={dtype!r}) loads a model by name; this model runs in "
            f"{zm.model.cfg.dtype}: cast it yourself (model.to(torch.{dtype})) or pass its name"
        )
    return zm
