"""What several commands share: their common flags, the checks that run before any model library
is imported, and the provenance header of what they write."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuits.core.conventions import (
    COUNTERFACTUAL_SPECS,
    DTYPES,
    parse_counterfactual_spec,
    parse_readout_spec,
)
from circuits.core.errors import UsageError
from circuits.core.provenance import provenance
from circuits.zoo.gguf_file import check_gguf
from circuits.zoo.names import resolve_model
from circuits.zoo.pins import DEFAULT_MODEL

if TYPE_CHECKING:
    from circuits.zoo.model import ZooModel


def counterfactual_spec(text: str) -> str:
    """``--counterfactual``: a spec checked before any model loads (the token resolves later)."""
    try:
        parse_counterfactual_spec(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def readout_spec(text: str) -> str:
    """``discover --readout``: a spec checked before any model loads (tokens resolve later)."""
    try:
        parse_readout_spec(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


COUNTERFACTUAL_HELP = "; ".join(f"{k}: {v}" for k, v in COUNTERFACTUAL_SPECS.items())


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"zoo name, local path or TransformerLens name (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model and every tensor live: cpu, cuda, cuda:N or auto (default auto: "
        "the first GPU when torch sees one, else the CPU)",
    )
    parser.add_argument(
        "--n-devices",
        type=int,
        default=1,
        help="split the model's layers over this many GPUs from --device (default 1)",
    )
    add_dtype(parser)


def add_dtype(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="the precision the model runs in (default float32); readouts, effects and "
        "faithfulness are reduced in float32 whatever it is",
    )


def add_prompt_set(parser: argparse.ArgumentParser) -> None:
    """``--n-prompts``, ``--n-tokens`` and ``--text``: the prompt set (``circuits.prompts.prompt_set``)."""
    parser.add_argument("--n-prompts", type=int, default=8, help="prompts (default 8)")
    parser.add_argument("--n-tokens", type=int, default=64, help="tokens per prompt (default 64)")
    parser.add_argument(
        "--text", type=Path, default=None, help="UTF-8 text for the prompts (default: shipped text)"
    )


def add_bos(parser: argparse.ArgumentParser, default_help: str) -> None:
    bos = parser.add_mutually_exclusive_group()
    bos.add_argument("--bos", dest="bos", action="store_true", default=None, help=default_help)
    bos.add_argument(
        "--no-bos", dest="bos", action="store_false", help="the text's first token at position 0"
    )


def add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory (must not exist)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out whole (it is never mixed with new files)",
    )


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def check_model(name: str, device: str = "auto", n_devices: int = 1) -> None:
    """Fail now, before torch is imported, when ``name`` resolves to no model (or to a local
    GGUF file that is not one or is cut short), ``device`` is not a device name, or
    ``n_devices`` is below 1 or asks the CPU to split."""
    spec = resolve_model(name)
    if spec.kind == "gguf" and spec.path is not None:
        check_gguf(spec.path)
    check_device(device)
    check_range("--n-devices", n_devices, 1)
    if n_devices > 1 and device == "cpu":
        raise UsageError(
            f"--n-devices {n_devices} splits a model across GPUs; use --device cuda with it"
        )


def check_device(device: str) -> None:
    """``cpu``, ``auto``, ``cuda`` or ``cuda:N``: a one-line error naming the flag otherwise."""
    if device in ("cpu", "auto", "cuda") or re.fullmatch(r"cuda:\d+", device):
        return
    raise UsageError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}")


def check_text(path: Path | None) -> None:
    if path is not None and not Path(path).is_file():
        raise UsageError(f"text file {path} does not exist; pass an existing --text FILE")


def check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    """``low <= value`` (and ``<= high``): a one-line error naming the flag otherwise."""
    if value != value or value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"in [{low}, {high}]"
        raise UsageError(f"{name} must be {bound}, got {value}")


def header(args: argparse.Namespace, command: str, seed: int | None, model: str) -> dict[str, Any]:
    """The provenance every output file carries, with the exact command line that made it."""
    prov = provenance(command, vars(args), seed, model)
    prov["command_line"] = getattr(args, "_command_line", None)
    return prov


def model_header(zm: ZooModel) -> dict[str, Any]:
    """Which model a record describes: its zoo name, where it came from, and what it is exactly
    (e.g. "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)")."""
    return {
        "model_source": zm.source,
        "model_description": zm.description or zm.name,
        "dtype": str(zm.model.cfg.dtype).removeprefix("torch."),
    }


def load_for(args: argparse.Namespace) -> tuple[ZooModel, bool]:
    """Seed torch with ``--seed``, load ``--model``, and decide BOS at position 0: ``--bos`` /
    ``--no-bos``, else the model's training regime."""
    import torch

    from circuits.zoo.load import load_model

    torch.manual_seed(args.seed)
    zm = load_model(
        args.model,
        progress=not args.quiet,
        device=args.device,
        dtype=args.dtype,
        n_devices=args.n_devices,
    )
    return zm, (zm.natural_bos if args.bos is None else args.bos)
