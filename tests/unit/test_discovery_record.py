"""Typed discovery: each step returns its sections, the record is their sum, and what is saved
reads back as the same types (``circuits.circuit.record``)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from circuits.circuit import DiscoverConfig, discover
from circuits.circuit.discover import STEPS
from circuits.circuit.record import DiscoveryRecord
from circuits.circuit.step_results import StepResult
from circuits.core.errors import UsageError
from circuits.zoo import tiny_model

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(ROOT.glob("results/*/discover*/patching.json"))
SMOLLM2 = ROOT / "results/smollm2-135m/discover/patching.json"


@pytest.fixture(scope="module")
def model_and_tokens():
    model = tiny_model(seed=4, n_layers=3)
    tokens = torch.randint(1, 200, (3, 12), generator=torch.Generator().manual_seed(5))
    return model, tokens


def test_each_step_returns_its_typed_sections_and_the_record_is_their_sum(model_and_tokens):
    model, tokens = model_and_tokens
    returned: dict[str, StepResult] = {}

    def recording(step):
        def run(state):
            result = step(state)
            returned[step.__name__] = result
            return result

        run.__name__ = step.__name__
        return run

    found = discover(
        model,
        tokens,
        DiscoverConfig(first_receiver=1, progress=False),
        steps=[recording(s) for s in STEPS],
    )
    assert list(returned) == [s.__name__ for s in STEPS]
    record_fields = set(DiscoveryRecord.model_fields)
    written: set[str] = set()
    for name, result in returned.items():
        assert isinstance(result, StepResult), name
        assert set(type(result).model_fields) <= record_fields, name
        written |= result.model_fields_set
    # every section in patching.json came from a step (or the header / timings)
    header = {
        "model",
        "counterfactual",
        "counterfactual_definition",
        "metric",
        "receiver_layers",
        "positions_patched",
        "n_prompts",
        "n_tokens",
        "tokens",
        "str_tokens",
        "bos",
        "config",
        "block_structure",
        "model_shape",
        "dtype",
        "timings_s",
    }
    assert set(found.record) == written | header
    # the typed sections hold what the JSON says (spot checks against the dict form)
    rec = found.record
    assert found.result.clean is not None
    assert found.result.clean.sink == rec["clean"]["sink"]
    assert all(isinstance(k, int) for k in found.result.clean.per_receiver_layer)
    assert found.result.faithfulness is not None
    assert found.result.faithfulness.kept == rec["faithfulness"]["kept"]
    assert found.circuit == rec["circuit"]


def test_a_saved_discovery_reads_back_as_the_same_typed_record(model_and_tokens, tmp_path):
    model, tokens = model_and_tokens
    found = discover(model, tokens, DiscoverConfig(first_receiver=1, progress=False))
    out = found.save(tmp_path / "saved")
    data = json.loads((out / "patching.json").read_text())
    again = DiscoveryRecord.of(data)
    assert again.model_dump(exclude={"format"}) == found.result.model_dump(exclude={"format"})
    assert again.to_json() == json.loads(json.dumps(found.result.to_json()))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_committed_discoveries_read_back_number_for_number(path):
    data = json.loads(path.read_text())
    record = DiscoveryRecord.of(data)
    assert not record.model_extra, "every key of patching.json has a type"
    assert json.loads(json.dumps(record.to_json())) == {
        k: v for k, v in data.items() if k != "format"
    }
    assert record.faithfulness is not None and isinstance(record.faithfulness.kept, float)
    assert record.head_layers is None or all(isinstance(k, int) for k in record.head_layers)


def test_committed_results_exist():
    assert len(COMMITTED) >= 3


def test_a_wrong_or_misspelt_key_is_refused_by_name():
    data = json.loads(SMOLLM2.read_text())
    wrong = copy.deepcopy(data)
    wrong["faithfulness"]["kept"] = "high"
    with pytest.raises(UsageError, match=r"faithfulness\.kept: .*number") as err:
        DiscoveryRecord.of(wrong, "patching.json")
    assert "\n" not in str(err.value)
    misspelt = copy.deepcopy(data)
    misspelt["prediction"]["klmean"] = 1.0
    with pytest.raises(UsageError, match=r"prediction\.klmean: Extra inputs"):
        DiscoveryRecord.of(misspelt)


def test_a_misspelt_top_level_key_is_refused_as_a_nested_one_is():
    data = json.loads(SMOLLM2.read_text())
    data["faithfulnes"] = data.pop("faithfulness")
    with pytest.raises(UsageError, match=r"faithfulnes: Extra inputs") as err:
        DiscoveryRecord.of(data, "patching.json")
    assert "\n" not in str(err.value)
    table = json.loads(SMOLLM2.read_text())
    table["components"]["efects"] = table["components"].pop("effects")
    with pytest.raises(UsageError, match=r"components\.(efects|effects)"):
        DiscoveryRecord.of(table)


def test_figures_draw_the_typed_record_as_they_draw_its_json():
    from circuits.viz.patching_figures import component_heatmap_figure, faithfulness_figure

    data = json.loads(SMOLLM2.read_text())
    typed = DiscoveryRecord.of(data)
    for make in (component_heatmap_figure, faithfulness_figure):
        a, b = make(data), make(typed)
        for ax_a, ax_b in zip(a.axes, b.axes, strict=True):
            for im_a, im_b in zip(ax_a.images, ax_b.images, strict=True):
                np.testing.assert_array_equal(im_a.get_array(), im_b.get_array())
            for la, lb in zip(ax_a.lines, ax_b.lines, strict=True):
                np.testing.assert_array_equal(la.get_ydata(), lb.get_ydata())


DISCOVERY_VIEWS = (
    "viz/discover_page.py",
    "viz/patching_figures.py",
    "viz/curve_figure.py",
    "viz/prediction_figure.py",
    "viz/graph_figure.py",
    "circuit/save.py",
    "circuit/attribution_graph.py",
    "circuit/steps.py",
    "circuit/discover.py",
    "circuit/curve.py",
    "circuit/prediction.py",
    "panel/sources.py",
    "emergence/circuit_over_training.py",
)


@pytest.mark.parametrize("module", DISCOVERY_VIEWS)
def test_discovery_records_are_read_by_attribute_not_by_string_key(module):
    """The discovery's readers use the typed record: no ``record["..."]`` / ``record.get("...")``."""
    text = (ROOT / "circuits" / module).read_text()
    hits = re.findall(r"record(?:\.get\(|\[)\s*[\"']\w+", text)
    assert not hits, f"{module}: {hits}"


def test_each_step_result_is_the_records_sections_it_owns_with_the_records_types():
    """A step's result type follows from the record: the record's sections in pipeline order
    are the steps' sections, each owned by one step, with the record's type (without None where
    the step must set it)."""
    from pydantic import ValidationError

    from circuits.circuit.step_results import STEP_RESULTS, CleanRuns, HeadSweep

    fields = list(DiscoveryRecord.model_fields)
    sections = fields[fields.index("clean") : fields.index("verdict") + 1]
    owned = [f for step in STEP_RESULTS for f in step.model_fields]
    assert owned == sections
    for step in STEP_RESULTS:
        for name, info in step.model_fields.items():
            record_type = DiscoveryRecord.model_fields[name].annotation
            assert info.annotation == record_type or info.annotation | None == record_type, name
    with pytest.raises(ValidationError, match="clean"):  # a step must set what it owns
        CleanRuns(clean=None, clean_sink_all_layers=[0.5], sink_baseline=None)
    assert HeadSweep(heads=None, head_layers={}).sections() == {"heads": None, "head_layers": {}}
