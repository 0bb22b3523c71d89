"""circuits.viz figures, the report pages and ``p0-circuits render``."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest
from _render_fixtures import discover_dir, measure_dir

from circuits import viz as R
from circuits.cli import main as cli_main
from circuits.core.errors import UsageError
from circuits.core.manifest import write_manifest
from circuits.core.records import result_kind
from circuits.viz.report import build_report


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    return {
        "measure": measure_dir(root),
        "discover": discover_dir(root),
        "compare_root": root / "compare",
    }


def _check_figure_files(paths: list[Path]) -> None:
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    for p in paths:
        assert p.is_file()
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert p.stat().st_size > 10_000
        else:
            root = ET.parse(p).getroot()
            assert root.tag.endswith("svg")
            assert p.stat().st_size > 10_000


def _metrics(path: Path) -> dict:
    return json.loads((path / "sink_metrics.json").read_text())


def test_measure_figures(dirs, tmp_path):
    m = _metrics(dirs["measure"])
    for name, fig in [
        ("heads", R.head_heatmap_figure(m)),
        ("recognition", R.recognition_figure(m)),
        ("profile", R.layer_profile_figure(m)),
        ("compare", R.bos_comparison_figure([m, m], ["a", "b"])),
    ]:
        _check_figure_files(R.save_figure(fig, tmp_path / name))
    fig = R.bos_comparison_figure([m, m])
    assert len(fig.axes) == 4  # 2 rows x 2 runs side by side
    with pytest.raises(UsageError):
        R.bos_comparison_figure([])


def test_discover_figures(dirs, tmp_path):
    record = json.loads((dirs["discover"] / "patching.json").read_text())
    from circuits.circuit.graph import CircuitGraph

    graph = CircuitGraph.load(dirs["discover"] / "circuit.json")
    _check_figure_files(R.save_figure(R.component_heatmap_figure(record), tmp_path / "comp"))
    _check_figure_files(R.save_figure(R.head_patching_heatmap_figure(record), tmp_path / "heads"))
    _check_figure_files(R.save_figure(R.circuit_graph_figure(graph), tmp_path / "graph"))
    # layer by layer: the embedding/P0 side at the bottom, later layers higher up
    pos = R.circuit_layout(graph.g)
    assert pos["attn0.h0@p0"][1] < pos["mlp0@p0"][1] < pos["attn2.k"][1] < pos["attn3.k"][1]
    # edge width grows with |relative effect|
    fig = R.circuit_graph_figure(graph)
    from matplotlib.patches import FancyArrowPatch

    widths = sorted(
        p.get_linewidth() for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)
    )
    assert len(widths) == 4 and widths[0] < widths[-1]
    empty = R.circuit_graph_figure(nx.DiGraph())
    assert "empty circuit" in " ".join(t.get_text() for t in empty.axes[0].texts)


def _head_record(values: dict[tuple[int, int], float]) -> dict:
    """A discovery record with exact head patching of ``values`` ((layer, head) -> sink
    change / clean sink) and a clean sink of 0.5."""
    rows = [
        {
            "name": f"attn{la}.h{h}@p0",
            "effect": 0.5 * v,
            "relative": v,
            "sites": [{"kind": "head", "layer": la, "head": h, "name": f"attn{la}.h{h}@p0"}],
        }
        for (la, h), v in values.items()
    ]
    return {"clean": {"sink": 0.5}, "heads": {"effects": rows}}


def test_head_heatmap_shows_every_number_on_a_scale_that_reaches_them():
    """Layer 0's heads reach -13% while later heads are near 0: the old scale was clipped at
    +-0.4% (the 95% quantile) and every cell read "+-0.00". The scale must reach the large
    cells (only a lone outlier is clipped), each cell must show its value in percent, and
    text on dark cells must be white."""
    values = {(0, h): v for h, v in enumerate([-0.13, -0.034, -0.011, -0.0073, -0.0024])}
    values.update({(la, h): 0.0004 * (-1) ** (la + h) for la in range(1, 30) for h in range(5)})
    fig = R.head_patching_heatmap_figure(_head_record(values))
    ax = fig.axes[0]
    low, high = ax.images[0].get_clim()
    assert high == -low and high >= 0.034  # the lone -13% may be clipped, layer 0's rest not
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(texts) == len(values)
    for (layer, head), v in values.items():
        t = texts[(layer, head)]
        assert float(t.get_text()) == pytest.approx(100 * v, rel=0.05, abs=0.006), t.get_text()
        dark = abs(v) >= 0.55 * high
        assert (t.get_color() == "white") == dark
    assert texts[(0, 0)].get_text() == "-13" and texts[(0, 1)].get_text() == "-3.4"
    assert fig.axes[1].get_ylabel() == "sink change, % of the clean sink"


def test_layer_axes_have_whole_number_ticks_on_a_two_layer_model():
    record = {
        "clean_sink_all_layers": [0.3, 0.6],
        "receiver_layers": [1],
    }
    ax = R.clean_sink_figure(record).axes[0]
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def _common_html_checks(page: str) -> None:
    assert page.startswith("<!doctype html>")
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I), "a script is fetched"
    assert not re.search(r"<(img|link|iframe)[^>]*(src|href)\s*=\s*[\"']https?:", page, re.I)
    assert "unpkg.com" not in page
    for b64 in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', page)[:2]:
        import base64

        assert ET.fromstring(base64.b64decode(b64)).tag.endswith("svg")


def test_measure_report(dirs):
    out = dirs["measure"]
    path = build_report(out)
    page = path.read_text()
    _common_html_checks(page)
    m = _metrics(out)
    assert len(re.findall(r'src="data:image/svg\+xml;base64,', page)) == 3
    assert page.count("var CircuitsVis=") == 1  # the bundle, inlined once
    assert (
        page.count("CircuitsVis.render(") == 3
    )  # measure wrote views.json: heads, P0 norm, recognition
    assert (out / "views.json").exists()
    assert f"{m['layers'][1]['attn_to_p0']:.3f}" in page
    assert f"{m['layers'][-1]['p0_norm']:,.1f}" in page
    assert "p0-circuits measure --model tiny --no-bos --max-tokens 24 --out" in page
    for stem in ("sink_heads", "recognition"):
        _check_figure_files([out / f"{stem}.png", out / f"{stem}.svg"])
    assert not list(out.glob(".*.tmp"))


def test_render_cli_with_views(dirs, capsys):
    out = dirs["measure"]
    assert cli_main(["render", str(out), "--views", "--top-k", "3", "--view-tokens", "12"]) == 0
    views = json.loads((out / "views.json").read_text())
    assert len(views["heads"]) == 3 and views["n_tokens"] == 12
    assert views["tokens"] == _metrics(out)["tokens"][:12]
    page = (out / "report.html").read_text()
    assert page.count("CircuitsVis.render(") == 3
    assert "CircuitsVis.AttentionHeads" in page and "CircuitsVis.ColoredTokensMulti" in page
    assert "wrote" in capsys.readouterr().out
    # without --views the saved views.json is reused: the model is not needed
    assert cli_main(["render", str(out), "--quiet", "--no-figures"]) == 0
    assert (out / "report.html").read_text().count("CircuitsVis.render(") == 3


def test_discover_report(dirs):
    out = dirs["discover"]
    assert result_kind(out) == "discover"
    page = build_report(out).read_text()
    _common_html_checks(page)
    assert "synthetic &lt;test&gt; &amp; &#x27;quotes&#x27;" in page  # escaped verdict
    assert "0.910" in page and "0.180" in page  # faithfulness kept / ablated
    assert "attn0.h0@p0" in page and "mlp0@p0" in page and "attn2.k" in page
    assert len(re.findall(r'src="data:image/svg\+xml;base64,', page)) >= 3
    for stem in ("circuit_graph", "patching_components", "patching_heads"):
        _check_figure_files([out / f"{stem}.png", out / f"{stem}.svg"])


def test_graphml_keeps_attributes(dirs):
    raw = nx.read_graphml(dirs["discover"] / "circuit.graphml")
    node = raw.nodes["mlp0@p0"]
    assert node["kind"] == "mlp" and node["layer"] == 0 and node["effect"] == pytest.approx(-0.4)
    edge = raw.edges["mlp0@p0", "attn2.k"]
    assert edge["path_type"] == "k" and edge["relative"] == pytest.approx(-0.78)
    from circuits.circuit.graph import CircuitGraph

    assert CircuitGraph.load(dirs["discover"] / "circuit.graphml").same_as(
        CircuitGraph.load(dirs["discover"] / "circuit.json")
    )


def test_compare_report(dirs):
    root = dirs["compare_root"]
    measure_dir(root, "bos", bos=True)
    measure_dir(root, "no-bos", bos=False)
    assert result_kind(root) == "compare"
    assert cli_main(["render", str(root), "--quiet"]) == 0
    page = (root / "report.html").read_text()
    _common_html_checks(page)
    assert "bos" in page and "no-bos" in page
    _check_figure_files([root / "sink_comparison.png", root / "sink_comparison.svg"])
    assert cli_main(["render", str(root), "--views", "--quiet"]) == 2  # ambiguous: several runs


def test_render_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["render", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no recognised result" in err
    assert cli_main(["render", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "sink_metrics.json").write_text("{truncated")
    assert cli_main(["render", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no manifest.json" in err
    write_manifest(bad)
    assert cli_main(["render", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not valid JSON" in err
    assert not (bad / "report.html").exists()


def test_the_command_line_that_made_a_result_is_recorded(dirs):
    prov = _metrics(dirs["measure"])
    line = prov["command_line"]
    out = str(dirs["measure"])
    assert line == f"p0-circuits measure --model tiny --no-bos --max-tokens 24 --out {out} --quiet"
    assert prov["args"]["max_tokens"] == 24


def _row(kind: str, layer: int, effect: float, clean: float = 0.5) -> dict:
    name = "embed@p0" if kind == "embed" else f"{kind}{layer}@p0"
    site = {"name": name, "kind": kind, "layer": layer, "head": None, "positions": [0]}
    return {"name": name, "sites": [site], "effect": effect, "relative": effect / clean}


def test_first_pass_figure_plots_each_exact_patch_against_its_estimate():
    from circuits.core.errors import MissingDataError

    estimate = [_row("attn", 0, -0.2), _row("mlp", 0, -0.1), _row("mlp", 1, -0.05)]
    exact = [_row("attn", 0, -0.4), _row("mlp", 0, -0.3)]  # mlp1 only estimated: no point
    record = {
        "clean": {"sink": 0.5},
        "first_pass": {"kind": "p0-stream estimate", "effects": estimate},
        "components": {"effects": exact},
        "first_pass_exact_pearson": 1.0,
    }
    fig = R.first_pass_figure(record)
    ax = fig.axes[0]
    points = sorted(
        tuple(xy) for c in ax.collections for xy in c.get_offsets().tolist()
    )  # (exact, estimate), both / clean sink
    assert points == [pytest.approx((-0.8, -0.4)), pytest.approx((-0.6, -0.2))]
    assert "p0-stream estimate" in ax.get_ylabel()
    assert "2 patches" in ax.get_title() and "1.000" in ax.get_title()
    with pytest.raises(MissingDataError, match="first-pass estimate"):
        R.first_pass_figure({"clean": {"sink": 0.5}, "components": {"effects": exact}})


def test_component_heatmap_shows_every_layer_and_marks_estimates():
    """Layers the exact sweep skipped still get a column: the attribution estimate, hatched."""
    from matplotlib.patches import Rectangle

    attribution = [_row("embed", 0, 0.0)] + [
        _row(k, la, -0.01 * la) for k in ("attn", "mlp") for la in range(5)
    ]
    exact = [
        _row("embed", 0, 0.0),
        _row("attn", 0, -0.4),
        _row("mlp", 0, -0.3),
        _row("mlp", 3, -0.1),
    ]
    record = {
        "clean": {"sink": 0.5},
        "first_pass": {"effects": attribution},
        "components": {"effects": exact},
    }
    fig = R.component_heatmap_figure(record)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "4"]
    grid = ax.images[0].get_array()
    assert grid[1, 0] == pytest.approx(-0.8) and grid[2, 3] == pytest.approx(-0.2)  # exact
    assert grid[1, 2] == pytest.approx(-0.04)  # attn2: attribution estimate
    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    # 10 attn/mlp cells, 3 of them exact; the embedding was patched exactly
    assert len(hatched) == 10 - 3
    bold = [t for t in ax.texts if t.get_fontweight() == "bold"]
    assert len(bold) == len(exact)
    assert "4 exact" in ax.get_title()


def test_report_figures_say_what_they_show_without_saturating_or_misplacing():
    """On the committed SmolLM2 record: the head heatmap's scale reaches its largest effect
    (-13% and -3.4% are different colours), the path figure divides by the discovery's one clean
    sink (a layer with a negligible sink cannot dominate), and the faithfulness curve's circuit
    marker is the circuit's own f, from its kept sink."""
    import json
    from pathlib import Path

    import numpy as np

    from circuits.viz.curve_figure import faithfulness_curve_figure
    from circuits.viz.patching_figures import head_patching_heatmap_figure, path_figure

    root = Path(__file__).resolve().parents[2]
    rec = json.loads((root / "results/smollm2-135m/discover/patching.json").read_text())
    clean = rec["clean"]["sink"]
    fig = head_patching_heatmap_figure(rec)
    image = fig.axes[0].images[0]
    heads = [r["effect"] / clean for r in rec["heads"]["effects"]]
    assert image.norm.vmax == pytest.approx(max(abs(h) for h in heads), rel=1e-6)
    fig = path_figure(rec)
    grid = np.ma.getdata(fig.axes[0].images[0].get_array())
    want = max(abs(r["effect"]) for r in rec["paths_k"]["effects"]) / clean
    assert np.nanmax(np.abs(grid)) == pytest.approx(want, rel=1e-6)
    fig = faithfulness_curve_figure(rec)
    curve, kept = rec["faithfulness_curve"], rec["faithfulness"]["kept"]
    f = (kept * curve["clean"] - curve["empty"]) / (curve["clean"] - curve["empty"])
    star = [ln for ln in fig.axes[0].lines if ln.get_marker() == "*"][0]
    assert star.get_xdata()[0] == curve["circuit_size"]
    assert star.get_ydata()[0] == pytest.approx(f)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("discovered circuit") for t in labels)
