"""Every public Python entry refuses a bad argument before any work, naming the argument.

The table is generated from the exports: every public name of ``circuits``, ``circuits.patching``
and ``circuits.panel`` (their lazy export maps) plus the methods users call on what those
return (``Patcher.patch``, ``Patcher.path_patch``, ``Patcher.clean_value``,
``ExplorePanel.export``). Each entry has one valid call below (checked to succeed, so a refusal
is never due to another argument), and each annotated parameter gets the bad values its
annotation admits, by kind:

* ``wrong type``: an ``object()``, for every annotated parameter;
* ``NaN``: for parameters that take a float;
* ``empty``: an empty list / tuple / mapping, or a tensor with no rows, for parameters that take
  a collection or a tensor;
* ``out of range``: one step outside a declared bound (``ge`` / ``gt`` / ``le`` / ``lt``). An int
  or float parameter without a bound must be listed in ``ANY_NUMBER`` with the reason every
  value means something.

Each must raise ``UsageError`` whose message names the parameter, and no forward may have run on
the model (a counting hook on the embedding). A new export without a valid call here fails
``test_every_export_has_a_row``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import pytest
import torch

from circuits.core.errors import UsageError

PACKAGES = ("circuits", "circuits.patching", "circuits.panel", "circuits.sweep")

NOT_ENTRIES = {
    "Readout": "the abstract readout class: its subclasses are the entries",
    "Counterfactual": "the abstract counterfactual class: its subclasses are the entries",
    "PatchingResult": "a result the engine returns, not built by users",
    "SinkReport": "a result measure_sinks returns, not built by users",
    "ZooModel": "a result load_model returns (as_zoo_model wraps a user's model)",
    "ExplorePanel": "built by explore(), whose arguments are the table's row",
    "PatchSession": "the panel's engine, built by explore() from checked arguments",
    "CircuitGraph": "a networkx graph of free-form attributes, built by discover and the panel",
    "lazy_exports": "the packages' import machinery",
    "SweepSpec": "the spec file's schema: read_spec builds it and turns its errors into UsageError",
    "SweepOutcome": "a result run_sweep returns, not built by users",
}

ANY_NUMBER = {
    ("LogitDifference", "position"): "negative positions count from the end (-1: the last)",
    ("massive_activations", "layer"): "only a label of the hidden state it reports",
}


class _World:
    """A tiny model with a forward counter, prompts, a patcher and a panel."""

    def __init__(self) -> None:
        from circuits.zoo import tiny_model

        self.model = tiny_model(seed=3, n_layers=3)
        self.tokens = torch.randint(3, 200, (2, 8), generator=torch.Generator().manual_seed(1))
        self.forwards = 0

        def count(act, hook):
            self.forwards += 1

        self.model.hook_embed.add_hook(count, is_permanent=True)
        from circuits.patching import Patcher

        self.patcher = Patcher(self.model, self.tokens)
        self.pattern = torch.softmax(torch.randn(2, 4, 8, 8), -1)
        self.resid = torch.randn(2, 8, 32)


def _valid_calls(w: _World, tmp) -> dict[str, tuple[Any, dict[str, Any]]]:
    import circuits
    import circuits.panel as panel_pkg
    import circuits.patching as P
    import circuits.sweep as S

    spec_file = tmp / "spec.toml"
    spec_file.write_text(
        'commands = ["measure"]\nmodels = ["tiny"]\n[args]\nmax_tokens = 16\nseed = 0\n'
    )
    spec = S.read_spec(spec_file)
    job = S.expand(spec, base=tmp)[0].describe()

    def panel():
        if not hasattr(w, "panel"):
            w.panel = panel_pkg.explore(w.model, w.tokens).wait()
            w.panel.selected = ["attn0@p0"]
            w.panel.wait()
        return w.panel

    site, recv = P.Site("attn", 0), P.Receiver("k", 1)
    return {
        "load_model": (circuits.load_model, dict(name="tiny", progress=False, device="cpu")),
        "list_zoo": (circuits.list_zoo, {}),
        "tiny_model": (circuits.tiny_model, dict(seed=1)),
        "measure_sinks": (
            circuits.measure_sinks,
            dict(
                model=w.model,
                tokens=w.tokens,
                bos=False,
                eps=0.3,
                max_massive=5,
                massive_ratio=1000.0,
            ),
        ),
        "attn_to_p0": (circuits.attn_to_p0, dict(pattern=w.pattern)),
        "sink_score": (circuits.sink_score, dict(pattern=w.pattern, key_position=0)),
        "sink_rate": (circuits.sink_rate, dict(scores=torch.rand(4), eps=0.3)),
        "sum_p_squared": (circuits.sum_p_squared, dict(pattern=w.pattern)),
        "residual_norms": (circuits.residual_norms, dict(resid=w.resid)),
        "massive_activations": (
            circuits.massive_activations,
            dict(resid=w.resid, layer=0, abs_threshold=100.0, ratio_threshold=1000.0),
        ),
        "Patcher": (
            P.Patcher,
            dict(
                model=w.model,
                tokens=w.tokens,
                counterfactual="shift",
                shift_token=5,
                max_rows=8,
                progress=False,
                prefix_blocks=True,
            ),
        ),
        "Patcher.patch": (w.patcher.patch, dict(patches=[site], readout=P.SinkScore([2]), desc="")),
        "Patcher.path_patch": (
            w.patcher.path_patch,
            dict(paths=[(site, recv)], readout=P.SinkScore([2]), desc=""),
        ),
        "Patcher.clean_value": (w.patcher.clean_value, dict(readout=P.SinkScore([2]))),
        "Site": (P.Site, dict(kind="head", layer=1, head=2, positions=(0, 1))),
        "Receiver": (P.Receiver, dict(kind="q", layer=1, heads=(0,))),
        "component_sites": (
            P.component_sites,
            dict(n_layers=3, layers=[0, 1], positions=(0,), kinds=("attn",)),
        ),
        "head_sites": (P.head_sites, dict(layers=[0], n_heads=4, positions=(0,))),
        "patch_name": (P.patch_name, dict(patch=site)),
        "SinkScore": (P.SinkScore, dict(receivers=[1, 2])),
        "AttentionToP0": (P.AttentionToP0, dict(receivers=[1, 2])),
        "P0Norm": (P.P0Norm, dict(layer=1)),
        "P0Routing": (P.P0Routing, dict(layer=1, expert=0)),
        "SinkKeySplit": (P.SinkKeySplit, dict(receivers=[1, 2], part="norm")),
        "P0ValueNorm": (P.P0ValueNorm, dict(receivers=[1, 2])),
        "CacheReadout": (
            P.CacheReadout,
            dict(fn=lambda cache: 0.0, stop_layer=2, hooks=["blocks.0.hook_resid_post"]),
        ),
        "NextTokenLoss": (P.NextTokenLoss, {}),
        "LossAndKL": (P.LossAndKL, {}),
        "KLToClean": (P.KLToClean, dict(positions=[0, 1])),
        "LogitDifference": (P.LogitDifference, dict(correct=3, wrong=[4, 5], position=-1)),
        "Shift": (P.Shift, dict(token=4)),
        "MeanAblation": (P.MeanAblation, {}),
        "ZeroAblation": (P.ZeroAblation, {}),
        "FirstToken": (P.FirstToken, dict(token=4)),
        "MassiveDims": (P.MassiveDims, dict(dims=[1, 3], base=None)),
        "PromptSet": (P.PromptSet, dict(tokens=w.tokens, name="other")),
        "CachedActivations": (
            P.CachedActivations,
            dict(values={"hook_embed": torch.zeros(2, 8, 32)}, name="mine"),
        ),
        "resolve_counterfactual": (
            P.resolve_counterfactual,
            dict(counterfactual="mean", model=w.model, shift_token=None),
        ),
        "attribution_patch": (
            P.attribution_patch,
            dict(patcher=w.patcher, sites=[site], readout=None, prompts_per_pass=1, ig_steps=1),
        ),
        "pearson": (P.pearson, dict(a=torch.rand(5), b=torch.rand(5))),
        "DiscoverConfig": (
            circuits.DiscoverConfig,
            dict(receivers=[2], max_rows=8, curve=False, prediction_random_sets=0, progress=False),
        ),
        "discover": (
            circuits.discover,
            dict(
                model=w.model,
                tokens=w.tokens,
                config=circuits.DiscoverConfig(
                    receivers=[2],
                    curve=False,
                    prediction_random_sets=0,
                    max_backups=0,
                    progress=False,
                ),
                model_name="tiny",
            ),
        ),
        "explore": (
            panel_pkg.explore,
            dict(
                model=w.model,
                prompts=w.tokens,
                counterfactual="shift",
                receivers=[2],
                n_prompts=2,
                n_tokens=8,
                export_dir=str(tmp / "sel"),
            ),
        ),
        "ExplorePanel.export": (
            lambda **kw: panel().export(**kw),
            dict(out_dir=str(tmp / "exported"), overwrite=False),
        ),
        "HeadPattern": (panel_pkg.HeadPattern, dict(layer=1, head=0, prompt=0)),
        "read_spec": (S.read_spec, dict(path=spec_file)),
        "expand": (S.expand, dict(spec=spec, base=tmp)),
        "run_job": (S.run_job, dict(job=job, root=tmp / "jobs", retry_failed=False, threads=1)),
        "run_sweep": (
            S.run_sweep,
            dict(
                spec_path=spec_file,
                out=tmp / "sweep",
                executor="local",
                workers=1,
                retry_failed=False,
                cluster=None,
                wait=True,
                progress=False,
            ),
        ),  # fmt: skip
        "P0SinkMonitor": (
            circuits.P0SinkMonitor,
            dict(
                prompts=w.tokens,
                every=2,
                path=str(tmp / "monitor.jsonl"),
                bos=False,
                exact_every=1,
                patience=2,
                tolerance=0.05,
                logger=None,
            ),
        ),
        "ClusterOptions": (
            S.ClusterOptions,
            dict(partition="debug", gpus=0, cpus=2, mem_gb=8.0, time_min=10, array_parallelism=2),
        ),
    }


def _exports() -> list[str]:
    names = []
    for package in PACKAGES:
        mod = importlib.import_module(package)
        for name in dir(mod):
            if not name.startswith("_") and not inspect.ismodule(getattr(mod, name)):
                names.append(name)
    return sorted(set(names))


METHODS = ("Patcher.patch", "Patcher.path_patch", "Patcher.clean_value", "ExplorePanel.export")


def _signature_target(fn: Any) -> Any:
    return fn.__init__ if inspect.isclass(fn) else fn


# -- the bad values an annotation admits ------------------------------------------------------


def _parts(tp: Any) -> list[Any]:
    """The union members of an annotation, Annotated unwrapped, with their bounds."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _parts(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [p for a in typing.get_args(tp) for p in _parts(a)]
    return [tp]


