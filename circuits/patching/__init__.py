"""Activation, path and attribution patching at position zero, on a batched, truncated engine."""

from circuits.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Patcher": "patcher",
        "Site": "sites",
        "Receiver": "sites",
        "component_sites": "sites",
        "head_sites": "sites",
        "patch_name": "sites",
        "Readout": "readouts",
        "SinkScore": "readouts",
        "P0Norm": "readouts",
        "CacheReadout": "readouts",
        "AttentionToP0": "readouts",
        "P0Routing": "routing_readouts",
        "SinkKeySplit": "key_value_readouts",
        "P0ValueNorm": "key_value_readouts",
        "NextTokenLoss": "output_readouts",
        "LogitDifference": "output_readouts",
        "KLToClean": "output_readouts",
        "LossAndKL": "output_readouts",
        "Counterfactual": "counterfactuals",
        "Shift": "counterfactuals",
        "MeanAblation": "counterfactuals",
        "ZeroAblation": "counterfactuals",
        "FirstToken": "counterfactuals",
        "MassiveDims": "counterfactuals",
        "PromptSet": "counterfactuals",
        "CachedActivations": "counterfactuals",
        "resolve_counterfactual": "counterfactuals",
        "PatchingResult": "results",
        "attribution_patch": "attribution",
        "pearson": "attribution",
    },
)
