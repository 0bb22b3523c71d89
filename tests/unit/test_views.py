"""circuits.viz.views and view_data: circuitsvis views with the bundle inlined, and their data."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformer_lens.utilities import get_act_name

from circuits.core.conventions import VIEWS_FILE
from circuits.core.errors import UsageError
from circuits.core.manifest import write_manifest
from circuits.viz import view_data as VD
from circuits.viz import views as V


@pytest.fixture(scope="module")
def tiny():
    from circuits.zoo import load_model

    return load_model("tiny", progress=False)


@pytest.fixture(scope="module")
def data(tiny):
    return VD.view_data_for_text(
        tiny, "The sink sits on the first token of this text.", bos=False, top_k=4, max_tokens=20
    )


def test_bundle_is_inlinable():
    js = V.bundle_js()
    assert len(js) > 500_000  # the whole circuitsvis browser bundle, not a loader
    assert "var CircuitsVis=" in js
    assert "</script" not in js.lower()
    assert "sourceMappingURL" not in js


def test_view_data_matches_the_model(tiny, data):
    ids = torch.tensor([data["token_ids"]])
    _, cache = tiny.model.run_with_cache(ids)
    n_layers = tiny.model.cfg.n_layers
    scores = torch.stack(
        [cache[get_act_name("pattern", la)][0, :, 1:, 0].mean(-1) for la in range(n_layers)]
    )
    best = sorted(torch.topk(scores.flatten(), 4).indices.tolist())
    picked = sorted(h["layer"] * scores.shape[1] + h["head"] for h in data["heads"])
    assert picked == best
    assert [(h["layer"], h["head"]) for h in data["heads"]] == sorted(
        (h["layer"], h["head"]) for h in data["heads"]
    )
    T = data["n_tokens"]
    assert T == len(data["tokens"]) == len(data["token_ids"]) <= 20
    for h, pat in zip(data["heads"], data["patterns"], strict=True):
        pat = torch.tensor(pat)
        assert pat.shape == (T, T)
        ref = cache[get_act_name("pattern", h["layer"])][0, h["head"]]
        assert torch.allclose(pat, ref, atol=1e-4)
        assert pat[0, 0] == pytest.approx(1.0)  # P0 can only attend to itself
        assert torch.allclose(pat.sum(-1), torch.ones(T), atol=1e-3)
        assert h["attn_to_p0"] == pytest.approx(float(pat[1:, 0].mean()), abs=1e-3)
    assert data["norm_labels"] == ["embed"] + [f"L{la}" for la in range(n_layers)]
    embed = cache[get_act_name("resid_pre", 0)][0].norm(dim=-1)
    assert torch.allclose(torch.tensor(data["norms"][0]), embed, atol=0.01)
    last = cache[get_act_name("resid_post", n_layers - 1)][0].norm(dim=-1)
    assert torch.allclose(torch.tensor(data["norms"][-1]), last, rtol=1e-3, atol=0.01)


def test_sink_heads_view_marks_p0_and_saves_offline(data, tmp_path):
    view = V.sink_heads_view(data)
    assert view.element == "AttentionHeads"
    assert view.props["tokens"][0].startswith(V.P0_MARK)
    assert not any(t.startswith(V.P0_MARK) for t in view.props["tokens"][1:])
    assert len(view.props["attentionHeadNames"]) == len(data["heads"])
    path = view.save(tmp_path / "heads.html")
    page = path.read_text()
    assert page.count("var CircuitsVis=") == 1
    assert "CircuitsVis.render(" in page and "CircuitsVis.AttentionHeads" in page
    assert not re.search(r"<script[^>]+src=", page, re.I)
    assert "unpkg.com" not in page
    # the props are exactly the data (round trip through the inlined JSON)
    call = re.search(r"CircuitsVis\.AttentionHeads, (\{.*\})\);", page).group(1)
    props = json.loads(call)
    assert props["attention"] == data["patterns"]


def test_norm_and_recognition_views(data):
    view = V.p0_norm_view(data)
    assert view.element == "ColoredTokensMulti"
    values = view.props["values"]
    assert len(values) == data["n_tokens"] and len(values[0]) == len(data["norm_labels"])
    metrics = {
        "tokens": ["a", "b", "c"],
        "recognition": {
            "layer0_sum_p_squared": [1.0, 0.6, 0.4],
            "layer0_attn_out_norm": [3.0, 2.0, 1.5],
        },
    }
    rec = V.recognition_view(metrics)
    assert rec.props["values"] == [[1.0, 3.0], [0.6, 2.0], [0.4, 1.5]]
    assert rec.props["tokens"] == ["[P0]a", "b", "c"]
    assert V.recognition_view({"tokens": ["a"]}) is None


def test_repr_html_is_offline_and_self_contained(data):
    html = V.sink_heads_view(data)._repr_html_()
    assert '<script type="module">' in html and "var CircuitsVis=" in html
    assert "https://" not in html.split("var CircuitsVis=")[0]


def test_props_cannot_break_out_of_the_script():
    view = V.View("ColoredTokens", {"tokens": ["</script><b>x", "<!--"], "values": [1.0, 2.0]})
    frag = view.fragment()
    assert "</script><b>" not in frag and "<!--" not in frag
    assert frag.count("</script>") == 1
    sent = json.loads(re.search(r"ColoredTokens, (\{.*\})\);", frag).group(1))["tokens"]
    assert sent == ["&lt;/script&gt;&lt;b&gt;x", "&lt;!--"]  # innerHTML of the element: escaped
    assert view.props["tokens"][0] == "</script><b>x"  # the data itself is unchanged


def test_tokens_are_escaped_only_where_circuitsvis_writes_html():
    """ColoredTokens* write tokens with innerHTML (<bos> would become a tag); AttentionHeads and
    AttentionPatterns draw them on a canvas (escaped, they would show &lt;bos&gt;)."""
    tokens = V.mark_p0(["<bos>", "a&b", ""])
    assert tokens == ["[P0]<bos>", "a&b", "\u2205"]
    for element in ("ColoredTokens", "ColoredTokensMulti"):
        shown = V.View(element, {"tokens": tokens, "values": [1.0] * 3}).displayed_props()
        assert shown["tokens"] == ["[P0]&lt;bos&gt;", "a&amp;b", "\u2205"]
    for element in ("AttentionHeads", "AttentionPatterns"):
        assert V.View(element, {"tokens": tokens}).displayed_props()["tokens"] == tokens


def test_view_data_round_trip_and_bad_files(data, tmp_path):
    VD.write_view_data(tmp_path, data)
    with pytest.raises(UsageError, match="no manifest.json"):  # unverifiable: refused
        VD.load_view_data(tmp_path)
    write_manifest(tmp_path)
    assert VD.load_view_data(tmp_path) == json.loads(json.dumps(data))
    (tmp_path / VIEWS_FILE).write_text("{not json")
    with pytest.raises(UsageError, match="views.json changed after it was written"):
        VD.load_view_data(tmp_path)
    write_manifest(tmp_path)  # even when the checksum matches, a broken file is refused
    with pytest.raises(UsageError, match="views.json is not valid JSON"):
        VD.load_view_data(tmp_path)
    assert VD.load_view_data(tmp_path / "missing") is None
    with pytest.raises(UsageError):
        V.View("NoSuchElement", {})
