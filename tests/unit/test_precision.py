"""Half precision (issue 38): a model loaded in bfloat16 / float16 runs the same engine, its
patched numbers equal a plain hook loop on the same half-precision model, readouts reduce in
float32, and every output records the dtype."""

from __future__ import annotations

import json

import pytest
import torch

from circuits.backend import get_act_name
from circuits.cli import main
from circuits.core.errors import UsageError
from circuits.patching import Patcher, SinkScore, Site
from circuits.zoo.load import load_model

LAYERS = [1]


def _plain_sink(model, tokens, hooks):
    """Sink score of layer 1 by a plain hook loop: mean over prompts, heads and queries of
    A[q, 0], summed in float32."""
    got = {}

    def keep(p, hook):
        got["v"] = float(p[:, :, :, 0].float().mean())

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[*hooks, (get_act_name("pattern", 1), keep)])
    return got["v"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_patches_equal_a_plain_hook_loop(dtype):
    zm = load_model("tiny", progress=False, dtype=dtype)
    model = zm.model
    assert model.cfg.dtype == getattr(torch, dtype)
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    tokens = torch.randint(3, 200, (3, 12), generator=torch.Generator().manual_seed(2))
    patcher = Patcher(model, tokens, "zero")
    res = patcher.patch([Site("attn", 0), Site("mlp", 0)], SinkScore(LAYERS))
    assert res.values.dtype == torch.float32  # reduced in float32
    zero = lambda act, hook: act.index_fill_(1, torch.tensor([0]), 0.0)  # noqa: E731
    for k, name in enumerate((get_act_name("attn_out", 0), get_act_name("mlp_out", 0))):
        want = _plain_sink(model, tokens, [(name, zero)])
        assert float(res.values[k]) == pytest.approx(want, abs=1e-6)
    assert res.clean == pytest.approx(_plain_sink(model, tokens, []), abs=1e-6)
    # the same question in float32 differs only by the precision's rounding
    f32 = load_model("tiny", progress=False).model
    f32_res = Patcher(f32, tokens, "zero").patch([Site("attn", 0)], SinkScore(LAYERS))
    assert float(res.values[0]) == pytest.approx(float(f32_res.values[0]), abs=2e-2)


def test_the_dtype_is_checked_and_recorded(tmp_path):
    with pytest.raises(UsageError, match="dtype"):
        load_model("tiny", progress=False, dtype="float64")
    out = tmp_path / "m"
    assert (
        main(
            [
                "measure",
                "--model",
                "tiny",
                "--dtype",
                "bfloat16",
                "--max-tokens",
                "32",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    record = json.loads((out / "sink_metrics.json").read_text())
    assert record["dtype"] == "bfloat16" and record["args"]["dtype"] == "bfloat16"
    out = tmp_path / "d"
    args = ["discover", "--model", "tiny", "--dtype", "float16", "--n-prompts", "2"]
    assert (
        main([*args, "--n-tokens", "12", "--first-receiver", "1", "--out", str(out), "--quiet"])
        == 0
    )
    record = json.loads((out / "patching.json").read_text())
    assert record["dtype"] == "float16"
    with pytest.raises(SystemExit) as bad:  # argparse: one line naming the choices, exit 2
        main(["measure", "--model", "tiny", "--dtype", "half", "--out", str(tmp_path / "x")])
    assert bad.value.code == 2 and not (tmp_path / "x").exists()
