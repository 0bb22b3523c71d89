"""Does the P0 circuit matter for what the model predicts? Output readouts on the circuit.

The sink is an anchor (docs/science.md): the heads that attend to P0 when they have nothing to
read. If the circuit that builds it matters, patching it should change the model's next-token
predictions far more than patching as many P0 components chosen at random. This step patches,
each jointly and with the discovery's counterfactual:

* the circuit (its core and backups);
* ``random_sets`` sets of as many P0 components drawn at random (seeded) from the components
  outside the circuit (the control);
* every P0 component in the swept layers (the ceiling);

and reads the next-token loss (its increase over the clean loss, in nats) and the KL divergence
of the next-token distribution from the clean one (nats), both averaged over prompts and
positions (``circuits.patching.output_readouts``).
"""

from __future__ import annotations

import random
import statistics
from typing import TYPE_CHECKING, Any

from circuits.circuit.faithfulness import all_p0_components
from circuits.circuit.record import PredictionEffect
from circuits.circuit.step_results import PredictionFound, StepResult
from circuits.patching.output_readouts import KLToClean, LossAndKL, NextTokenLoss
from circuits.patching.sites import Site

if TYPE_CHECKING:
    from circuits.circuit.steps import DiscoveryState

RANDOM_SEED = 0


def random_component_sets(
    pool: list[Site], size: int, n_sets: int, seed: int = RANDOM_SEED
) -> list[tuple[Site, ...]]:
    """``n_sets`` sets of ``size`` components drawn without replacement from ``pool``."""
    rng = random.Random(seed)
    size = min(size, len(pool))
    return [tuple(sorted(rng.sample(pool, size), key=lambda s: s.order)) for _ in range(n_sets)]


def prediction_effect(state: DiscoveryState) -> StepResult:
    """Loss increase and KL of the circuit, of random component sets of its size, and of every
    P0 component (module docstring), as the record's ``prediction``."""
    circuit = tuple(state.nodes)
    if not circuit or not state.config.prediction_random_sets:
        return PredictionFound(prediction=None)
    everything = all_p0_components(state.cfg, state.sweep_layers)
    names = {s.name for s in circuit}
    pool = [s for s in everything if s.name not in names]
    size = len(circuit)
    randoms = random_component_sets(pool, size, state.config.prediction_random_sets)
    patches = [circuit, *randoms, tuple(everything)]
    patcher = state.patcher
    res = patcher.patch(patches, LossAndKL(), desc="prediction: next-token loss and KL")
    assert res.detail is not None
    rise = (res.values - res.clean).tolist()
    kls = res.detail[:, 1].tolist()
    n = len(randoms)

    def summary(i: int) -> dict[str, Any]:
        return {"sites": [s.name for s in patches[i]], "loss_increase": rise[i], "kl": kls[i]}

    random_rise, random_kl = rise[1 : 1 + n], kls[1 : 1 + n]
    found = {
        "question": "does patching the circuit change the model's next-token predictions more "
        "than patching as many random P0 components?",
        "readouts": {"loss": NextTokenLoss().describe(), "kl": KLToClean().describe()},
        "counterfactual": res.counterfactual["name"],
        "clean_loss": res.clean,
        "circuit": summary(0),
        "random": {
            "n_sets": n,
            "size": size,
            "seed": RANDOM_SEED,
            "sets": [[s.name for s in p] for p in randoms],
            "loss_increase": random_rise,
            "kl": random_kl,
            "loss_increase_mean": statistics.fmean(random_rise),
            "kl_mean": statistics.fmean(random_kl),
            "kl_max": max(random_kl),
        },
        "all_p0": summary(len(patches) - 1),
        "definition": "loss_increase: mean next-token cross-entropy with the sites at the "
        "counterfactual minus the clean one (nats); kl: KL(clean || patched) of the next-token "
        "distribution (nats), both averaged over prompts and positions; random: sets of as many "
        "P0 components (as many as the circuit has nodes) drawn from those outside the circuit",
    }
    state.say(
        f"prediction: circuit loss +{rise[0]:.3f} nats, KL {kls[0]:.3f}; random sets KL "
        f"{statistics.fmean(random_kl):.3f} (max {max(random_kl):.3f})"
    )
    return PredictionFound(prediction=PredictionEffect.model_validate(found))
