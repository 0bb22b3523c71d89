"""Attention-sink metrics: pure functions on patterns and residual streams, and a one-pass
measurement of a model (``measure_sinks``)."""

from circuits.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "attn_to_p0": "attention",
        "key_attention": "attention",
        "attention_destinations": "attention",
        "sink_rate": "attention",
        "sink_score": "attention",
        "sum_p_squared": "attention",
        "massive_activations": "residual",
        "norm_growth": "residual",
        "NormGrowth": "residual",
        "p0_direction_cosine": "residual",
        "position_norms": "residual",
        "residual_norms": "residual",
        "SinkReport": "measure",
        "measure_sinks": "measure",
    },
)
