"""The live P0 sink monitor: its values equal ``trace``'s at the same steps of the same run
(trace reads the saved checkpoints back; the monitor read the model while it trained), its
convergence rule on hand-made rows, and the monitor inside transformers' ``Trainer`` and
PyTorch Lightning against sink scores read from the models' own attention."""

from __future__ import annotations

import json

import pytest
import torch

from circuits.cli import main
from circuits.emergence.monitor import MONITOR_FILE, P0SinkMonitor, signal_converged
from circuits.metrics.convergence import settling_step

RUN = ["train", "--data", "bigram-backcopy", "--layers", "3", "--width", "32", "--heads", "1",
       "--norm", "ln", "--positional", "learned", "--mlp", "relu", "--context", "16",
       "--batch-size", "8", "--steps", "40", "--checkpoints", "3", "--bos", "--quiet",
       "--monitor-every", "1", "--monitor-exact-every", "1"]  # fmt: skip


def test_the_monitor_measures_what_trace_measures_at_the_same_steps(tmp_path):
    """A run killed at step 12 and resumed: one monitor row per step (none twice), and at every
    checkpoint trace measures, every value of the monitor's row equals trace's."""
    run = tmp_path / "run"
    assert main([*RUN, "--out", str(run), "--stop-at", "12"]) == 0
    assert main([*RUN, "--out", str(run)]) == 0
    rows = [json.loads(line) for line in (run / MONITOR_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(41))
    assert main(["trace", str(run), "--quiet"]) == 0
    assert (
        run / "monitor.png"
    ).is_file()  # trace draws a monitored run's signal (docs/training.md)
    trace = json.loads((run / "trace.json").read_text())
    by_step = {r["step"]: r for r in rows}
    assert len(trace["checkpoints"]) >= 4
    for cp in trace["checkpoints"]:
        row = by_step[cp["step"]]
        for key, value in cp.items():
            if key in ("step", "phase", "train_loss"):
                continue
            want, got = _flat(value), _flat(row[key])
            assert got.keys() == want.keys(), (cp["step"], key)
            for path, v in want.items():
                assert got[path] == pytest.approx(v, abs=1e-6), (cp["step"], key, path)
    exact = [r for r in rows if r["ablation_share_l01"] is not None]
    assert exact and all(r["share_l01_estimate"] is not None for r in exact)


def _flat(value, path: str = "") -> dict:
    """Every leaf of nested dicts and lists, by its path."""
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, sub in enumerate(value) for k, v in _flat(sub, f"{path}/{i}").items()}
    return {path: value}


def _row(strength: float, estimate: float | None = 0.9, growth: float | None = 0.8) -> dict:
    return {
        "sink_strength": strength,
        "share_l01_estimate": estimate,
        "norm_growth_share_l01": growth,
    }


def test_converged_needs_a_sink_and_a_signal_that_stays_in_its_band():
    """n_pos 16: uniform attention's sink score is mean 1/(q+1) = 0.2113, the sink factor 2x."""
    uniform = sum(1 / (q + 1) for q in range(16)) / 16
    low = 2 * uniform - 0.01
    stable = [_row(0.8), _row(0.85), _row(0.76)]  # a band of 0.09
    assert signal_converged(stable, 3, 0.1, 16)
    assert not signal_converged(stable[:2], 3, 0.1, 16)  # too few evaluations
    assert not signal_converged([_row(low)] * 3, 3, 0.1, 16)  # stable, but no sink
    assert not signal_converged([_row(0.8), _row(0.65), _row(0.8)], 3, 0.1, 16)  # a dip
    assert not signal_converged([_row(0.8, 0.5), _row(0.8, 0.9), _row(0.8, 0.9)], 3, 0.1, 16)
    # a share that is None somewhere in the window is left out; the sink strength decides
    assert signal_converged([_row(0.8, None), _row(0.8, 0.2), _row(0.8, 0.9)], 3, 0.1, 16)


