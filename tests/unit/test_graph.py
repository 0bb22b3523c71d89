"""CircuitGraph: building, thresholding and lossless round trips through JSON and GraphML."""

from __future__ import annotations

import json

import networkx as nx
import pytest

from circuits.circuit.graph import CircuitGraph
from circuits.core.errors import UsageError
from circuits.patching import Receiver, Site


def _example() -> CircuitGraph:
    g = CircuitGraph(
        model="tiny",
        counterfactual="shift",
        faithfulness_kept=0.93,
        faithfulness_ablated=0.12,
        metric="sink_score",
        receiver_layers=[2, 3],
        verdict="found",
        seed=0,
        note=None,
    )
    attn = Site("head", 0, head=3)
    g.add_node(attn.name, **CircuitGraph.from_site(attn), effect=-0.21, relative=-0.5, exact=True)
    mlp = Site("mlp", 1)
    g.add_node(mlp.name, **CircuitGraph.from_site(mlp), effect=-0.4, relative=-0.95, exact=True)
    g.add_node(
        "embed@p0", **CircuitGraph.from_site(Site("embed")), effect=0.0, tags=["a", "json:x"]
    )
    for r in (Receiver("k", 2), Receiver("k", 3), Receiver("q", 3)):
        g.add_node(r.name, **CircuitGraph.from_receiver(r), sink_clean=0.6)
    g.add_edge(attn.name, mlp.name, path_type="mlp_in", effect=-0.3)
    g.add_edge(mlp.name, "attn2.k", path_type="k", effect=-0.35)
    g.add_edge(mlp.name, "attn3.k", path_type="k", effect=-0.02)
    g.add_edge(mlp.name, "attn3.q", path_type="q", effect=0.001)
    return g


def test_node_names_and_attributes():
    g = _example()
    assert set(g.nodes()) == {"attn0.h3@p0", "mlp1@p0", "embed@p0", "attn2.k", "attn3.k", "attn3.q"}
    d = g.g.nodes["attn0.h3@p0"]
    assert (d["layer"], d["kind"], d["head"], d["position"], d["effect"]) == (
        0,
        "head",
        3,
        0,
        -0.21,
    )
    assert g.g.nodes["attn2.k"]["kind"] == "k" and g.g.nodes["attn2.k"]["effect"] is None
    assert g.g.nodes["embed@p0"]["layer"] == -1
    assert g.g.edges["mlp1@p0", "attn2.k"]["path_type"] == "k"
    assert Receiver("k", 5, heads=(1,)).name == "attn5.kv1.k"
    assert Receiver("mlp_in", 1).name == "mlp1.in"
    assert Site("resid_pre", 4).name == "resid_pre4@p0"
    assert Site("attn", 2, positions=None).name == "attn2@all"


def test_threshold():
    g = _example()
    t = g.threshold(node_min=0.1, edge_min=0.05)
    assert set(t.nodes()) == {"attn0.h3@p0", "mlp1@p0", "attn2.k"}
    assert [(u, v) for u, v, _ in t.edges()] in (
        [("attn0.h3@p0", "mlp1@p0"), ("mlp1@p0", "attn2.k")],
        [("mlp1@p0", "attn2.k"), ("attn0.h3@p0", "mlp1@p0")],
    )
    # relative thresholds: fraction of a reference value
    r = g.threshold(node_min=0.5, edge_min=0.5, relative_to=0.5)
    assert set(r.nodes()) == {"mlp1@p0", "attn2.k"}  # 0.21 < 0.5 * 0.5 <= 0.35
    assert t.graph_attrs["faithfulness_kept"] == 0.93
    assert len(g) == 6  # the original is untouched


def test_json_round_trip(tmp_path):
    g = _example()
    path = g.write_json(tmp_path / "circuit.json")
    data = json.loads(path.read_text())
    assert data["graph"]["faithfulness_kept"] == 0.93 and data["directed"] is True
    back = CircuitGraph.load(path)
    assert back.same_as(g)
    assert back.g.nodes["embed@p0"]["tags"] == ["a", "json:x"]


def test_graphml_round_trip_keeps_none_lists_and_types(tmp_path):
    g = _example()
    path = g.write_graphml(tmp_path / "circuit.graphml")
    # plain networkx can read it too (interoperability)
    raw = nx.read_graphml(path)
    assert raw.nodes["attn0.h3@p0"]["layer"] == 0
    back = CircuitGraph.load(path)
    assert back.same_as(g)
    d = back.g.nodes["attn2.k"]
    assert d["effect"] is None and d["head"] is None and d["position"] is None
    assert back.g.nodes["embed@p0"]["tags"] == ["a", "json:x"]
    assert back.graph_attrs["metric"] == "sink_score" and back.graph_attrs["receiver_layers"] == [
        2,
        3,
    ]
    assert back.graph_attrs.get("note") is None
    assert isinstance(back.g.nodes["mlp1@p0"]["layer"], int)
    assert back.g.nodes["mlp1@p0"]["exact"] is True


