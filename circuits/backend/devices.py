"""A model split across several GPUs by layer (``--n-devices``), on TransformerLens 3 and 4.

On TransformerLens 3 the split is the pipeline ``HookedTransformer``'s forward already follows:
block ``i`` lives on ``cuda:(first + i * n // n_layers)`` (the index TransformerLens'
``get_device_for_block_index`` gives; its forward moves the residual there before each block),
the embeddings on the first card, the final norm and unembedding on the last block's card.
TransformerLens 3.9's ``move_model_modules_to_device`` places every module on one card, so the
toolkit places them itself. On TransformerLens 4 the bridge wraps a Hugging Face model;
accelerate dispatches it with a balanced ``device_map`` (whole decoder layers per card, tied
weights together) and the bridge reads ``cfg.n_devices`` from it.

The engine's tensors follow: the clean caches stay on the card of the hook that made them, a
counterfactual value is moved to its hook's card, a stacked batch grows on its block's card,
and every read reduction is gathered on ``home_device`` (the first card) before a readout
combines layers.
"""

from __future__ import annotations

from typing import Any

import torch

from circuits.backend import ON_BRIDGE
from circuits.core.errors import UsageError


def layer_card(first: torch.device, layer: int, n_layers: int, n_devices: int) -> torch.device:
    """The card of block ``layer`` when ``n_layers`` blocks are split over ``n_devices`` cards
    starting at ``first`` (TransformerLens 3's pipeline order)."""
    return torch.device(first.type, (first.index or 0) + (layer * n_devices) // n_layers)


def check_cards(first: torch.device, n_devices: int) -> None:
    """Refuse a split torch cannot place, naming the fix."""
    if n_devices == 1:
        return
    if first.type != "cuda":
        raise UsageError(
            f"--n-devices {n_devices} splits a model across GPUs, but the device is {first}; "
            "use --device cuda, or --n-devices 1 on the CPU"
        )
    have = torch.cuda.device_count()
    start = first.index or 0
    if start + n_devices > have:
        raise UsageError(
            f"--n-devices {n_devices} from {first} needs cuda:{start}..cuda:{start + n_devices - 1}, "
            f"but torch sees {have} GPU(s); use --n-devices {max(1, have - start)}"
        )


def split_across_devices(model: Any, first: torch.device, n_devices: int) -> Any:
    """``model`` with its layers split over ``n_devices`` cards from ``first`` (module docstring);
    ``cfg.device`` is the first card and ``cfg.n_devices`` the number of cards."""
    check_cards(first, n_devices)
    if ON_BRIDGE:
        return _dispatch_bridge(model, first, n_devices)
    cfg = model.cfg
    cfg.n_devices = n_devices
    cfg.device = str(first)
    last = layer_card(first, cfg.n_layers - 1, cfg.n_layers, n_devices)
    for name, module in model.named_children():
        if name == "blocks":
            for i, block in enumerate(module):
                block.to(layer_card(first, i, cfg.n_layers, n_devices))
        elif name in ("ln_final", "unembed"):
            module.to(last)
        else:
            module.to(first)
    return model


def _dispatch_bridge(bridge: Any, first: torch.device, n_devices: int) -> Any:
    """A TransformerLens 4 bridge whose Hugging Face model accelerate spreads over the cards."""
    try:
        from accelerate import dispatch_model, infer_auto_device_map
        from accelerate.utils import get_balanced_memory
    except ImportError:
        raise UsageError(
            "--n-devices > 1 on TransformerLens 4 needs accelerate: pip install accelerate"
        ) from None
    hf_model = bridge.original_model
    start = first.index or 0
    cards = list(range(start, start + n_devices))
    layer_classes = sorted({type(m).__name__ for m in _decoder_layers(hf_model)})
    memory = get_balanced_memory(
        hf_model,
        max_memory={c: torch.cuda.get_device_properties(c).total_memory for c in cards},
        no_split_module_classes=layer_classes,
    )
    device_map = infer_auto_device_map(
        hf_model, max_memory=memory, no_split_module_classes=layer_classes
    )
    dispatch_model(hf_model, device_map=device_map)
    bridge.cfg.device = str(first)
    bridge.cfg.n_devices = len({v for v in device_map.values()})
    return bridge


def _decoder_layers(hf_model: Any) -> list[Any]:
    """The decoder layers of a Hugging Face causal LM (its longest ``ModuleList``)."""
    lists: list[list[Any]] = [
        list(m) for m in hf_model.modules() if isinstance(m, torch.nn.ModuleList)
    ]
    return max(lists, key=len) if lists else []


def home_device(model: Any) -> torch.device:
    """Where the engine gathers reductions from several layers: the first card (the embedding's)."""
    return torch.device(model.cfg.device) if model.cfg.device is not None else torch.device("cpu")