def _bounds(tp: Any) -> list[tuple[str, Any, Any]]:
    """(key, bound, base type) of every ge / gt / le / lt in the annotation."""
    out = []
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        for m in meta:
            for c in getattr(m, "metadata", [m]):
                for key in ("ge", "gt", "le", "lt"):
                    if getattr(c, key, None) is not None:
                        out.append((key, getattr(c, key), base))
        return out + _bounds(base)
    if origin in (typing.Union, types.UnionType):
        return [b for a in typing.get_args(tp) for b in _bounds(a)]
    return out


def _outside(key: str, bound: Any, base: Any) -> Any:
    step = 1 if base is int else 1e-3
    return {"ge": bound - step, "gt": bound, "le": bound + step, "lt": bound}[key]


def _is_collection(part: Any) -> bool:
    origin = typing.get_origin(part) or part
    return (
        isinstance(origin, type) and origin is not str and issubclass(origin, (Sequence, Mapping))
    )


def _is_tensor(part: Any) -> bool:
    return isinstance(part, type) and (part is torch.Tensor or "Tensor" in part.__name__)


def bad_values(entry: str, name: str, tp: Any) -> list[tuple[str, Any]]:
    parts = _parts(tp)
    if parts == [Any] or parts == [object]:
        return []
    out: list[tuple[str, Any]] = [("wrong type", object())]
    if float in parts:
        out.append(("NaN", math.nan))
    if any(_is_collection(p) for p in parts):
        empty = (
            {}
            if any(
                issubclass(typing.get_origin(p) or p, Mapping) for p in parts if _is_collection(p)
            )
            else []
        )
        out.append(("empty", empty))
    elif any(_is_tensor(p) for p in parts):
        out.append(("empty", torch.empty(0, 8, dtype=torch.long)))
    bounds = _bounds(tp)
    for key, bound, base in bounds:
        out.append(("out of range", _outside(key, bound, base)))
    numeric = any(p in (int, float) for p in parts)
    if (
        numeric
        and not bounds
        and (entry.split(".")[-1], name) not in ANY_NUMBER
        and (entry, name) not in ANY_NUMBER
    ):
        out.append(("undeclared range", None))
    return out


