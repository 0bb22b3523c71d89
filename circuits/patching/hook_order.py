"""Where each hook is computed in a forward pass, for the engine's shortcuts.

``read_position(name)`` places a hook as ``(layer, stage)``, comparable with ``Site.order``: a
site can change a read iff ``site.order < read_position``. The engine cuts a forward right after
a readout's last read, skips patches that come after it, and runs a patched block on its prefix
alone only when nothing in that block is read after the patch (``circuits.patching.forward``).
"""

from __future__ import annotations

# where each hook of a block is computed, comparable with ``Site.order`` (a site acts on a read iff
# site.order < read position): a read at the hook a site writes sees the patch (hence +0.05)
_STAGE = {
    "hook_resid_pre": 0.05,
    "hook_q_input": 0.1,
    "hook_k_input": 0.11,
    "hook_v_input": 0.12,
    "ln1.hook_scale": 0.3,
    "ln1.hook_normalized": 0.35,
    "attn.hook_q": 0.5,
    "attn.hook_k": 0.51,
    "attn.hook_v": 0.52,
    "attn.hook_rot_q": 0.6,
    "attn.hook_rot_k": 0.61,
    "attn.hook_attn_scores": 0.8,
    "attn.hook_pattern": 0.9,
    "attn.hook_z": 1.05,
    "attn.hook_result": 1.06,
    "ln1_post.hook_scale": 1.065,
    "ln1_post.hook_normalized": 1.066,
    "hook_attn_out": 1.07,
    "hook_resid_mid": 2.05,
    "hook_mlp_in": 2.1,
    "ln2.hook_scale": 2.2,
    "ln2.hook_normalized": 2.3,
    "mlp.hook_router_probs": 2.39,  # an MoE block's router (circuits.backend.experts)
    "mlp.hook_expert_weights": 2.4,
    "mlp.hook_expert_indices": 2.41,
    "mlp.hook_pre": 2.5,
    "mlp.hook_pre_linear": 2.55,
    "mlp.hook_post": 2.6,
    "mlp.hook_expert_out": 2.8,  # each expert's routed contribution (Site kind "expert")
    "ln2_post.hook_scale": 2.9,
    "ln2_post.hook_normalized": 2.95,
    "hook_mlp_out": 3.05,
    "hook_resid_post": 4.05,
}
_OUTSIDE = {
    "hook_embed": 0.0,
    "hook_pos_embed": 0.1,
    "ln_final.hook_scale": 0.0,
    "ln_final.hook_normalized": 0.1,
}
UNKNOWN_STAGE = 4.0
"""A hook this table does not know is placed at the end of its block: never too early for the
inert-patch and prefix checks; the forward is then not cut at it (``known_position``)."""


def known_position(name: str) -> bool:
    """Whether ``read_position`` knows exactly where ``name`` is computed."""
    if name.startswith("blocks."):
        return name.split(".", 2)[2] in _STAGE
    return name in _OUTSIDE


def read_position(name: str, n_layers: int) -> tuple[int, float]:
    """Where hook ``name`` is computed in the forward, as ``(layer, stage)``: the embedding is
    layer -1, ``ln_final`` layer ``n_layers``."""
    if name.startswith("blocks."):
        layer_s, rest = name.split(".", 2)[1:]
        return int(layer_s), _STAGE.get(rest, UNKNOWN_STAGE)
    if name.startswith("ln_final"):
        return n_layers, _OUTSIDE.get(name, UNKNOWN_STAGE)
    return -1, _OUTSIDE.get(name, UNKNOWN_STAGE)
