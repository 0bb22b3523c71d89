"""The shared vocabulary: names, thresholds and file names every layer uses, defined once.

Pure data (no torch), so the CLI can offer choices and defaults before any model library is
imported. Definitions in the paper's terms are in ``docs/science.md``.
"""

from __future__ import annotations

from circuits.core.errors import UsageError

# --- metric conventions (docs/science.md, "Metrics") ------------------------------------------

DEFAULT_EPS = 0.3
"""Gu et al.'s threshold for calling a head a sink head (Barbero et al. use 0.8)."""
MASSIVE_ABS_THRESHOLD = 100.0
MASSIVE_RATIO_THRESHOLD = 1000.0
"""Sun et al.: |value| > 100 and >= 1000x the median |value| of that hidden state."""
NORM_RATIO_SINK_THRESHOLD = 10.0
"""The paper: the first layer where the P0 norm exceeds ~10x the median of the other positions."""

DEFAULT_FIRST_RECEIVER = 2
"""The first receiver layer of the sink readout unless one is named: the circuit forms in blocks
0 and 1 and is read in every later layer (docs/science.md, "Discovery")."""


def default_receiver_layers(n_layers: int) -> list[int]:
    """The receiver layers every sink readout and ``discover`` use unless told otherwise:
    ``DEFAULT_FIRST_RECEIVER`` .. the last layer (layer 1 .. last on a 2-layer model), the same
    whatever is patched, so a readout's clean value does not change from call to call."""
    if n_layers < 2:
        raise UsageError(
            f"a {n_layers}-layer model has no layer after layer 0 to read the sink in: "
            "pass receivers=[0] explicitly if you mean layer 0"
        )
    return list(range(min(DEFAULT_FIRST_RECEIVER, n_layers - 1), n_layers))


# --- counterfactuals for "being at position zero" ----------------------------------------------

COUNTERFACTUAL_SPECS = {
    "shift": "shift (each prompt's last token prepended) or shift:ID (token ID prepended)",
    "mean": "mean ablation",
    "zero": "zero ablation",
    "token:T": "position 0 replaced by token T: an id (token:1), <bos>, <eos> or a word the "
    "tokenizer maps to one token",
    "dims:D1,D2[@BASE]": "only residual coordinates D1, D2, ... take BASE's value (shift, mean "
    "or zero; default shift), every other coordinate stays clean: the massive dimensions alone",
}
"""The counterfactuals a command line can name (``--counterfactual``); prompt sets and cached
activations are passed from Python (``circuits.patching.counterfactuals``)."""


def parse_counterfactual_spec(spec: str) -> tuple[str, str | None]:
    """``(kind, argument)`` of a counterfactual named on a command line, e.g. ``"token:<bos>"``
    -> ``("token", "<bos>")``; checked without any model (the token is resolved once it loads)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"counterfactual must be a non-empty string, got {spec!r}")
    kind, sep, arg = spec.strip().partition(":")
    if kind in ("mean", "zero") and not sep:
        return kind, None
    if kind == "shift":
        if sep and not arg.strip().isdigit():
            raise UsageError(
                f"counterfactual {spec!r}: shift takes a token id (shift:1), not {arg!r}"
            )
        return kind, (arg.strip() if sep else None)
    if kind == "dims":
        dims, _, base = arg.partition("@")
        parts = [d.strip() for d in dims.split(",")]
        if not sep or not parts or not all(d.isdigit() for d in parts):
            raise UsageError(
                f"counterfactual {spec!r}: dims takes residual coordinates, e.g. dims:138,412 "
                "or dims:138,412@mean"
            )
        if base and base.strip() not in ("shift", "mean", "zero"):
            raise UsageError(f"counterfactual {spec!r}: the base after @ is shift, mean or zero")
        return kind, arg.strip()
    if kind == "token":
        if not arg.strip():
            raise UsageError(
                f"counterfactual {spec!r} names no token: write e.g. token:<bos> or token:42"
            )
        return kind, arg.strip()
    raise UsageError(
        f"unknown counterfactual {spec!r}; choose one of: "
        + "; ".join(f"{k} ({v})" for k, v in COUNTERFACTUAL_SPECS.items())
    )


def check_counterfactual(spec: str) -> str:
    """``spec`` if it names a counterfactual a command line can ask for, else a ``UsageError``."""
    parse_counterfactual_spec(spec)
    return spec


DISCOVER_READOUTS = {
    "sink": "the receivers' sink score (Gu et al.'s alpha_0; default)",
    "loss": "mean next-token cross-entropy (nats)",
    "kl": "KL(clean || patched) of the next-token distribution (nats)",
    "logit-diff:A,B": "logit of token A minus token B at the last position (ids or single-token "
    "strings)",
}
"""The questions ``discover --readout`` can ask of P0's components."""


