"""A model of one's own, as a first-class citizen: prompts, views, saving and the engine work from
a bare HookedTransformer and its tokenizer; padded batches and BOS counterfactuals are handled."""

from __future__ import annotations

import json

import pytest
import torch
from _hf_helpers import tokenizer
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuits.core.errors import UsageError
from circuits.metrics import measure_sinks
from circuits.patching import Patcher, SinkScore, Site
from circuits.prompts import default_text, prompt_set, tokenize_text
from circuits.viz.report import write_result
from circuits.viz.view_data import view_data_for_text
from circuits.zoo.model import ZooModel


@pytest.fixture(scope="module")
def own():
    tok = tokenizer()
    tok.pad_token = tok.eos_token  # GPT-2 style: pad = eos = bos
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=64,
        d_vocab=len(tok),
        act_fn="gelu",
        normalization_type="LN",
        default_prepend_bos=True,
        model_name="own-3L",
        seed=0,
        device="cpu",
    )
    model = HookedTransformer(cfg, move_to_device=False)
    model.tokenizer = tok  # set_tokenizer would re-fetch it from the hub by name
    model.cfg.tokenizer_prepends_bos = False
    return model


def test_prompts_views_and_saving_from_a_bare_hooked_transformer(own, tmp_path):
    tokens = prompt_set(own, n_prompts=3, n_tokens=12, bos=True)
    bos = own.tokenizer.bos_token_id
    assert tokens.shape == (3, 12) and (tokens[:, 0] == bos).all()
    direct = own.tokenizer("The", add_special_tokens=False)["input_ids"]
    text = tokenize_text(own, "The quick brown fox jumps over the lazy dog.", bos=False)
    assert text.tokens[0, : len(direct)].tolist() == direct
    data = view_data_for_text(own, "The quick brown fox jumps over the lazy dog.", bos=True)
    assert data["tokens"][0] == "<|endoftext|>" and data["model"] == "own-3L"
    zm = ZooModel.from_hooked(own)
    assert zm.name == "own-3L" and zm.bos_token_id == bos and zm.natural_bos
    measured = tokenize_text(own, default_text(), bos=True, max_tokens=24)
    report = measure_sinks(own, measured.tokens, bos=True)
    record = {
        "model": "own-3L",
        "args": {"text": None},
        "tokens": zm.str_tokens(measured.tokens[0]),
        **report.to_dict(),
    }
    out = write_result(tmp_path / "m", "measure", record, zm=own)
    assert (tmp_path / "m" / "views.json").is_file()
    assert out.name == "report.html"


def test_padded_batches_are_refused_with_the_fix(own):
    texts = ["The quick brown fox jumps over the lazy dog.", "A short one."]
    padded = own.to_tokens(texts, prepend_bos=True)  # TransformerLens pads silently
    with pytest.raises(UsageError, match="padded at its end.*equal length without padding"):
        Patcher(own, padded)
    same = own.to_tokens([texts[0], texts[0]], prepend_bos=True)
    Patcher(own, same, "zero")  # equal prompts: no padding, accepted


def test_bos_counterfactual_is_the_tokenizer_bos_and_equals_a_plain_hook_loop(own):
    tokens = prompt_set(own, n_prompts=3, n_tokens=12, bos=False)
    patcher = Patcher(own, tokens, "token:<bos>")
    assert patcher.counterfactual.describe()["first_token"] == own.tokenizer.bos_token_id
    res = patcher.patch([Site("mlp", 0)], SinkScore([2]))
    bos_tokens = tokens.clone()
    bos_tokens[:, 0] = own.tokenizer.bos_token_id
    _, cf = own.run_with_cache(bos_tokens)
    store = {}

    def setter(act, hook):
        act[:, 0] = cf["blocks.0.hook_mlp_out"][:, 0]
        return act

    def keep(act, hook):
        store["p"] = act

    with torch.no_grad():
        own.run_with_hooks(
            tokens,
            fwd_hooks=[("blocks.0.hook_mlp_out", setter), ("blocks.2.attn.hook_pattern", keep)],
        )
    assert float(res.values[0]) == pytest.approx(float(store["p"][..., 0].mean()), abs=1e-6)
    saved = json.loads(json.dumps(res.to_dict()))
    assert saved["counterfactual"] == "token:<bos>"
    assert saved["counterfactual_params"]["first_token"] == own.tokenizer.bos_token_id


def test_norms_of_a_centred_model_are_warned_about():
    """TransformerLens' default processing centres the writing weights: a model with folded
    LayerNorm and centred embeddings gets a warning where norms are reported."""
    import warnings

    from circuits.metrics import measure_sinks

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=16,
        n_heads=2,
        d_head=8,
        d_mlp=32,
        n_ctx=16,
        d_vocab=50,
        act_fn="gelu",
        normalization_type="LNPre",
        seed=0,
        device="cpu",
    )
    model = HookedTransformer(cfg, move_to_device=False)
    tokens = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        measure_sinks(model, tokens, bos=False)  # raw weights: no warning
    with torch.no_grad():
        model.embed.W_E.sub_(model.embed.W_E.mean(dim=-1, keepdim=True))
    with pytest.warns(UserWarning, match="centred writing weights.*from_pretrained_no_processing"):
        measure_sinks(model, tokens, bos=False)


