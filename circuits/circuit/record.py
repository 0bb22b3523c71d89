"""A discovery's results, typed: what each step found, and ``patching.json`` as their sum.

``DiscoveryRecord`` declares every ``patching.json`` section once, typed: the header (model,
counterfactual, readout, prompts) and each step's sections. Every step of ``discover`` returns a
``StepResult`` derived from it (``circuits.circuit.step_results``): the sections the step owns, with the record's
types (``CleanRuns`` -> ``clean``, ``readout``, ``clean_sink_all_layers``, ``sink_baseline``;
``ComponentSweep`` -> ``components``, ``selected_components``; ...). It is what ``Discovery.save`` writes, what ``circuits.viz`` draws and what
the panel opens, whether the discovery was just run or read back from a folder: the JSON is
``DiscoveryRecord.to_json()`` (format ``p0-circuits/discover/1``, unchanged), and
``DiscoveryRecord.of(patching_json)`` reads it back, checked.

The models are pydantic's (validation with one-line errors, JSON round trips): a section read
back from a file has the same types as one just computed. Sections a step did not write stay
unset and are not written; a record made by hand (or by an older version) may lack sections, and
each figure names the one it needs (``MissingDataError``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from circuits.core.errors import UsageError

if TYPE_CHECKING:
    from circuits.patching.results import PatchingResult


class Section(BaseModel):
    """A part of a record: unknown keys are refused (a misspelt key is an error, not a loss)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class EffectRow(Section):
    """One patch: its sites, the readout with it applied (``value``), the clean readout, their
    difference (``effect``, negative: the patch lowered it) and ``effect / clean``."""

    name: str
    sites: list[dict[str, Any]]
    value: float | None = None
    clean: float | None = None
    effect: float | None
    relative: float | None = None
    per_receiver: list[float | None] | None = None

    @property
    def site(self) -> dict[str, Any]:
        """The patched site (a path's sender)."""
        return self.sites[0]

    def relative_to(self, clean: float) -> float:
        """``relative``, or ``effect / clean`` where the row has none."""
        if self.relative is not None:
            return float(self.relative)
        return float(self.effect or 0.0) / clean if clean else 0.0


class EffectTable(Section):
    """Every patch of one sweep (``circuits.patching.results.PatchingResult``'s JSON form):
    which question (counterfactual, readout) and one ``EffectRow`` per patch. Path sweeps add
    ``per_path_clean`` / ``per_path_metric``; the engine names the patches it did not run
    (``not_computed_after_metric``) and nested sweeps their cuts (``nested_cuts``)."""

    kind: str | None = None
    counterfactual: str | None = None
    counterfactual_definition: str | None = None
    counterfactual_params: dict[str, Any] | None = None
    metric: dict[str, Any] | None = None
    clean: float | None = None
    effects: list[EffectRow]
    per_path_clean: list[float | None] | None = None
    per_path_metric: list[dict[str, Any]] | None = None
    not_computed_after_metric: list[str] | None = None
    nested_cuts: list[int] | None = None

    @classmethod
    def of_result(cls, result: PatchingResult, span: float | None = None) -> EffectTable:
        """``result``'s table; with ``span``, each row's ``relative`` is effect / span (a
        readout whose effects are shares of P0's effect, ``circuits.circuit.readout_choice``)
        instead of effect / the readout's clean value."""
        data = result.to_dict()
        if span:
            for row in data["effects"]:
                effect = row.get("effect")
                row["relative"] = None if effect is None else effect / span
        return cls.model_validate(data)

    def by_name(self) -> dict[str, EffectRow]:
        return {row.name: row for row in self.effects}


class CleanSink(Section):
    """The clean sink score over the receiver layers, and per receiver layer."""

    sink: float
    per_receiver_layer: dict[int, float] = {}


class ReadoutSpan(Section):
    """What the circuit is for and the span its effects are measured in
    (``circuits.circuit.readout_choice``): relative effects are (value - clean) / (clean -
    reference), kept / ablated / floor (value - reference) / (clean - reference)."""

    spec: str
    name: str
    label: str
    axis: str
    clean: float
    reference: float
    reference_is: Literal["zero", "floor"]
    definition: str


class SinkBaseline(Section):
    """The sink score uniform causal attention would give, and whether the clean sink is a sink."""

    uniform_attention_sink: float
    clean_over_uniform: float
    present: bool
    definition: str


class HeadLayerChoice(Section):
    """Whether an attention layer enters the circuit as itself or as its selected heads."""

    heads: list[int]
    joint_relative: float
    layer_relative: float
    cover: float
    node: Literal["heads", "layer"]


class ExpertLayerChoice(Section):
    """Whether an MoE block enters the circuit as its MLP or as its selected experts."""

    experts: list[int]
    joint_relative: float
    layer_relative: float
    cover: float
    node: Literal["experts", "layer"]


class KeptAtLayer(Section):
    layer: int
    kept: float


class CircuitFaithfulness(Section):
    """kept / ablated / floor of the circuit (its backups included), per receiver layer, and the
    core circuit's kept sink as the other components are ablated layer by layer."""

    core_kept_through_layer: list[KeptAtLayer] = []
    kept: float | None = None
    ablated: float | None = None
    floor: float | None = None
    kept_sites: list[str] | None = None
    ablated_when_kept: list[str] | None = None
    values: list[float] | None = None
    per_receiver: list[list[float]] | None = None
    definition: str | None = None


class CoreFaithfulness(Section):
    circuit: list[str]
    kept: float
    ablated: float


class BackupStep(Section):
    layer: int
    kept_before: float
    candidates: dict[str, float]
    chosen: str | None


class BackupSearch(Section):
    """The sufficiency search: the core circuit's faithfulness, each step, the backups found."""

    core_faithfulness: CoreFaithfulness
    nodes: list[str] | None = None
    steps: list[BackupStep] | None = None
    definition: str | None = None


