"""Provenance: the header every output file carries (model, command, args, seed, versions)."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path
from typing import Any


def versions() -> dict[str, str]:
    """Versions of everything that can change a number."""
    from circuits import __version__

    return {
        "p0_circuits": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": importlib.metadata.version("torch"),
        "transformer_lens": importlib.metadata.version("transformer-lens"),
        "transformers": importlib.metadata.version("transformers"),
    }


def provenance(command: str, args: dict[str, Any], seed: int | None, model: str) -> dict[str, Any]:
    """The header every output file carries: model, command, args, seed and versions."""
    clean_args = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in args.items() if not k.startswith("_")
    }
    return {
        "model": model,
        "command": command,
        "args": clean_args,
        "seed": seed,
        "versions": versions(),
    }