def test_settling_step_is_where_a_curve_stays_near_its_end():
    """Total change 1.0, band 10%: the values must stay within 0.1 of the last one."""
    steps = [0, 10, 20, 30, 40, 50]
    assert settling_step(steps, [0.0, 0.5, 0.95, 0.85, 0.92, 1.0], 0.1) == 40
    assert settling_step(steps, [0.0, 0.95, 1.0, 1.0, 1.0, 1.0], 0.1) == 10
    assert settling_step(steps, [2.0, 2.0, 2.0, 2.0, 2.0, 2.0], 0.1) is None  # no change


def _sink_scores_from_attentions(hf_model, prompts) -> list[float]:
    """Per layer, Gu et al.'s alpha_0 from the transformers model's own attention weights: mean
    over queries q >= 0, heads and prompts of A[q, 0] (no toolkit code)."""
    was = hf_model.training
    hf_model.eval()
    with torch.no_grad():
        out = hf_model(prompts, output_attentions=True)
    hf_model.train(was)
    return [float(a[..., 0].mean()) for a in out.attentions]


def _hf_model(family: str, folder):
    """A small random transformers causal LM: llama (the toolkit's own weight conversion) or
    mistral (TransformerLens' converter, reading the config from a folder)."""
    if family == "mistral":
        from tests._hf_helpers import save_family

        return save_family("mistral", folder)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_the_monitor_in_a_transformers_trainer_logs_the_models_own_sink(family, tmp_path):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = _hf_model(family, tmp_path / "hf")
    model.config._attn_implementation = "eager"  # attention weights for the oracle
    model.train()
    torch.manual_seed(0)
    data = torch.randint(1, model.config.vocab_size, (16, 12))
    dataset = [{"input_ids": row, "labels": row} for row in data]
    prompts = data[:4]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
        logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
        learning_rate=1e-2, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    monitor = P0SinkMonitor(prompts, every=2)
    monitor.attach(trainer)
    oracle: dict[int, list[float]] = {}

    class Oracle(TrainerCallback):  # runs after the monitor's callback, at the same step
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % 2 == 0:
                oracle[state.global_step] = _sink_scores_from_attentions(model, prompts)

    trainer.add_callback(Oracle())
    trainer.train()
    assert [r["step"] for r in monitor.history] == [2, 4] and sorted(oracle) == [2, 4]
    for row in monitor.history:
        got = [layer["sink_score"] for layer in row["layers"]]
        assert got == pytest.approx(oracle[row["step"]], abs=1e-5)
    logged = [h for h in trainer.state.log_history if "p0/sink_strength" in h]
    assert len(logged) == 2 and logged[-1]["p0/sink_strength"] == pytest.approx(
        monitor.history[-1]["sink_strength"]
    )


def test_the_monitor_as_a_lightning_callback_logs_through_the_module():
    lightning = pytest.importorskip("lightning", reason="PyTorch Lightning is not installed")
    from circuits.zoo import tiny_model

    model = tiny_model(seed=0, n_layers=3)
    prompts = torch.randint(1, 200, (4, 12), generator=torch.Generator().manual_seed(1))

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):
            return self.model(batch[0], return_type="loss")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randint(1, 200, (16, 12)))
    monitor = P0SinkMonitor(prompts, every=2)
    trainer = lightning.Trainer(
        max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[monitor.lightning_callback()],
    )  # fmt: skip
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=4))
    assert [r["step"] for r in monitor.history] == [2, 4]
    with torch.no_grad():  # the final model: its own patterns, by a plain hook
        pats = {}
        model.run_with_hooks(
            prompts,
            fwd_hooks=[
                (
                    lambda n: n.endswith("hook_pattern"),
                    lambda a, hook: pats.__setitem__(hook.name, a),
                )
            ],
        )
    want = [float(pats[f"blocks.{la}.attn.hook_pattern"][..., 0].mean()) for la in range(3)]
    got = [layer["sink_score"] for layer in monitor.history[-1]["layers"]]
    assert got == pytest.approx(want, abs=1e-5)
    assert "p0/sink_strength" in trainer.callback_metrics
