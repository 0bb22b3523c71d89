"""``--n-devices``: a model's layers split over several GPUs.

Where two GPUs exist, a discovery split over both equals the same discovery on one card (every
effect, the circuit); elsewhere that test is skipped with the reason. The card each block gets
is checked against TransformerLens' own pipeline order (``get_device_for_block_index``, the
index its forward moves the residual to), and a split the machine cannot place is refused in one
line from the CLI and the Python API, with nothing written.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from circuits.backend.devices import check_cards, layer_card
from circuits.core.errors import UsageError

TWO_GPUS = torch.cuda.is_available() and torch.cuda.device_count() >= 2


@pytest.mark.parametrize("n_layers", [2, 3, 12, 30, 62])
@pytest.mark.parametrize("n_devices", [1, 2, 3, 8])
def test_each_block_goes_where_transformer_lens_moves_its_residual(n_layers, n_devices):
    multi_gpu = pytest.importorskip("transformer_lens.utilities.multi_gpu")
    cfg = SimpleNamespace(device="cuda:1", n_devices=n_devices, n_layers=n_layers)
    first = torch.device("cuda:1")
    for layer in range(n_layers):
        want = multi_gpu.get_device_for_block_index(layer, cfg)
        assert layer_card(first, layer, n_layers, n_devices) == want
    cards = [layer_card(first, i, n_layers, n_devices).index for i in range(n_layers)]
    assert cards == sorted(cards) and cards[0] == 1 and max(cards) < 1 + n_devices
    assert len(set(cards)) == min(n_devices, n_layers)  # no card left empty while blocks remain


def test_a_split_on_the_cpu_is_refused_with_the_fix():
    with pytest.raises(UsageError, match="--n-devices 2 splits a model across GPUs.*--device cuda"):
        check_cards(torch.device("cpu"), 2)
    check_cards(torch.device("cpu"), 1)  # one "card": nothing to split


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU exists")
def test_more_cards_than_torch_sees_are_refused():
    import circuits

    with pytest.raises(UsageError, match="--device cuda"):
        circuits.load_model("tiny", progress=False, device="cpu", n_devices=2)
    with pytest.raises(UsageError, match="n_devices"):
        circuits.load_model("tiny", progress=False, device="cpu", n_devices=0)


@pytest.mark.parametrize("value,message", [("2", "--device cuda"), ("0", "--n-devices must be")])
def test_cli_refuses_a_bad_split_in_one_line_and_writes_nothing(tmp_path, value, message):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "circuits", "discover", "--model", "tiny", "--device", "cpu"]
        + ["--n-devices", value, "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 or "usage:" in proc.stderr
    assert not out.exists()


@pytest.mark.skipif(not TWO_GPUS, reason="needs two GPUs (torch sees fewer here)")
def test_a_discovery_split_over_two_cards_equals_one_card():
    import circuits

    config = circuits.DiscoverConfig(receivers=[1], curve=False, progress=False)
    tokens = torch.randint(1, 250, (4, 16), generator=torch.Generator().manual_seed(0))
    found = {}
    for n in (1, 2):
        zm = circuits.load_model("tiny", progress=False, device="cuda:0", n_devices=n)
        devices = {p.device for p in zm.model.blocks.parameters()}
        assert len(devices) == n
        found[n] = circuits.discover(zm.model, tokens, config, model_name="tiny")
    one, two = found[1].result, found[2].result
    assert one.circuit == two.circuit
    assert one.components is not None and two.components is not None
    for a, b in zip(one.components.effects, two.components.effects, strict=True):
        assert a.name == b.name
        assert a.effect == pytest.approx(b.effect, abs=1e-5)
