"""The ``p0-circuits`` command: one module per subcommand in this package.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import nothing heavy at module level, so ``--help`` and every check of the
arguments (flags, paths, model names) answer before torch or TransformerLens is imported; the
model libraries are imported inside ``run`` once the input is known to be good.

Bad input raises ``UsageError``: the command prints a one-line reason and exits 2, leaving
nothing half-written.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from circuits.core.errors import UsageError

COMMANDS = ("models", "measure", "discover", "render", "train", "trace")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p0-circuits",
        description="Find and measure the position-zero attention-sink circuit (P0 Sink Circuit).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"circuits.cli.{name}")
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args._command_line = shlex.join(["p0-circuits", *argv])
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        print(f"p0-circuits {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"p0-circuits {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
