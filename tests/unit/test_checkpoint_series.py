"""Checkpoint series beyond our own runs: a folder of Hugging Face checkpoints traced and checked
against ``transformers``' own attention weights; a TransformerLens official model with training
checkpoints (the hub replaced by a local stand-in: which checkpoint indices are asked for, and
which steps they are labelled with); attention destinations and the circuit over training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _hf_helpers import save_family

from circuits.cli import main
from circuits.core.errors import UsageError
from circuits.emergence import series as S
from circuits.metrics.attention import attention_destinations

STEPS = (0, 10, 1000)


@pytest.fixture(scope="module")
def pythia_series(tmp_path_factory):
    """Three random GPT-NeoX (Pythia-style, parallel blocks) checkpoints in step folders; the
    names are out of order on purpose (sorted by name, 1000 comes before 10)."""
    root = tmp_path_factory.mktemp("pythia-ckpts")
    refs = {}
    for step in STEPS:
        refs[step] = save_family("gpt_neox", root / f"step{step}", seed=step + 1)
    return root, refs


def test_step_numbers_come_from_folder_names():
    assert S.step_of("step1000") == 1000
    assert S.step_of("checkpoint-2000") == 2000
    assert S.step_of("global_step300") == 300
    assert S.step_of("final") is None


def test_hf_folder_trace_matches_transformers_attention(pythia_series, tmp_path):
    root, refs = pythia_series
    out = tmp_path / "trace"
    argv = ["trace", str(root), "--out", str(out), "--batch-size", "3", "--n-tokens", "16"]
    assert main([*argv, "--quiet"]) == 0
    trace = json.loads((out / "trace.json").read_text())
    assert [c["step"] for c in trace["checkpoints"]] == list(STEPS)
    assert trace["source"].startswith("Hugging Face checkpoint folder")
    tokens = S.hf_folder_series(root, n_prompts=3, n_tokens=16).tokens
    for row in trace["checkpoints"]:
        ref = refs[row["step"]]
        ref.config._attn_implementation = "eager"
        with torch.no_grad():
            attentions = ref(tokens, output_attentions=True).attentions
        for layer, pattern in enumerate(attentions):  # [batch, head, query, key]
            want = pattern[:, :, 1:, 0].mean().item()
            assert row["layers"][layer]["attn_to_p0"] == pytest.approx(want, abs=1e-5)
            dest = attention_destinations(pattern, tokens)
            assert row["layers"][layer]["destinations"]["self"] == pytest.approx(
                dest["self"], abs=1e-5
            )


def test_hf_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no checkpoint subfolders"):
        S.hf_folder_series(tmp_path / "empty")
    bad = tmp_path / "bad"
    (bad / "final").mkdir(parents=True)
    (bad / "final" / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="no step number"):
        S.hf_folder_series(bad)
    assert main(["trace", str(tmp_path / "empty"), "--quiet"]) == 2  # neither run nor HF folder
    assert main(["trace", "--official", "pythia-70m", "--quiet"]) == 2  # needs --out


def test_log_spaced_indices():
    picks = S.log_spaced_indices(154, 20)
    assert picks[0] == 0 and picks[-1] == 153 and picks == sorted(set(picks))
    assert 15 <= len(picks) <= 21
    assert S.log_spaced_indices(5, 20) == [0, 1, 2, 3, 4]


def test_official_series_asks_transformer_lens_for_each_checkpoint(monkeypatch, pythia_series):
    """The real loading path, with the hub call replaced: TransformerLens' own labels for
    pythia-70m (a table, no hub needed) decide the steps; each step loads with its index."""
    from transformer_lens.loading_from_pretrained import get_checkpoint_labels

    from circuits.zoo import load as zoo_load

    labels, kind = get_checkpoint_labels("pythia-70m")
    assert kind == "step" and labels[0] == 0 and labels[-1] == 143000
    root, _ = pythia_series
    asked = []
    stand_in = zoo_load.load_model(str(root / "step10"), progress=False)

    def fake(official, progress, checkpoint_index=None):
        asked.append((official, checkpoint_index))
        return stand_in

    monkeypatch.setattr(zoo_load, "_from_transformer_lens", fake)
    series = S.official_series("pythia-70m", indices=[0, 3, 153], n_prompts=2, n_tokens=12)
    assert series.steps == [labels[0], labels[3], labels[153]]
    series.load(labels[153])
    assert ("pythia-70m", 153) in asked and ("pythia-70m", 0) in asked
    assert series.info["checkpoint_index"][str(labels[3])] == 3
    with pytest.raises(UsageError, match="indices"):
        S.official_series("pythia-70m", indices=[999])
    with pytest.raises(UsageError, match="no training checkpoints"):
        S.official_series("gpt2")


def test_attention_destinations_on_a_known_pattern():
    """Batch 1, one head, 4 positions; queries 2 and 3 (the ones counted) split as written."""
    a = torch.zeros(1, 1, 4, 4)
    a[0, 0, 0, 0] = 1
    a[0, 0, 1, :2] = 0.5
    a[0, 0, 2] = torch.tensor([0.5, 0.2, 0.3, 0.0])  # P0 .5, prev .2, self .3
    a[0, 0, 3] = torch.tensor([0.1, 0.1, 0.6, 0.2])  # P0 .1, other .1, prev .6, self .2
    tokens = torch.tensor([[7, 5, 7, 2]])
    d = attention_destinations(a, tokens)
    assert d["p0"] == pytest.approx(0.3)
    assert d["self"] == pytest.approx(0.25)
    assert d["prev"] == pytest.approx(0.4)
    assert d["other"] == pytest.approx(0.05)
    # token 7 sits at keys 0 and 2: (.5 + .3) + (.1 + .6) over 2 queries
    assert d["top_token_id"] == 7 and d["top_token_share"] == pytest.approx(0.75)
    with pytest.raises(UsageError):
        attention_destinations(a, tokens[:, :3])


def test_circuit_over_training_summary():
    from circuits.emergence.circuit_over_training import summarize

    rows = [
        {"step": 0, "clean_sink": 0.1, "circuit": ["embed@p0"], "sufficient": True, "effects": {}},
        {
            "step": 10,
            "clean_sink": 0.4,
            "circuit": ["attn0@p0"],
            "sufficient": False,
            "effects": {"attn0@p0": -0.5, "mlp0@p0": -0.2},
        },
        {"step": 100, "clean_sink": 0.5, "circuit": ["attn0@p0", "mlp0@p0"], "sufficient": True},
    ]
    s = summarize(rows, eps=0.3)
    # step 0 has no sink: its trivially "sufficient" circuit does not count
    assert s["first_step_in_circuit"] == {"attn0@p0": 10, "mlp0@p0": 100}
    assert s["first_step_with_sink"] == 10 and s["carrier_at_first_sink"] == "attn0@p0"
    assert s["first_step_sufficient"] == 100 and s["sufficient_at"] == [100]
    assert s["final_circuit"] == ["attn0@p0", "mlp0@p0"]


def test_trace_circuit_on_a_run_agrees_with_discover(tmp_path):
    """``trace --circuit`` on a tiny run: each checkpoint's row is what ``discover`` finds on
    that checkpoint's model with the same prompts and config."""
    from circuits.circuit.config import DiscoverConfig
    from circuits.circuit.discover import discover
    from circuits.training.checkpoints import load_run_model

    run = tmp_path / "run"
    flags = ["--data", "bigram-backcopy", "--task", '{"n_plain": 16}', "--bos", "--layers", "3"]
    flags += ["--width", "16", "--heads", "1", "--norm", "ln", "--positional", "learned"]
    flags += ["--mlp", "relu", "--context", "12", "--batch-size", "4", "--steps", "6"]
    flags += ["--checkpoints", "3", "--save-every", "0"]
    assert main(["train", *flags, "--out", str(run), "--quiet"]) == 0
    assert main(["trace", str(run), "--circuit", "--batch-size", "4", "--quiet"]) == 0
    data = json.loads((run / "circuit_over_training.json").read_text())
    assert (run / "circuit_over_training.png").is_file()
    series = S.run_series(run, batch_size=4)
    assert [r["step"] for r in data["checkpoints"]] == series.steps
    step = series.steps[-1]
    model, _, _ = load_run_model(run, step)
    config = DiscoverConfig(counterfactual="mean", exact_top_k=None, progress=False)
    found = discover(model, series.tokens[:8], config, model_name="x")
    row = data["checkpoints"][-1]
    assert row["clean_sink"] == pytest.approx(found.record["clean"]["sink"], abs=1e-6)
    assert row["circuit"] == found.record["circuit"]
    want = {r["name"]: r["relative"] for r in found.record["components"]["effects"]}
    assert row["effects"] == pytest.approx(want, abs=1e-6)
    assert all(math.isfinite(v) for v in row["effects"].values())
