"""The TransformerLens 3 side of the parity: ``python -m tests.parity.reference OUT [--only NAME]``
writes, for every structure of ``tests/_variants.py`` (and SmolLM2 from its GGUF with
``--only smollm2``), the config fields, the weights, the tokens and ``parity_numbers`` to
``OUT/<index>.pt``; the TransformerLens 4 side (``test_tl4_parity``) loads the same weights into
a bridge and compares. Runs on TransformerLens 3.x only."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from circuits.backend import ON_BRIDGE
from tests import _variants
from tests.parity.numbers import parity_numbers

SMOLLM2_TEXTS = (
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "In 1905 Einstein published four papers that changed physics for ever after.",
)
N_SMOLLM2_TOKENS = 12


def variant_model(name: str):
    """The variant's tiny model, with gated-MLP biases zeroed: a gated MLP has no biases in any
    real family, and TransformerLens 4's gated MLP has no place for them."""
    model = _variants.build(name)
    if model.cfg.gated_mlp:
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if ".mlp.b_" in pname:
                    p.zero_()
    return model


def smollm2_tokens(tokenizer) -> torch.Tensor:
    """Two texts, ``N_SMOLLM2_TOKENS`` tokens each, no BOS."""
    rows = [
        tokenizer(t, add_special_tokens=False)["input_ids"][:N_SMOLLM2_TOKENS]
        for t in SMOLLM2_TEXTS
    ]
    return torch.tensor(rows)


def write_variants(out: Path, only: str | None) -> None:
    for i, name in enumerate(_variants.VARIANTS):
        if only is not None and only != name:
            continue
        model = variant_model(name)
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(1, model.cfg.d_vocab, (3, 10), generator=gen)
        fields = {**_variants.BASE, **_variants.VARIANTS[name]}
        torch.save(
            {
                "name": name,
                "fields": fields,
                "state_dict": model.state_dict(),
                "tokens": tokens,
                "numbers": parity_numbers(model, tokens),
            },
            out / f"{i:02d}.pt",
        )
        print(f"{i:02d} {name}", flush=True)


def write_smollm2(out: Path) -> None:
    from circuits.zoo.load import load_model

    zm = load_model("smollm2-135m")
    tokens = smollm2_tokens(zm.tokenizer)
    torch.save(
        {"name": "smollm2-135m", "tokens": tokens, "numbers": parity_numbers(zm.model, tokens)},
        out / "smollm2.pt",
    )
    print("smollm2-135m", flush=True)


def main() -> None:
    if ON_BRIDGE:
        raise SystemExit("tests.parity.reference runs on TransformerLens 3.x (the reference side)")
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", default=None, help="one variant name, or smollm2")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only == "smollm2":
        write_smollm2(args.out)
    else:
        write_variants(args.out, args.only)


if __name__ == "__main__":
    main()
