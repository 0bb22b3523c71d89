"""On TransformerLens 4, ``load_model`` boots a bridge from a local Hugging Face folder of each
family, offline, and its numbers are the raw ``transformers`` model's: logits and attention
patterns (the oracle), and the engine's patches run on it."""

from __future__ import annotations

import pytest
import torch

from circuits.backend import ON_BRIDGE
from tests._hf_helpers import FAMILIES, save_family

pytestmark = pytest.mark.skipif(
    not ON_BRIDGE, reason="TransformerLens 4 bridges of local folders (tests/integration on 3.x)"
)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_local_folder_is_a_bridge_with_the_models_numbers(tmp_path, family):
    from circuits.backend import is_model
    from circuits.core.errors import UsageError
    from circuits.patching import Patcher, Site
    from circuits.zoo import load_model

    hf = save_family(family, tmp_path)
    try:
        zm = load_model(str(tmp_path), progress=False)
    except UsageError as refused:  # a family the bridge cannot take is refused by name
        pytest.skip(f"refused by name on TransformerLens 4: {refused}")
    assert is_model(zm.model)
    tokens = torch.randint(
        1, hf.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        want = hf(tokens, output_attentions=True)
        logits, cache = zm.model.run_with_cache(tokens)
    torch.testing.assert_close(logits, want.logits, atol=1e-4, rtol=1e-4)
    for layer, pattern in enumerate(want.attentions):
        got = cache[f"blocks.{layer}.attn.hook_pattern"]
        torch.testing.assert_close(got, pattern, atol=1e-5, rtol=1e-4)
    patcher = Patcher(zm.model, tokens, "shift")
    result = patcher.patch([Site("embed"), Site("attn", 0)])
    assert torch.isfinite(result.values).all()