class Additivity(Section):
    sum_of_single_effects: float
    joint_effect: float
    ratio: float | None
    definition: str


class Areas(Section):
    """CPR and CMD of a faithfulness curve (MIB)."""

    cpr: float
    cmd: float


class RankingCurve(Areas):
    order: list[str]
    values: list[float]
    f: list[float]


class FaithfulnessCurve(Section):
    """f(k) of each ranking at the sizes measured, and their areas (``circuits.circuit.curve``)."""

    n_components: int
    sizes: list[int]
    fractions: list[float]
    circuit_size: int
    clean: float
    empty: float
    rankings: dict[str, RankingCurve]
    summary: dict[str, Areas]
    patched_runs: int
    definition: str


class SetEffect(Section):
    """Next-token loss increase and KL to the clean distribution with a set of sites patched."""

    sites: list[str]
    loss_increase: float
    kl: float


class RandomSetsEffect(Section):
    n_sets: int
    size: int
    seed: int
    sets: list[list[str]]
    loss_increase: list[float]
    kl: list[float]
    loss_increase_mean: float
    kl_mean: float
    kl_max: float


class PredictionEffect(Section):
    """The circuit's effect on the model's predictions against random sets and all of P0."""

    question: str
    readouts: dict[str, dict[str, Any]]
    counterfactual: str
    clean_loss: float
    circuit: SetEffect
    random: RandomSetsEffect
    all_p0: SetEffect
    definition: str


class HasSections(Protocol):
    """A step's result (``circuits.circuit.step_results.StepResult``): the sections it sets."""

    def sections(self) -> dict[str, Any]: ...


class DiscoveryRecord(BaseModel):
    """Everything a discovery measured (``patching.json``), typed. The header says which
    question was asked of which model; each later field is one step's section. A key that is
    none of these is refused by name, at the top level as in every section (a misspelt
    ``faithfulnes`` is an error, never a missing faithfulness)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format: str | None = None
    model: str | None = None
    counterfactual: str | None = None
    counterfactual_definition: str | None = None
    metric: dict[str, Any] | None = None
    receiver_layers: list[int] | None = None
    positions_patched: list[int] | None = None
    n_prompts: int | None = None
    n_tokens: int | None = None
    tokens: list[list[int]] | None = None
    str_tokens: list[list[str]] | None = None
    bos: bool | None = None
    config: dict[str, Any] | None = None
    block_structure: Literal["parallel", "sequential"] | None = None
    model_shape: dict[str, int] | None = None
    # step sections, in pipeline order
    clean: CleanSink | None = None
    readout: ReadoutSpan | None = None
    clean_sink_all_layers: list[float] | None = None
    sink_baseline: SinkBaseline | None = None
    first_pass: EffectTable | None = None
    components: EffectTable | None = None
    selected_components: list[str] | None = None
    heads: EffectTable | None = None
    head_layers: dict[int, HeadLayerChoice] | None = None
    experts: EffectTable | None = None
    expert_layers: dict[int, ExpertLayerChoice] | None = None
    faithfulness: CircuitFaithfulness | None = None
    backups: BackupSearch | None = None
    paths_mlp: EffectTable | None = None
    paths_k: EffectTable | None = None
    q_paths_note: str | None = None
    first_pass_exact_pearson: float | None = None
    additivity: Additivity | None = None
    faithfulness_curve: FaithfulnessCurve | None = None
    prediction: PredictionEffect | None = None
    circuit: list[str] | None = None
    paper_prediction_shape: bool | None = None
    verdict: str | None = None
    timings_s: dict[str, float] | None = None
    # what the command line adds: where the model came from, exactly what it is, how it was run
    provenance: dict[str, Any] | None = None
    model_source: str | None = None
    model_description: str | None = None
    dtype: str | None = None
    natural_bos: bool | None = None

    @classmethod
    def of(
        cls, record: DiscoveryRecord | dict[str, Any], source: str = "record"
    ) -> DiscoveryRecord:
        """``record`` typed: a ``DiscoveryRecord`` as it is, a ``patching.json`` dict checked
        (``UsageError`` naming the first wrong key and what it should be)."""
        if isinstance(record, DiscoveryRecord):
            return record
        try:
            return cls.model_validate(record)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UsageError(
                f"{source} is not a discovery record: {where}: {first['msg']} "
                f"({err.error_count()} problem(s)); re-run discover or fix that key"
            ) from None

    def update(self, result: HasSections) -> None:
        """Take a step's sections into the record."""
        for name, value in result.sections().items():
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        """The ``patching.json`` form (without ``format``, which saving adds): every section
        set, JSON types only."""
        data = self.model_dump(mode="json", exclude_unset=True, exclude={"format"})
        return data

    def clean_sink(self) -> float:
        """The clean sink the relative effects are divided by (0.0 when unknown)."""
        return float(self.clean.sink) if self.clean is not None else 0.0

    def effect_span(self) -> float:
        """What the relative effects are divided by: clean - reference of the readout asked
        (the clean sink in records from before ``--readout``; 0.0 when unknown)."""
        if self.readout is not None:
            return float(self.readout.clean - self.readout.reference)
        return self.clean_sink()

    def readout_label(self) -> str:
        """The readout's name in a figure's words ("sink" in records from before ``--readout``)."""
        return "sink" if self.readout is None or self.readout.spec == "sink" else self.readout.label

    def exact_effects(self) -> dict[str, EffectRow]:
        """Every exactly patched component, head and expert, by name."""
        rows: dict[str, EffectRow] = {}
        for table in (self.components, self.heads, self.experts):
            if table is not None:
                rows.update(table.by_name())
        return rows
