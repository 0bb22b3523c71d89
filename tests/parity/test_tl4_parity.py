"""TransformerLens 4 parity: the engine, ``measure`` and ``discover`` on a bridge give the numbers
they give on TransformerLens 3.x's ``HookedTransformer``, for every block structure of
``tests/_variants.py`` and for SmolLM2 from its GGUF.

The 3.x side is computed by a separate interpreter with TransformerLens 3.x installed
(``P0_TL3_PYTHON``, default ``.venv/bin/python``: the README's environment) running
``tests.parity.reference``; this side rebuilds the same weights as bridges (``compare``). A
structure TransformerLens 4's native model cannot build must be refused by name. Where the
native bridge exposes no pre-softmax scores the default first pass is exact patching instead of
the P0-stream estimate: those keys are left out, and the same discovery with the attribution
first pass (the same method on both) is compared in full."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from circuits.backend import ON_BRIDGE
from circuits.core.errors import UsageError
from tests._variants import VARIANTS

pytestmark = pytest.mark.skipif(
    not ON_BRIDGE,
    reason="the TransformerLens 4 side of the parity: runs in the TransformerLens 4 environment "
    "(docs/tl4.md; .ci/run's second environment)",
)

ROOT = Path(__file__).resolve().parents[2]


def _tl3_python() -> str:
    python = os.environ.get("P0_TL3_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
    if not Path(python).exists():
        pytest.fail(
            f"no TransformerLens 3.x interpreter at {python}: install the README's test "
            "environment (.venv) or set P0_TL3_PYTHON to one"
        )
    return python


def _reference(out: Path, *args: str) -> Path:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [_tl3_python(), "-m", "tests.parity.reference", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def variant_references(tmp_path_factory) -> Path:
    return _reference(tmp_path_factory.mktemp("tl3-variants"))


@pytest.fixture(scope="session")
def smollm2_reference(tmp_path_factory) -> Path:
    return _reference(tmp_path_factory.mktemp("tl3-smollm2"), "--only", "smollm2") / "smollm2.pt"


@pytest.mark.parametrize("index,name", list(enumerate(VARIANTS)), ids=list(VARIANTS))
def test_every_structure_gives_the_3x_numbers_or_is_refused_by_name(
    variant_references, index, name
):
    from tests.parity.compare import compare_reference

    path = variant_references / f"{index:02d}.pt"
    ref = torch.load(path, weights_only=False)
    assert ref["name"] == name
    result = compare_reference(path)
    if result.refused:
        from circuits.backend.build import model_from_tl_weights

        with pytest.raises(UsageError) as refused:
            model_from_tl_weights(ref["fields"], ref["state_dict"])
        for reason in result.refused.split("; "):
            assert reason.split(" ")[0].split("=")[0] in str(refused.value)
        return
    assert result.n_numbers > 1000, "too few numbers compared"
    assert not result.failures, "\n".join(result.failures[:20])


def test_smollm2_from_its_gguf_gives_the_3x_numbers(smollm2_reference):
    from tests.parity.compare import compare_reference

    result = compare_reference(smollm2_reference)
    assert not result.skipped, "the P0-stream estimate should run on the GGUF bridge"
    assert result.n_numbers > 10000, "too few numbers compared"
    assert not result.failures, "\n".join(result.failures[:20])
