"""``P0SinkMonitor`` in the trainers people already use: a ``transformers`` ``TrainerCallback``
and a PyTorch Lightning ``Callback`` (each imported only when asked for), and the view of a
Hugging Face model the monitor measures (``hooked_view``)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from circuits.backend import ON_BRIDGE, HookedModel
from circuits.core.errors import UsageError


def hooked_view(hf_model: Any, n_ctx: int) -> HookedModel:
    """The model a monitor measures, from a Hugging Face causal LM being trained. On
    TransformerLens 4 the bridge wraps the live model (no copy); on 3.x a ``HookedTransformer``
    is built from its current weights (a copy, made at each evaluation and dropped after)."""
    from circuits.zoo.convert import llama_config

    if isinstance(hf_model, HookedModel):
        return hf_model
    model_type = getattr(hf_model.config, "model_type", "unknown")
    if ON_BRIDGE:
        from circuits.backend.build import bridge_from_hf

        name = getattr(hf_model.config, "_name_or_path", "") or model_type
        return bridge_from_hf(hf_model, None, str(name))
    if model_type == "llama":
        from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

        from circuits.backend.build import hooked_with_weights_as_trained

        cfg = llama_config(hf_model.config, n_ctx)
        return hooked_with_weights_as_trained(cfg, convert_llama_weights(hf_model, cfg), None)
    from circuits.zoo.families import hooked_from_folder

    with tempfile.TemporaryDirectory() as folder:  # the config, for TransformerLens to read
        hf_model.config.save_pretrained(folder)
        return hooked_from_folder(Path(folder), hf_model, None, n_ctx)


def _last_loss(log_history: list[dict[str, Any]]) -> float | None:
    return next((float(r["loss"]) for r in reversed(log_history) if "loss" in r), None)


def trainer_callback(monitor: Any, trainer: Any) -> Any:
    """A ``transformers.TrainerCallback`` that measures ``trainer``'s model every
    ``monitor.every`` optimizer steps and logs the values through ``trainer.log``."""
    from transformers import TrainerCallback

    n_ctx = int(monitor.prompts.shape[1])

    class P0SinkCallback(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            step = int(state.global_step)
            if step % monitor.every or model is None:
                return control
            row = monitor(hooked_view(model, n_ctx), step, _last_loss(state.log_history))
            if row is not None:
                trainer.log(monitor.scalars(row))
            return control

    return P0SinkCallback()


def lightning_callback(monitor: Any, get_model: Callable[[Any], Any] | None) -> Any:
    """A PyTorch Lightning ``Callback``: after every ``monitor.every``-th training batch it
    measures ``get_model(module)`` (default ``module.model``) and logs with ``module.log_dict``."""
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback  # type: ignore[assignment]
        except ImportError:
            raise UsageError(
                "the Lightning callback needs PyTorch Lightning: pip install lightning"
            ) from None
    n_ctx = int(monitor.prompts.shape[1])
    pick = get_model or (lambda module: module.model)

    class P0SinkLightningCallback(Callback):  # type: ignore[misc]
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            step = int(trainer.global_step)
            if step % monitor.every:
                return
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            value = None if loss is None else float(loss)
            row = monitor(hooked_view(pick(pl_module), n_ctx), step, value)
            if row is not None:
                pl_module.log_dict(monitor.scalars(row))

    return P0SinkLightningCallback()