def test_a_folder_without_a_tokenizer_says_so(tmp_path):
    """transformers gives a folder without tokenizer files an empty tokenizer; the loader names
    what is missing and how to add it instead of failing later on a 0-token text."""
    from circuits.zoo.convert import load_hf_tokenizer

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="has no tokenizer.*save_pretrained"):
        load_hf_tokenizer(tmp_path)
    tokenizer().save_pretrained(tmp_path)
    assert len(load_hf_tokenizer(tmp_path)) > 0


def test_learned_positions_at_p0_are_a_site(own):
    """pos_embed@p0 under shift is "P0 with position 1's embedding": equal to a plain hook loop
    writing W_pos[1] into position 0; models without a learned embedding refuse it by name."""
    from circuits.zoo import tiny_model

    tokens = prompt_set(own, n_prompts=3, n_tokens=12, bos=False)
    res = Patcher(own, tokens, "shift").patch([Site("pos_embed")], SinkScore([1, 2]))
    store = {}

    def setter(act, hook):
        act[:, 0] = own.W_pos[1]
        return act

    def keep(act, hook):
        store[hook.layer()] = float(act[..., 0].mean())

    with torch.no_grad():
        own.run_with_hooks(
            tokens,
            fwd_hooks=[("hook_pos_embed", setter)]
            + [(f"blocks.{la}.attn.hook_pattern", keep) for la in (1, 2)],
        )
    assert res.names == ["pos_embed@p0"]
    assert float(res.values[0]) == pytest.approx((store[1] + store[2]) / 2, abs=1e-6)
    rotary = tiny_model(seed=0, n_layers=2)
    with pytest.raises(UsageError, match="no pos_embed to patch"):
        Patcher(rotary, tokens % 200).patch([Site("pos_embed")], SinkScore([1]))


@pytest.fixture(scope="module")
def synthetic():
    """A model of one's own with a synthetic-task tokenizer: it cannot tokenize English."""
    from circuits.training.tasks import SyntheticTokenizer

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=32, d_vocab=24,
        act_fn="gelu", normalization_type="LN", model_name="own-2L-synthetic", seed=0,
        device="cpu",
    )  # fmt: skip
    model = HookedTransformer(cfg, move_to_device=False)
    return ZooModel(
        name="own-2L-synthetic",
        model=model,
        tokenizer=SyntheticTokenizer(24, bos_token_id=0),
        bos_token_id=0,
        natural_bos=False,
        source="built in the test",
    )


def test_write_result_is_all_or_nothing_and_its_fix_works(synthetic, tmp_path, capsys):
    from circuits.cli import main
    from circuits.viz.report import build_report

    tokens = torch.randint(1, 24, (2, 12), generator=torch.Generator().manual_seed(0))
    report = measure_sinks(synthetic.model, tokens, bos=False)
    record = {"model": "own-2L-synthetic", "args": {"text": None}, **report.to_dict()}
    out = tmp_path / "m"
    # the views re-tokenize the default English text, which this tokenizer refuses
    with pytest.raises(UsageError, match="token_ids"):
        write_result(out, "measure", record, zm=synthetic)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing left behind
    # without a model: no views, and the report says how to add them for a Python-built model
    write_result(out, "measure", record)
    assert not (out / "views.json").exists()
    assert "build_report(DIR, zm=model)" in (out / "report.html").read_text()
    # the CLI cannot load this model by name and says what works instead
    assert main(["render", str(out), "--views", "--quiet"]) == 2
    assert "build_report(DIR, zm=model)" in capsys.readouterr().err
    # ... which is refused for the same reason until the record names its prompt's ids
    with pytest.raises(UsageError, match="token_ids"):
        build_report(out, zm=synthetic)
    assert not (out / "views.json").exists()
    ids = tokens[0].tolist()
    write_result(out, "measure", {**record, "token_ids": ids}, zm=synthetic, overwrite=True)
    views = json.loads((out / "views.json").read_text())
    assert views["tokens"][: len(ids)] == synthetic.str_tokens(tokens[0])
    with pytest.raises(UsageError, match="overwrite"):  # an existing folder is kept whole
        write_result(out, "measure", record)
    assert (out / "views.json").is_file()


def test_discover_records_whether_p0_is_bos_itself(own, tmp_path):
    """A discovery of one's own model says whether P0 held the tokenizer's BOS (the notebook
    used to add ``"bos"`` to the record by hand before saving)."""
    from circuits import DiscoverConfig, discover

    config = DiscoverConfig(progress=False, curve=False, prediction_random_sets=0)
    bos = own.tokenizer.bos_token_id
    with_bos = prompt_set(own, n_prompts=2, n_tokens=10, bos=True)
    without = with_bos.clone()
    without[:, 0] = (bos + 1) % own.cfg.d_vocab
    # (prompts that disagree cannot be made here: this tokenizer's BOS is also its pad token)
    for tokens, want in ((with_bos, True), (without, False)):
        found = discover(own, tokens, config, model_name="own-3L")
        assert found.record["bos"] is want
    found.save(tmp_path / "d")
    saved = json.loads((tmp_path / "d" / "circuit.json").read_text())
    assert saved["graph"]["bos"] is False  # the last discovery: no BOS at P0
    found = discover(own, with_bos, config, model_name="own-3L")
    found.save(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "circuit.json").read_text())["graph"]["bos"] is True