def parse_readout_spec(spec: str) -> tuple[str, tuple[str, str] | None]:
    """``(kind, tokens)`` of a ``discover --readout`` spec (``tokens`` only for ``logit-diff``),
    or a one-line ``UsageError`` naming the choices."""
    kind, sep, rest = str(spec).partition(":")
    if kind in ("sink", "loss", "kl") and not sep:
        return kind, None
    if kind == "logit-diff":
        parts = [p.strip() for p in rest.split(",")]
        if len(parts) == 2 and all(parts):
            return kind, (parts[0], parts[1])
        raise UsageError(
            f"readout {spec!r}: logit-diff takes two tokens, e.g. 'logit-diff:Paris,London' or "
            "'logit-diff:1234,5678'"
        )
    raise UsageError(
        f"unknown readout {spec!r}; choose one of: "
        + "; ".join(f"{k} ({v})" for k, v in DISCOVER_READOUTS.items())
    )


DTYPES = ("float32", "bfloat16", "float16")
"""The precisions a model can be loaded in (``--dtype``); readouts, clean values, effects and
faithfulness reduce in float32 whatever the model's dtype (docs/science.md, "Precision")."""

TRACE_BATCH_SIZE = 32
"""Sequences of a run's fixed evaluation batch that ``trace`` (and the live monitor of ``train
--monitor-every``) measures by default."""

P0_POSITIONS = (0,)
"""The positions a P0 circuit's sites patch: position zero alone."""

# --- what can be patched, and where a path can end ---------------------------------------------

SITE_KINDS = (
    "embed",
    "pos_embed",
    "resid_pre",
    "attn",
    "head",
    "resid_mid",
    "expert",
    "mlp",
    "resid_post",
)
"""A component's output (or a residual stream) at some positions: ``circuits.patching.Site``.
``embed`` is the token embedding; ``pos_embed`` the learned positional embedding, on models that
have one (standard / shortformer positions; rotary models have none)."""
RECEIVER_KINDS = ("q", "k", "v", "mlp_in")
"""The input a path ends in (``circuits.patching.Receiver``): the query, key or value input of a
later layer's heads, or an MLP's input. The same names are the graph's receiver node kinds and
its edges' ``path_type``."""

# --- result files ------------------------------------------------------------------------------

MEASURE_FILE = "sink_metrics.json"
PATCHING_FILE = "patching.json"
CIRCUIT_JSON = "circuit.json"
CIRCUIT_GRAPHML = "circuit.graphml"
CIRCUIT_DOT = "circuit.dot"
CIRCUIT_ATTRIBUTION_GRAPH = "circuit.attribution_graph.json"
"""The circuit in circuit-tracer / Neuronpedia's attribution-graph format."""
REPORT_FILE = "report.html"
VIEWS_FILE = "views.json"
RUN_FILE = "run.json"
TRACE_FILE = "trace.json"

RECORD_FORMATS = {
    "measure": "p0-circuits/measure/1",
    "discover": "p0-circuits/discover/1",
    "views": "p0-circuits views/1",
    "trace": "p0-circuits-trace/1",
    "run": "p0-circuits-run/1",
}
"""The ``format`` each record carries; a reader refuses any other (written by another version)."""