def _table(world: _World, tmp) -> list[tuple[str, str, str, Any]]:
    calls = _valid_calls(world, tmp)
    rows = []
    for entry, (fn, _kwargs) in calls.items():
        target = fn
        if entry == "ExplorePanel.export":
            from circuits.panel.widget import ExplorePanel

            target = ExplorePanel.export
        hints = typing.get_type_hints(
            _signature_target(getattr(target, "__wrapped__", target)), include_extras=True
        )
        for name in inspect.signature(_signature_target(target)).parameters:
            if name in ("self", "cls") or name not in hints:
                continue
            for kind, value in bad_values(entry, name, hints[name]):
                rows.append((entry, name, kind, value))
    return rows


@pytest.fixture(scope="module")
def world():
    w = _World()
    yield w
    if hasattr(w, "panel"):
        w.panel.close_workers()


def test_every_export_has_a_row(world, tmp_path):
    calls = _valid_calls(world, tmp_path)
    missing = [n for n in _exports() if n not in calls and n not in NOT_ENTRIES]
    assert not missing, f"public names without a row in the argument table: {missing}"
    assert set(METHODS) <= set(calls)


def test_every_valid_call_succeeds(world, tmp_path):
    """The rows' valid calls run, so a refusal below is the bad argument's doing."""
    for fn, kwargs in _valid_calls(world, tmp_path).values():
        fn(**kwargs)


