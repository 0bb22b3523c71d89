"""report.html opened in headless Chromium with the network cut off.

Each report is loaded twice from ``file://``: once with ``--dump-dom`` (the DOM after scripts
ran) and once with ``--screenshot``. Chromium runs with every host resolving to nothing and
logs its network activity (``--log-net-log``); a request the *page* made (its initiator is the
page, not the browser's own background services) is a failure, and so is any JavaScript error
(collected by a probe script added to a copy of the page). A positive control shows that the
detector catches a page that does fetch something.

Locally a missing Chromium skips these tests; in CI (``CI=true``) it fails them.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _render_fixtures import discover_dir, measure_dir

from circuits.viz.report import build_report

# Collects errors before any other script runs; after load, writes what it saw into <html data-*>.
PROBE = """<script>
window.__p0errors = [];
window.addEventListener('error', function (e) { window.__p0errors.push(String(e.message || e.type)); }, true);
window.addEventListener('unhandledrejection', function (e) { window.__p0errors.push('rejection: ' + e.reason); });
window.addEventListener('load', function () { setTimeout(function () {
  var imgs = Array.prototype.slice.call(document.images);
  var views = Array.prototype.slice.call(document.querySelectorAll('div.p0-view'));
  var res = performance.getEntriesByType('resource').map(function (r) { return r.name; });
  var h = document.documentElement;
  h.setAttribute('data-imgs', imgs.length);
  h.setAttribute('data-imgs-ok', imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length);
  h.setAttribute('data-views', views.length);
  h.setAttribute('data-views-ok', views.filter(function (v) { return v.childElementCount > 0 && v.offsetHeight > 20; }).length);
  h.setAttribute('data-resources', JSON.stringify(res));
  h.setAttribute('data-errors', JSON.stringify(window.__p0errors));
  h.setAttribute('data-view-text', JSON.stringify(views.map(function (v) { return v.textContent; })));
  h.setAttribute('data-view-heights', JSON.stringify(views.map(function (v) { return v.offsetHeight; })));
}, 500); });
</script>"""


def _chromium(binary: str, url: str, tmp: Path, *extra: str) -> tuple[str, list[str], list[str]]:
    """Run headless Chromium offline; return (stdout, page network requests, console errors)."""
    tmp.mkdir(parents=True, exist_ok=True)
    netlog = tmp / "netlog.json"
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        f"--log-net-log={netlog}",
        "--virtual-time-budget=8000",
        "--window-size=1200,1800",
        *extra,
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    requests: list[str] = []
    if netlog.exists():
        text = netlog.read_text()
        if not text.rstrip().endswith("}"):  # Chromium may leave the log unterminated
            text = text.rstrip().rstrip(",") + "]}"
        log = json.loads(text)
        types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
        for ev in log["events"]:
            params = ev.get("params") or {}
            if (
                types.get(ev["type"]) == "URL_REQUEST_START_JOB"
                and "url" in params
                and params.get("initiator") != "not an origin"
            ):
                requests.append(params["url"])
    console = [
        line
        for line in proc.stderr.splitlines()
        if ":CONSOLE" in line and ("Uncaught" in line or "rror" in line)
    ]
    return proc.stdout, requests, console


def _probe_copy(report: Path, tmp: Path) -> Path:
    page = report.read_text()
    tmp.mkdir(parents=True, exist_ok=True)
    probed = tmp / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    return probed


def _attr(dom: str, name: str) -> str:
    m = re.search(rf'<html[^>]*\s{name}="([^"]*)"', dom)
    assert m, f"the probe did not run (no {name} on <html>)"
    return html.unescape(m.group(1))


def _check_page(binary: str, report: Path, tmp: Path, min_imgs: int, min_views: int) -> str:
    dom, requests, console = _chromium(
        binary, _probe_copy(report, tmp).as_uri(), tmp / "dom", "--dump-dom"
    )
    assert requests == [], f"the page made network requests: {requests}"
    assert console == [], f"console errors: {console}"
    assert json.loads(_attr(dom, "data-errors")) == []
    resources = json.loads(_attr(dom, "data-resources"))
    assert [r for r in resources if not r.startswith(("data:", "blob:"))] == []
    n_imgs, ok_imgs = int(_attr(dom, "data-imgs")), int(_attr(dom, "data-imgs-ok"))
    assert n_imgs >= min_imgs and ok_imgs == n_imgs, (n_imgs, ok_imgs)
    n_views, ok_views = int(_attr(dom, "data-views")), int(_attr(dom, "data-views-ok"))
    assert n_views >= min_views and ok_views == n_views, (n_views, ok_views)

    shot = tmp / "shot.png"
    _, requests, console = _chromium(binary, report.as_uri(), tmp / "shot", f"--screenshot={shot}")
    assert requests == [] and console == []
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)[..., :3]
    non_white = float((pixels.min(axis=-1) < 0.9).mean())
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert non_white > 0.02, f"screenshot is nearly blank ({non_white:.1%} non-white pixels)"
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    return dom


def test_detector_catches_a_page_that_fetches(chromium, tmp_path):
    """Positive control: a page with a CDN script and a remote image is caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!doctype html><html><body><img src="http://example.invalid/x.png">'
        '<script src="https://unpkg.com/circuitsvis/dist/cdn/esm.js"></script>'
        "<script>undefinedFunction()</script></body></html>"
    )
    _, requests, console = _chromium(chromium, page.as_uri(), tmp_path / "c", "--dump-dom")
    assert any("example.invalid" in r for r in requests)
    assert any("unpkg.com" in r for r in requests)
    assert any("undefinedFunction" in line for line in console)