def _rgb(color: str) -> tuple[int, int, int]:
    c = color.strip('"').lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def test_dot_export_read_by_pydot_follows_the_effect_convention(tmp_path):
    """Read back by pydot (Graphviz's grammar, not this toolkit): components filled blue when
    patching them lowers the sink and red when it raises it, labelled with their relative effect,
    backups dashed and named, receivers white, edges coloured by the sign of their effect."""
    import pydot

    g = _example()
    up = Site("attn", 1)
    g.add_node(up.name, **CircuitGraph.from_site(up), effect=0.05, relative=0.12, role="backup")
    g.add_edge(up.name, "attn2.k", path_type="k", effect=0.04, relative=0.2)
    text = g.write_dot(tmp_path / "circuit.dot").read_text()
    (dot,) = pydot.graph_from_dot_data(text)
    nodes = {
        n.get_name().strip('"'): n for n in dot.get_nodes() if n.get_name() not in ("node", "edge")
    }
    for name, d in g.g.nodes(data=True):
        attrs = nodes[name].get_attributes()
        label = attrs["label"].strip('"')
        if d["kind"] in ("k", "q"):
            assert attrs["fillcolor"] == "white" and "clean sink 0.60" in label
            continue
        if d.get("relative") is None:
            continue
        r, _, b = _rgb(attrs["fillcolor"])
        assert (b > r) == (d["relative"] < 0), (name, attrs["fillcolor"])
        shown = float(label.split("\\n")[-1].split("%")[0])
        assert shown == pytest.approx(100 * d["relative"], abs=0.05)
        assert ("dashed" in attrs["style"]) == (d.get("role") == "backup")
        assert ("backup" in label) == (d.get("role") == "backup")
    mlp = nodes["mlp1@p0"].get_attributes()
    assert mlp["fontcolor"] == "white"  # the darkest fill reads in white
    edges = {
        (e.get_source().strip('"'), e.get_destination().strip('"')): e for e in dot.get_edges()
    }
    assert len(edges) == g.g.number_of_edges() == 5
    for (u, v), e in edges.items():
        r, _, b = _rgb(e.get_attributes()["color"])
        assert (b > r) == (g.g.edges[u, v]["effect"] < 0)
    assert "kept 93% / ablated 12%" in dot.get_attributes()["label"]


def test_bad_input():
    g = _example()
    with pytest.raises(UsageError, match="not in the graph"):
        g.add_edge("mlp1@p0", "attn9.k", path_type="k", effect=0.1)
    with pytest.raises(UsageError, match="unknown path type"):
        g.add_edge("mlp1@p0", "attn2.k", path_type="o", effect=0.1)
    with pytest.raises(UsageError, match="unknown node kind"):
        g.add_node("x", layer=0, kind="neuron")
    with pytest.raises(UsageError, match="use a .json"):
        CircuitGraph.load(__file__)


def test_graphml_reads_cleanly_in_another_tool(tmp_path):
    """python-igraph (the C library behind R's and Python's igraph) reads the file as it is:
    plain scalar attributes, lists as numbered attributes, nothing encoded."""
    import igraph

    g = _example()
    g.add_node(
        "attn0@p0",
        **CircuitGraph.from_site(Site("attn", 0)),
        effect=-0.1,
        head_relative_effects=[0.5, -0.25],
    )
    path = g.write_graphml(tmp_path / "circuit.graphml")
    other = igraph.Graph.Read_GraphML(str(path))
    assert other.is_directed() and other.vcount() == 7 and other.ecount() == 4
    names = set(other.vs["id"])
    assert {"attn0.h3@p0", "mlp1@p0", "attn2.k"} <= names
    attrs = set(other.vs.attributes())
    assert {
        "layer",
        "kind",
        "effect",
        "head_relative_effects.0",
        "head_relative_effects.1",
    } <= attrs
    assert not [a for a in attrs if a.startswith("_")]
    v = other.vs.find(id="attn0@p0")
    assert (
        v["layer"] == 0
        and v["effect"] == pytest.approx(-0.1)
        and v["head_relative_effects.1"] == -0.25
    )
    embed = other.vs.find(id="embed@p0")  # a list of strings: one plain attribute per element
    assert "tags" not in attrs and (embed["tags.0"], embed["tags.1"]) == ("a", "json:x")
    edge = other.es[
        other.get_eid(other.vs.find(id="mlp1@p0").index, other.vs.find(id="attn2.k").index)
    ]
    assert edge["path_type"] == "k" and edge["effect"] == pytest.approx(-0.35)
    assert CircuitGraph.load(path).same_as(g)  # and it still comes back whole


def test_gexf_for_gephi_keeps_the_graph_attributes(tmp_path):
    """networkx's own write_gexf fails on None attributes and drops graph attributes; the
    toolkit's GEXF holds them in <meta><description>, read here by a second reader (the XML
    parser, no networkx) and back into an equal CircuitGraph."""
    import json
    import xml.etree.ElementTree as ET

    import networkx as nx

    g = _example()
    g.g.graph.update(faithfulness_kept=0.87, circuit="attn0@p0, mlp1@p0", verdict="faithful")
    with pytest.raises(TypeError, match="NoneType"):  # the plain networkx export the issue tried
        nx.write_gexf(g.g, tmp_path / "plain.gexf")
    path = g.write_gexf(tmp_path / "circuit.gexf")
    root = ET.parse(path).getroot()
    ns = root.tag.split("}")[0] + "}"
    text = root.find(f"{ns}meta/{ns}description").text
    attrs = json.loads(text.split(": ", 1)[1])
    assert attrs["faithfulness_kept"] == 0.87 and attrs["verdict"] == "faithful"
    ids = {n.get("id") for n in root.iter(f"{ns}node")}
    assert ids == set(g.g.nodes)
    assert CircuitGraph.load(path).same_as(g)
