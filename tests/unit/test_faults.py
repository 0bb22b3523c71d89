"""The fault table: bad input and faults, command by command, each checked for its exit code, a
one-line message, and what is left on disk.

Promises (the trust issue): 1 input validated before work (exit 2, nothing created);
2 no non-finite number reported as finite; 3 checksums on what is read back; 4 all-or-nothing
outputs; 5 a concurrency-safe cache (tests/integration/test_cache_race.py); 6 unexpected errors
as one line (exit 1) and ``--debug``; 7 an offline hub name fails fast (tests/e2e/test_cli.py).
"""

from __future__ import annotations

import errno
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from _render_fixtures import discover_dir
from _training_helpers import tiny_trigger_args

from circuits.cli import main
from circuits.core.manifest import write_manifest

TINY = ["--model", "tiny"]
MEASURE = ["measure", *TINY, "--max-tokens", "24", "--quiet"]
DISCOVER = [
    "discover",
    *TINY,
    "--n-prompts",
    "2",
    "--n-tokens",
    "12",
    "--first-receiver",
    "1",
    "--quiet",
]


@dataclass
class Case:
    name: str
    promises: tuple[int, ...]
    argv: Callable[[Path], list[str]]
    code: int
    fragments: tuple[str, ...]
    left: Callable[[Path], bool] = field(default=lambda t: not (t / "out").exists())
    """What must hold on disk afterwards (default: no output folder)."""


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return path


def _measured(t: Path) -> Path:
    assert main([*MEASURE, "--out", str(t / "m")]) == 0
    return t / "m"


def _edit_record(t: Path, change: Callable[[dict], object], reseal: bool) -> list[str]:
    folder = _measured(t)
    record = json.loads((folder / "sink_metrics.json").read_text())
    (folder / "sink_metrics.json").write_text(json.dumps(change(record) or record))
    if reseal:  # the checksum matches: only the content check can refuse it
        write_manifest(folder)
    return ["render", str(folder)]


def _discovered_with_key(t: Path, old: str, new: str) -> list[str]:
    """A discover folder whose patching.json has key ``old`` renamed ``new``, its manifest
    rewritten (the checksum matches: only the key check can refuse it)."""
    folder = discover_dir(t)
    record = json.loads((folder / "patching.json").read_text())
    record[new] = record.pop(old)
    (folder / "patching.json").write_text(json.dumps(record))
    write_manifest(folder)
    return ["render", str(folder)]


