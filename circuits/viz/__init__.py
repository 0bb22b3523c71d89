"""Figures (each returns a ``matplotlib.figure.Figure`` and writes nothing), circuitsvis views,
and the self-contained HTML report; one colour convention (``circuits.viz.style``)."""

from circuits.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "layer_profile_figure": "sink_figures",
        "head_heatmap_figure": "sink_figures",
        "recognition_figure": "sink_figures",
        "bos_comparison_figure": "sink_figures",
        "component_heatmap_figure": "patching_figures",
        "head_patching_heatmap_figure": "patching_figures",
        "path_figure": "patching_figures",
        "faithfulness_figure": "patching_figures",
        "clean_sink_figure": "patching_figures",
        "first_pass_figure": "patching_figures",
        "faithfulness_curve_figure": "curve_figure",
        "prediction_figure": "prediction_figure",
        "circuit_graph_figure": "graph_figure",
        "circuit_layout": "graph_figure",
        "trace_figure": "trace_figure",
        "save_figure": "files",
        "View": "views",
        "sink_heads_view": "views",
        "p0_norm_view": "views",
        "recognition_view": "views",
        "view_data_for_text": "view_data",
        "view_data_for_ids": "view_data",
        "compute_view_data": "view_data",
        "build_report": "report",
    },
)