def test_every_bad_argument_is_refused_by_name_before_work(world, tmp_path):
    calls = _valid_calls(world, tmp_path)
    rows = _table(world, tmp_path)
    kinds = {kind for _, _, kind, _ in rows}
    assert {"wrong type", "NaN", "empty", "out of range"} <= kinds
    undeclared = [(e, n) for e, n, k, _ in rows if k == "undeclared range"]
    assert not undeclared, f"int / float parameters with no declared range: {undeclared}"
    failures = []
    for entry, name, kind, value in rows:
        fn, kwargs = calls[entry]
        before = world.forwards
        try:
            fn(**{**kwargs, name: value})
        except UsageError as err:
            if name not in str(err):
                failures.append(f"{entry}({name}) {kind}: message does not name it: {err}")
            elif world.forwards != before:
                failures.append(f"{entry}({name}) {kind}: a forward ran before the refusal")
            continue
        except Exception as err:  # noqa: BLE001
            failures.append(f"{entry}({name}) {kind}: {type(err).__name__}: {err}")
            continue
        failures.append(f"{entry}({name}) {kind}: accepted {value!r}")
    print(f"{len(calls)} entries, {len(rows)} bad arguments, kinds {sorted(kinds)}")
    assert not failures, "\n".join(failures)


def test_the_issue_examples_are_refused_by_name(world):
    """Issue 36's examples, each of which answered (or raised from deep inside) before."""
    import circuits.patching as P
    from circuits.panel import explore

    site = P.Site("attn", 0)
    cases = [
        ("correct", lambda: P.LogitDifference(1.7, 2)),  # was: token 1
        ("prompts", lambda: explore(world.model, torch.zeros(2, 2, 8, dtype=torch.long))),
        ("layer", lambda: P.Site("attn", 0.5)),  # was: KeyError on a hook name
        ("values", lambda: P.CachedActivations({"hook_embed": 0.0})),  # was: AttributeError
        ("paths", lambda: world.patcher.path_patch([site])),  # was: TypeError
        ("prompts", lambda: explore("tiny", 123)),  # was: TypeError
        ("positions", lambda: P.KLToClean([])),  # was: nan
        ("heads", lambda: P.Receiver("k", 1, heads=())),  # was: the clean value
    ]
    for name, call in cases:
        before = world.forwards
        with pytest.raises(UsageError, match=name):
            call()
        assert world.forwards == before