def _gguf(path: Path, keep: float = 1.0) -> Path:
    """A small valid GGUF file (two float tensors), cut to its first ``keep`` fraction."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("a", np.ones((8, 16), dtype=np.float32))
    writer.add_tensor("b", np.ones((32,), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _run_dir(t: Path, steps: int = 6) -> Path:
    args = tiny_trigger_args(steps=steps, checkpoints=3, save_every=2)
    assert main(["train", *args, "--out", str(t / "run"), "--quiet"]) == 0
    return t / "run"


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _unchanged_old_out(t: Path) -> bool:
    return (t / "out" / "keep.txt").read_text() == "mine"


def _old_out(t: Path) -> list[str]:
    _write(t / "out" / "keep.txt", "mine")
    return [*MEASURE, "--out", str(t / "out")]


CASES = [
    # --- measure -----------------------------------------------------------------------------
    Case(
        "measure: unknown model",
        (1,),
        lambda t: ["measure", "--model", "nope-7b", "--out", str(t / "out")],
        2,
        ("unknown model 'nope-7b'", "p0-circuits models"),
    ),
    Case(
        "measure: missing text",
        (1,),
        lambda t: [*MEASURE, "--text", str(t / "x.txt"), "--out", str(t / "out")],
        2,
        ("does not exist",),
    ),
    Case(
        "measure: text of one token",
        (1,),
        lambda t: [*MEASURE, "--text", str(_write(t / "x.txt", "a")), "--out", str(t / "out")],
        2,
        ("at least 2",),
    ),
    Case(
        "measure: text not UTF-8",
        (1,),
        lambda t: [
            *MEASURE,
            "--text",
            str(_write(t / "x.txt", b"\xff\xfe\xfa")),
            "--out",
            str(t / "out"),
        ],
        2,
        ("not UTF-8",),
    ),
    Case(
        "measure: text longer than the context",
        (1,),
        lambda t: [
            "measure",
            *TINY,
            "--text",
            str(_write(t / "x.txt", "z" * 300)),
            "--out",
            str(t / "out"),
        ],
        2,
        ("--truncate",),
    ),
    Case(
        "measure: --eps out of range",
        (1,),
        lambda t: [*MEASURE, "--eps", "1.5", "--out", str(t / "out")],
        2,
        ("--eps",),
    ),
    Case(
        "measure: --eps nan",
        (1,),
        lambda t: [*MEASURE, "--eps", "nan", "--out", str(t / "out")],
        2,
        ("--eps",),
    ),
    Case(
        "measure: --massive-ratio 0",
        (1,),
        lambda t: [*MEASURE, "--massive-ratio", "0", "--out", str(t / "out")],
        2,
        ("--massive-ratio",),
    ),
    Case(
        "measure: --max-tokens 1",
        (1,),
        lambda t: [*MEASURE, "--max-tokens", "1", "--out", str(t / "out")],
        2,
        ("--max-tokens",),
    ),
    Case(
        "measure: --seed -1",
        (1,),
        lambda t: [*MEASURE, "--seed", "-1", "--out", str(t / "out")],
        2,
        ("--seed",),
    ),
    Case(
        "measure: --out exists",
        (1, 4),
        _old_out,
        2,
        ("already exists", "--overwrite"),
        _unchanged_old_out,
    ),
    Case(
        "measure: --out exists, --overwrite, but p0-circuits did not write it",
        (1, 4),
        lambda t: [*_old_out(t), "--overwrite"],
        2,
        ("did not write", "choose another --out", "remove"),
        _unchanged_old_out,
    ),
    Case(
        "measure: --out is an earlier result, --overwrite",
        (4,),
        lambda t: [*MEASURE, "--out", str(_measured(t)), "--overwrite"],
        0,
        (),
        lambda t: (t / "m" / "manifest.json").is_file() and not (t / "out").exists(),
    ),
    Case(
        "measure: --out is a file",
        (1,),
        lambda t: [*MEASURE, "--out", str(_write(t / "out", "x"))],
        2,
        ("is a file",),
        lambda t: (t / "out").read_text() == "x",
    ),
    Case(
        "measure: --out not writable",
        (1,),
        lambda t: [*MEASURE, "--out", str(_write(t / "f", "x") / "out")],
        2,
        ("cannot write",),
        lambda t: (t / "f").is_file(),
    ),
    Case(
        "measure: a .gguf of random bytes",
        (1,),
        lambda t: [
            "measure",
            "--model",
            str(_write(t / "m.gguf", b"\x00" * 64)),
            "--out",
            str(t / "out"),
        ],
        2,
        ("not a GGUF file",),
    ),
    Case(
        "measure: a truncated .gguf",
        (1,),
        lambda t: ["measure", "--model", str(_gguf(t / "m.gguf", 0.5)), "--out", str(t / "out")],
        2,
        ("is truncated", "its header says", "bytes, the file has", "download it again"),
    ),
    Case(
        "measure: a .gguf cut inside its header",
        (1,),
        lambda t: ["measure", "--model", str(_gguf(t / "m.gguf", 0.05)), "--out", str(t / "out")],
        2,
        ("is truncated", "ends inside its header", "download it again"),
    ),
    Case(
        "measure: a folder that is no model",
        (1,),
        lambda t: [
            "measure",
            "--model",
            str(_write(t / "d" / "x.txt", "x").parent),
            "--out",
            str(t / "out"),
        ],
        2,
        ("neither a .gguf",),
    ),
    # --- discover ----------------------------------------------------------------------------
    Case(
        "discover: --n-tokens 1",
        (1,),
        lambda t: [*DISCOVER, "--n-tokens", "1", "--out", str(t / "out")],
        2,
        ("n_tokens",),
    ),
    Case(
        "discover: --n-prompts 0",
        (1,),
        lambda t: [*DISCOVER, "--n-prompts", "0", "--out", str(t / "out")],
        2,
        ("--n-prompts",),
    ),
    Case(
        "discover: receiver out of range",
        (1,),
        lambda t: [*DISCOVER, "--receivers", "9", "--out", str(t / "out")],
        2,
        ("out of range",),
    ),
    Case(
        "discover: receivers not numbers",
        (1,),
        lambda t: [*DISCOVER, "--receivers", "a,b", "--out", str(t / "out")],
        2,
        ("--receivers",),
    ),
    Case(
        "discover: --threshold 2",
        (1,),
        lambda t: [*DISCOVER, "--threshold", "2", "--out", str(t / "out")],
        2,
        ("component_threshold",),
    ),
    Case(
        "discover: --threshold nan",
        (1,),
        lambda t: [*DISCOVER, "--threshold", "nan", "--out", str(t / "out")],
        2,
        ("component_threshold",),
    ),
    Case(
        "discover: --sufficiency 1.5",
        (1,),
        lambda t: [*DISCOVER, "--sufficiency", "1.5", "--out", str(t / "out")],
        2,
        ("sufficiency",),
    ),
    Case(
        "discover: --exact-top-k -5",
        (1,),
        lambda t: [*DISCOVER, "--exact-top-k", "-5", "--out", str(t / "out")],
        2,
        ("--exact-top-k",),
    ),
    Case(
        "discover: --ig-steps 0",
        (1,),
        lambda t: [*DISCOVER, "--ig-steps", "0", "--out", str(t / "out")],
        2,
        ("--ig-steps",),
    ),
    Case(
        "discover: --ig-steps 4 with the p0-stream first pass",
        (1,),
        lambda t: [*DISCOVER, "--ig-steps", "4", "--out", str(t / "out")],
        2,
        ("ig_steps=4", "--first-pass attribution"),
    ),
    Case(
        "discover: --device gpu",
        (1,),
        lambda t: [*DISCOVER, "--device", "gpu", "--out", str(t / "out")],
        2,
        ("--device",),
    ),
    Case(
        "discover: --max-rows 0",
        (1,),
        lambda t: [*DISCOVER, "--max-rows", "0", "--out", str(t / "out")],
        2,
        ("--max-rows",),
    ),
    Case(
        "discover: first receiver past the last layer",
        (1,),
        lambda t: [*DISCOVER, "--first-receiver", "5", "--out", str(t / "out")],
        2,
        ("first_receiver 5",),
    ),
    Case(
        "discover: --out exists",
        (1, 4),
        lambda t: [*DISCOVER, "--out", str(_write(t / "out" / "keep.txt", "mine").parent)],
        2,
        ("already exists",),
        _unchanged_old_out,
    ),
    # --- render ------------------------------------------------------------------------------
    Case(
        "render: empty folder",
        (1,),
        lambda t: ["render", str(_write(t / "e" / ".x", "").parent)],
        2,
        ("no recognised result",),
        lambda t: not (t / "e" / "report.html").exists(),
    ),
    Case(
        "render: missing folder",
        (1,),
        lambda t: ["render", str(t / "nothing")],
        2,
        ("not a directory",),
    ),
    Case(
        "render: a record edited after it was written",
        (3,),
        lambda t: _edit_record(t, lambda r: r["layers"][0].update(attn_to_p0=0.99), reseal=False),
        2,
        ("changed after it was written",),
    ),
    Case(
        "render: a record of another kind",
        (1, 3),
        lambda t: _edit_record(t, lambda r: r.update(format="p0-circuits/discover/1"), reseal=True),
        2,
        ("not a measure record",),
    ),
    Case(
        "render: JSON of the wrong shape",
        (1,),
        lambda t: _edit_record(t, lambda r: [1, 2], reseal=True),
        2,
        ("does not hold a JSON object",),
    ),
    Case(
        "render: a misspelt top-level key in patching.json",
        (1,),
        lambda t: _discovered_with_key(t, "faithfulness", "faithfulnes"),
        2,
        ("patching.json", "missing key 'faithfulness'", "misspelt as 'faithfulnes'"),
        lambda t: not (t / "discover" / "report.html").exists(),
    ),
    Case(
        "render: an unknown top-level key in patching.json",
        (1,),
        lambda t: _discovered_with_key(t, "timings_s", "timing_s"),
        2,
        ("patching.json", "timing_s", "Extra inputs"),
        lambda t: not (t / "discover" / "report.html").exists(),
    ),
    Case(
        "render: a misspelt top-level key in sink_metrics.json",
        (1,),
        lambda t: _edit_record(t, lambda r: r.update(epss=r.pop("eps")), reseal=True),
        2,
        ("sink_metrics.json", "unknown key 'epss'", "missing key 'eps'"),
    ),
    Case(
        "render: a circuit without its record",
        (1,),
        lambda t: ["render", str(_write(t / "c" / "circuit.json", "{}").parent)],
        2,
        ("no patching.json",),
    ),
    Case(
        "render: --top-k 0",
        (1,),
        lambda t: ["render", str(_measured(t)), "--top-k", "0"],
        2,
        ("--top-k",),
    ),
    # --- train -------------------------------------------------------------------------------
    Case(
        "train: a config value of the wrong type",
        (1,),
        lambda t: [
            "train",
            "--config",
            str(_write(t / "c.json", '{"lr": "0.1"}')),
            "--out",
            str(t / "out"),
        ],
        2,
        ("lr must be a finite number",),
    ),
    Case(
        "train: an int where a float is meant is fine, a float where an int is meant is not",
        (1,),
        lambda t: [
            "train",
            "--config",
            str(_write(t / "c.json", '{"n_layers": 2.5}')),
            "--out",
            str(t / "out"),
        ],
        2,
        ("n_layers must be an integer",),
    ),
    Case(
        "train: an unknown config key",
        (1,),
        lambda t: [
            "train",
            "--config",
            str(_write(t / "c.toml", "layers = 2\n")),
            "--out",
            str(t / "out"),
        ],
        2,
        ("unknown TrainConfig keys",),
    ),
    Case(
        "train: a config that is not JSON",
        (1,),
        lambda t: [
            "train",
            "--config",
            str(_write(t / "c.json", "{nope")),
            "--out",
            str(t / "out"),
        ],
        2,
        ("not valid",),
    ),
    Case(
        "train: bad task option",
        (1,),
        lambda t: [
            "train",
            "--data",
            "trigger",
            "--task",
            '{"n_plain": "x"}',
            "--out",
            str(t / "out"),
        ],
        2,
        ("n_plain must be an integer",),
    ),
    Case(
        "train: --lr nan",
        (1,),
        lambda t: [
            "train",
            *tiny_trigger_args(steps=2, checkpoints=1, save_every=0),
            "--lr",
            "nan",
            "--out",
            str(t / "out"),
        ],
        2,
        ("lr must be a finite number",),
    ),
    Case(
        "train: width not divisible by heads",
        (1,),
        lambda t: [
            "train",
            *tiny_trigger_args(steps=2, checkpoints=1, save_every=0),
            "--width",
            "15",
            "--out",
            str(t / "out"),
        ],
        2,
        ("divisible",),
    ),
    Case(
        "train: --threads 0",
        (1,),
        lambda t: [
            "train",
            *tiny_trigger_args(steps=2, checkpoints=1, save_every=0),
            "--threads",
            "0",
            "--out",
            str(t / "out"),
        ],
        2,
        ("--threads",),
    ),
    Case(
        "train: --device tpu",
        (1,),
        lambda t: [
            "train",
            *tiny_trigger_args(steps=2, checkpoints=1, save_every=0),
            "--device",
            "tpu",
            "--out",
            str(t / "out"),
        ],
        2,
        ("--device",),
    ),
    Case(
        "train: --overwrite on a folder that is not a run",
        (1, 4),
        lambda t: [
            "train",
            *tiny_trigger_args(steps=2, checkpoints=1, save_every=0),
            "--out",
            str(_write(t / "out" / "keep.txt", "mine").parent),
            "--overwrite",
        ],
        2,
        ("not a training run", "--overwrite would delete it", "remove"),
        _unchanged_old_out,
    ),
    Case(
        "train: resume with another config",
        (1,),
        lambda t: ["train", "--out", str(_run_dir(t)), "--seed", "5", "--quiet"],
        2,
        ("different config",),
        lambda t: (t / "run" / "run.json").is_file(),
    ),
    # --- trace -------------------------------------------------------------------------------
    Case(
        "trace: not a run",
        (1,),
        lambda t: ["trace", str(_write(t / "d" / "x", "").parent)],
        2,
        ("neither a training run",),
    ),
    Case("trace: --eps 0", (1,), lambda t: ["trace", str(t), "--eps", "0"], 2, ("--eps",)),
    Case(
        "trace: --delta nan", (1,), lambda t: ["trace", str(t), "--delta", "nan"], 2, ("--delta",)
    ),
    Case(
        "trace: run.json changed after it was written",
        (3,),
        lambda t: ["trace", str(_tamper_run_json(t))],
        2,
        ("does not match the checksum",),
        lambda t: not (t / "run" / "trace.json").exists(),
    ),
]


def _tamper_run_json(t: Path) -> Path:
    run = _run_dir(t)
    data = json.loads((run / "run.json").read_text())
    data["vocab_size"] += 1
    (run / "run.json").write_text(json.dumps(data))
    return run


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case: Case, tmp_path, capsys):
    argv = case.argv(tmp_path)
    capsys.readouterr()
    assert main(argv) == case.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    if case.code == 0:
        assert not [line for line in err if "error" in line]
    else:
        lines = [line for line in err if "error:" in line]
        assert len(lines) == 1, err
        for fragment in case.fragments:
            assert fragment in lines[0], lines[0]
    assert case.left(tmp_path), "wrong files left on disk"
    assert not list(tmp_path.glob(".*partial*")), "a temporary folder was left behind"


def test_the_table_has_forty_cases_or_more():
    assert len(CASES) + len(SPECIAL) >= 40


# ------------------------------------------------------------------------------------------------
# Faults that need more than an argv: non-finite models, a full disk, bugs, damaged files
# ------------------------------------------------------------------------------------------------


def _nan_tiny(monkeypatch, layer: int = 1) -> None:
    """Make the ``tiny`` zoo model hold a NaN weight in block ``layer``."""
    import circuits.zoo.load as load

    real = load.tiny_model

    def broken(*a, **k):
        model = real(*a, **k)
        with torch.no_grad():
            model.blocks[layer].mlp.W_out[0, 0] = float("nan")
        return model

    monkeypatch.setattr(load, "tiny_model", broken)


def test_a_model_with_nan_weights_is_an_error_naming_the_layer(monkeypatch, tmp_path, capsys):
    _nan_tiny(monkeypatch, layer=1)
    assert main([*MEASURE, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "blocks.1.hook_resid_post" in err
    assert main([*DISCOVER, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "blocks.1." in err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_while_writing_leaves_nothing(monkeypatch, tmp_path, capsys):
    real = Path.write_text

    def full(self, data, *a, **k):  # the disk fills up exactly when the record is written
        if self.name.startswith(".sink_metrics.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    assert main([*MEASURE, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "sink_metrics.json" in err[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*"))


def test_an_unexpected_error_is_one_line_and_debug_shows_it(monkeypatch, tmp_path, capsys):
    import circuits.metrics.measure as measure

    def bug(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(measure, "measure_sinks", bug)
    assert main([*MEASURE, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "p0-circuits measure: internal error: RuntimeError: a bug" in err[0]
    assert "test_faults.py" in err[0] and "--debug" in err[0]
    with pytest.raises(RuntimeError, match="a bug"):
        main([*MEASURE, "--out", str(tmp_path / "out"), "--debug"])
    monkeypatch.setenv("P0_CIRCUITS_DEBUG", "1")
    with pytest.raises(RuntimeError, match="a bug"):
        main([*MEASURE, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_damaged_checkpoint_is_left_out_of_the_trace_with_a_warning(tmp_path):
    run = _run_dir(tmp_path)
    ckpts = sorted((run / "checkpoints").glob("step_*.pt"))
    _flip_a_byte(ckpts[1])
    with pytest.warns(UserWarning, match="left out of the trace"):
        assert main(["trace", str(run), "--batch-size", "2", "--quiet"]) == 0
    trace = json.loads((run / "trace.json").read_text())
    assert trace["skipped_checkpoints"] == [int(ckpts[1].name[5:12])]
    assert int(ckpts[1].name[5:12]) not in [c["step"] for c in trace["checkpoints"]]


def test_a_run_that_failed_before_its_first_state_takes_a_corrected_config(monkeypatch, tmp_path):
    import circuits.training.loop as loop

    real = loop.build_model
    calls = []

    def fail_once(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("crash after run.json")
        return real(*a, **k)

    monkeypatch.setattr(loop, "build_model", fail_once)
    args = tiny_trigger_args(steps=2, checkpoints=1, save_every=0)
    assert main(["train", *args, "--out", str(tmp_path / "run"), "--quiet"]) == 1
    assert (tmp_path / "run" / "run.json").is_file()  # written, but no state: nothing to lose
    assert main(["train", *args, "--seed", "3", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["seed"] == 3


def test_an_unwritable_cache_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    _write(tmp_path / "file", "x")
    monkeypatch.setenv("P0_CIRCUITS_CACHE", str(tmp_path / "file" / "cache"))
    assert main(["measure", "--model", "smollm2-135m", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "model cache" in err and "not writable" in err and "P0_CIRCUITS_CACHE" in err
    assert not (tmp_path / "out").exists()


def test_python_api_refuses_bad_token_ids_and_nan_models():
    from circuits import Patcher, measure_sinks, tiny_model
    from circuits.core.errors import NonFiniteError, UsageError

    model = tiny_model()
    with pytest.raises(UsageError, match="integers"):
        Patcher(model, torch.rand(2, 8))
    with pytest.raises(UsageError, match="outside the model's vocabulary"):
        measure_sinks(model, torch.tensor([[1, 2, 999]]), bos=False)
    with pytest.raises(UsageError, match="at least 2 positions"):
        measure_sinks(model, torch.tensor([[1]]), bos=False)
    with torch.no_grad():
        model.blocks[0].attn.W_Q[0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="blocks.0"):
        measure_sinks(model, torch.tensor([[1, 2, 3, 4]]), bos=False)
    with pytest.raises(NonFiniteError, match="blocks.0"):
        Patcher(model, torch.tensor([[1, 2, 3, 4]]))


def test_an_out_that_holds_the_working_directory_is_refused_before_any_work(
    monkeypatch, tmp_path, capsys
):
    discovery = importlib.import_module("circuits.circuit.discover")  # the module, not the
    # function the package exports under the same name

    def never(*a, **k):
        raise AssertionError("the discovery ran before --out was refused")

    monkeypatch.setattr(discovery, "discover", never)
    _write(tmp_path / "work" / "a" / "notes.txt", "mine")
    cases = [
        (tmp_path / "work", ".", "the current directory"),
        (tmp_path / "work", str(tmp_path / "work"), "the current directory"),
        (tmp_path / "work" / "a", str(tmp_path / "work"), "holds the current directory"),
        (tmp_path / "work" / "a", "..", "holds the current directory"),
    ]
    for cwd, out, fragment in cases:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        assert main([*DISCOVER, "--out", out, "--overwrite"]) == 2, out
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and fragment in lines[0] and "choose a new folder" in lines[0]
    assert (tmp_path / "work" / "a" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # no partial, no replaced


def test_the_root_and_the_home_directory_are_never_replaced(monkeypatch, tmp_path):
    from circuits.core.errors import UsageError
    from circuits.core.outputs import check_out

    home = _write(tmp_path / "home" / "notes.txt", "mine").parent
    write_manifest(home)  # even one that looks like a result folder
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(UsageError, match="your home directory"):
        check_out(home, overwrite=True)
    with pytest.raises(UsageError, match="the filesystem root"):
        check_out("/", overwrite=True)


SPECIAL = [
    test_an_out_that_holds_the_working_directory_is_refused_before_any_work,
    test_the_root_and_the_home_directory_are_never_replaced,
    test_a_model_with_nan_weights_is_an_error_naming_the_layer,
    test_a_full_disk_while_writing_leaves_nothing,
    test_an_unexpected_error_is_one_line_and_debug_shows_it,
    test_a_damaged_checkpoint_is_left_out_of_the_trace_with_a_warning,
    test_a_run_that_failed_before_its_first_state_takes_a_corrected_config,
    test_an_unwritable_cache_is_a_one_line_error,
    test_python_api_refuses_bad_token_ids_and_nan_models,
]