@pytest.fixture(scope="module")
def tiny():
    from circuits.zoo import load_model

    return load_model("tiny", progress=False)


def test_measure_report_renders_offline(chromium, tiny, tmp_path):
    out = measure_dir(tmp_path)
    report = build_report(out, zm=tiny)
    dom = _check_page(chromium, report, tmp_path / "chk", min_imgs=3, min_views=3)
    assert "[P0]" in dom  # token labels drawn by the circuitsvis views
    assert "Head selector" in dom or "Head Selector" in dom  # AttentionHeads rendered its UI


def test_token_text_that_looks_like_markup_shows_as_text(chromium, tmp_path):
    """Tokens such as ``<bos>``, ``</s>`` and ``a&amp;b`` reach every view as their own text."""
    from circuits.viz.html import page
    from circuits.viz.views import View, bundle_js

    tokens = ["[P0]<bos>", "a&amp;b", "</s>", "<b>x</b>"]
    pattern = [[1.0 if k <= q else 0.0 for k in range(4)] for q in range(4)]
    views = [
        View("ColoredTokens", {"tokens": tokens, "values": [1.0, 2.0, 3.0, 4.0]}),
        View(
            "ColoredTokensMulti",
            {"tokens": tokens, "values": [[1.0, 2.0]] * 4, "labels": ["a", "b"]},
        ),
        View("AttentionHeads", {"attention": [pattern], "tokens": tokens}),
    ]
    path = tmp_path / "tokens.html"
    path.write_text(page("tokens", [v.fragment() for v in views], script=bundle_js()))
    dom, _, console = _chromium(
        chromium, _probe_copy(path, tmp_path).as_uri(), tmp_path / "d", "--dump-dom"
    )
    assert console == []
    text = json.loads(_attr(dom, "data-view-text"))
    for t in text[:2]:  # the coloured-token views write tokens as HTML: escaped, they read as text
        assert "[P0]<bos>" in t and "a&amp;b" in t and "</s>" in t and "<b>x</b>" in t, t
    assert views[2].displayed_props()["tokens"] == tokens  # canvas labels: drawn as given


def test_a_norm_view_of_a_deep_model_leaves_no_blank_space(chromium, tmp_path):
    """circuitsvis pads ColoredTokensMulti by 20 px per label for its hover table: a 30-layer
    norm view had ~620 px of blank space under eight tokens. The view must fit its content."""
    from circuits.viz.html import page
    from circuits.viz.views import View, bundle_js

    labels = ["embed", *[f"L{i}" for i in range(30)]]
    view = View(
        "ColoredTokensMulti",
        {"tokens": [f"t{i}" for i in range(8)], "values": [[1.0] * 31] * 8, "labels": labels},
    )
    path = tmp_path / "norm.html"
    path.write_text(page("norm", [view.fragment()], script=bundle_js()))
    dom, _, console = _chromium(
        chromium, _probe_copy(path, tmp_path).as_uri(), tmp_path / "d", "--dump-dom"
    )
    assert console == []
    (height,) = json.loads(_attr(dom, "data-view-heights"))
    assert 40 < height < 250, f"the norm view is {height} px tall for one line of labels and tokens"


def test_discover_report_renders_offline(chromium, tiny, tmp_path):
    out = discover_dir(tmp_path)
    report = build_report(out, zm=tiny)
    dom = _check_page(chromium, report, tmp_path / "chk", min_imgs=3, min_views=2)
    assert "attn0.h0@p0" in dom and "faithful circuit" in dom
