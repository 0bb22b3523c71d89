"""Work on one model never sees another's hooks; the panel loses nothing and says what it did.

Regressions of issue 36, each failing on the code before it:

* two panels on one model (a notebook cell run twice), and a ``Patcher`` in the main thread
  while a panel computes: each gets the numbers a plain hook loop gives for its question alone
  (before: a ``ForwardDone`` escaped, patch hooks met tensors of another shape, and the
  interpreter aborted at exit);
* the interpreter exits cleanly while a panel is computing (no "terminate called");
* ``panel.export(DIR)`` never replaces a folder it did not write (before: replaced whole);
* the panel's message describes the last action (before: an older error stayed, and an unknown
  component killed the worker with a ``KeyError``).
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch

from circuits.backend import get_act_name
from circuits.core.errors import UsageError
from circuits.panel import explore
from circuits.patching import Patcher, SinkScore, Site
from circuits.zoo import tiny_model

N_LAYERS = 4


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=5, n_layers=N_LAYERS)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))


def _plain_sink(model, tokens, layers, patch_hook=None):
    """Sink score per receiver layer, with ``patch_hook`` applied, by a plain hook loop on the
    model (no toolkit code)."""
    got = {}

    def keep(p, hook):
        got[hook.layer()] = float(p[:, :, :, 0].mean())

    hooks = [(get_act_name("pattern", la), keep) for la in layers]
    if patch_hook is not None:
        hooks.append(patch_hook)
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    return [got[la] for la in layers]


def _shift_patch(model, tokens, hook_name):
    """A hook writing the shift counterfactual's value at P0 of ``hook_name`` (the same
    prompts with each prompt's last token prepended; the value is that run's position 1)."""
    shifted = torch.cat([tokens[:, -1:], tokens], dim=1)
    _, cache = model.run_with_cache(shifted, names_filter=[hook_name])
    value = cache[hook_name][:, 1]

    def setter(act, hook):
        act[:, 0] = value
        return act

    return (hook_name, setter)


def test_two_panels_and_a_patcher_share_one_model(model, tokens):
    layers = list(range(2, N_LAYERS))
    clean_alone = _plain_sink(model, tokens, layers)
    attn0_alone = _plain_sink(
        model, tokens, layers, _shift_patch(model, tokens, get_act_name("attn_out", 0))
    )
    mlp1_alone = _plain_sink(
        model, tokens, layers, _shift_patch(model, tokens, get_act_name("mlp_out", 1))
    )
    for _ in range(3):  # the race failed 6 of 6 times before
        p1 = explore(model, tokens)
        p1.selected = ["attn0@p0"]
        p2 = explore(model, tokens)  # the cell run again while p1 computes
        p2.selected = ["mlp1@p0"]
        # a Patcher in the main thread while both panels compute
        patcher = Patcher(model, tokens, "shift")
        res = patcher.patch([Site("attn", 0)], SinkScore(layers))
        p1.wait()
        p2.wait()
        assert p1.error == "" and p2.error == ""
        assert p1.result["clean"] == pytest.approx(clean_alone, abs=1e-6)
        assert p1.result["patched"] == pytest.approx(attn0_alone, abs=1e-6)
        assert p2.result["patched"] == pytest.approx(mlp1_alone, abs=1e-6)
        assert res.detail[0].tolist() == pytest.approx(attn0_alone, abs=1e-6)
        p1.close_workers()
        p2.close_workers()


def test_patchers_in_threads_get_their_own_numbers(model, tokens):
    layers = list(range(2, N_LAYERS))
    expected = {
        kind: _plain_sink(model, tokens, layers, _shift_patch(model, tokens, get_act_name(act, 0)))
        for kind, act in (("attn", "attn_out"), ("mlp", "mlp_out"))
    }
    got: dict[str, list[float]] = {}
    errors: list[BaseException] = []

    def work(kind: str) -> None:
        try:
            for _ in range(3):
                res = Patcher(model, tokens, "shift").patch([Site(kind, 0)], SinkScore(layers))
                got[kind] = res.detail[0].tolist()
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in expected for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for kind in expected:
        assert got[kind] == pytest.approx(expected[kind], abs=1e-6)


def test_the_interpreter_exits_cleanly_while_a_panel_computes():
    code = (
        "import torch\n"
        "from circuits.panel import explore\n"
        "from circuits.zoo import tiny_model\n"
        "m = tiny_model(seed=5, n_layers=4)\n"
        "tok = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))\n"
        "p1 = explore(m, tok); p1.selected = ['attn0@p0']; p2 = explore(m, tok)\n"
        "print('exiting')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "terminate called" not in out.stderr
    assert "ForwardDone" not in out.stderr
    assert "exiting" in out.stdout


# -- export: nothing lost -----------------------------------------------------------------------


@pytest.fixture()
def panel(model, tokens):
    p = explore(model, tokens).wait()
    p.selected = ["attn0@p0"]
    p.wait()
    yield p
    p.close_workers()


def test_export_never_replaces_a_folder_it_did_not_write(panel, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes")
    for overwrite in (False, True):
        with pytest.raises(UsageError, match="did not write.*notes.txt"):
            panel.export(mine, overwrite=overwrite)
    assert (mine / "notes.txt").read_text() == "my own notes"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    discovered = tmp_path / "discover"  # a discover folder: its record, report and manifest
    discovered.mkdir()
    for name in ("patching.json", "report.html", "manifest.json", "circuit.json"):
        (discovered / name).write_text("{}")
    with pytest.raises(UsageError, match="patching.json"):
        panel.export(discovered, overwrite=True)
    assert sorted(p.name for p in discovered.iterdir()) == sorted(
        ["patching.json", "report.html", "manifest.json", "circuit.json"]
    )


def test_export_replaces_its_own_export_only_when_asked(panel, tmp_path):
    out = tmp_path / "sel"
    panel.export(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "circuit.graphml",
        "circuit.json",
        "manifest.json",
    ]
    with pytest.raises(UsageError, match="overwrite=True"):
        panel.export(out)
    panel.export(out, overwrite=True)
    # the button never replaces: it writes the next free folder
    panel.export_dir = out
    panel.export_request += 1
    assert panel.exported == str(tmp_path / "sel-2") and panel.error == ""


def test_the_message_follows_the_last_action(panel):
    panel.selected = ["attn9@p0"]  # unknown: the worker used to die with a KeyError
    panel.wait()
    assert "unknown component 'attn9@p0'" in panel.error and not panel.busy
    panel.selected = ["mlp0@p0"]
    panel.wait()
    assert panel.error == "" and panel.result["selection"] == ["mlp0@p0"]
