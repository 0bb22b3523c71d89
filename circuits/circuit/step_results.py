"""What each step of ``discover`` returns: a view of the ``DiscoveryRecord`` sections it owns.

``DiscoveryRecord`` (``circuits.circuit.record``) declares every ``patching.json`` section once;
each step's result type is derived from it here (``step_result``), with the record's types for
the sections the step sets, so a section is never declared twice. ``STEP_RESULTS`` lists them
in pipeline order: a section belongs to exactly one step (``tests/unit/test_discovery_record.py``).
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import create_model

from circuits.circuit.record import DiscoveryRecord, Section


class StepResult(Section):
    """What one step found: a view of the ``DiscoveryRecord`` sections it owns (``step_result``)."""

    def sections(self) -> dict[str, Any]:
        """The sections this result sets, by name (unset ones are left as they were)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


SET, MAY_BE_NONE, MAY_BE_UNSET = "set", "may be None", "may be unset"


def step_result(name: str, sections: dict[str, str]) -> type[Any]:  # built at run time
    """A step's result type, from the record: each named section with the record's type for
    it, ``SET`` (required, not None), ``MAY_BE_NONE`` (required, None allowed: the step ran and
    found nothing to write) or ``MAY_BE_UNSET`` (left out where it does not apply)."""
    fields: dict[str, Any] = {}
    for section, rule in sections.items():
        annotation = DiscoveryRecord.model_fields[section].annotation
        if rule == SET:  # the record's ``X | None`` without its None
            kept = [a for a in get_args(annotation) if a is not type(None)]
            annotation = kept[0] if len(kept) == 1 else annotation
        fields[section] = (annotation, None if rule == MAY_BE_UNSET else ...)
    return create_model(name, __base__=StepResult, **fields)


# Each step's sections, in pipeline order: a section belongs to exactly one step
# (tests/unit/test_discovery_record.py checks that every record section after the header does).
CleanRuns = step_result(
    "CleanRuns",
    {"clean": SET, "readout": SET, "clean_sink_all_layers": SET, "sink_baseline": SET},
)
FirstPass = step_result("FirstPass", {"first_pass": SET})
ComponentSweep = step_result("ComponentSweep", {"components": SET, "selected_components": SET})
HeadSweep = step_result("HeadSweep", {"heads": MAY_BE_NONE, "head_layers": SET})
ExpertSweep = step_result(  # unset on a dense model: nothing written
    "ExpertSweep", {"experts": MAY_BE_UNSET, "expert_layers": MAY_BE_UNSET}
)
FaithfulnessFound = step_result("FaithfulnessFound", {"faithfulness": SET, "backups": SET})
PathsFound = step_result(
    "PathsFound", {"paths_mlp": MAY_BE_NONE, "paths_k": MAY_BE_NONE, "q_paths_note": SET}
)
Agreement = step_result(
    "Agreement", {"first_pass_exact_pearson": MAY_BE_NONE, "additivity": MAY_BE_UNSET}
)
CurveFound = step_result("CurveFound", {"faithfulness_curve": MAY_BE_NONE})
PredictionFound = step_result("PredictionFound", {"prediction": MAY_BE_NONE})
Verdict = step_result("Verdict", {"circuit": SET, "paper_prediction_shape": SET, "verdict": SET})
STEP_RESULTS = (
    CleanRuns,
    FirstPass,
    ComponentSweep,
    HeadSweep,
    ExpertSweep,
    FaithfulnessFound,
    PathsFound,
    Agreement,
    CurveFound,
    PredictionFound,
    Verdict,
)
