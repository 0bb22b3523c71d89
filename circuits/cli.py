"""The ``p0-circuits`` command: one subcommand per module in ``circuits.commands``.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Bad input raises ``UsageError`` (or one of the toolkit's ``P0Error`` subclasses): the command
prints a one-line reason and exits 2, leaving nothing half-written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from circuits.errors import P0Error

COMMAND_MODULES = ["models", "measure", "discover", "render", "train", "trace"]


def _load_commands():
    commands = []
    for name in COMMAND_MODULES:
        try:
            commands.append(importlib.import_module(f"circuits.commands.{name}"))
        except ModuleNotFoundError as err:
            if err.name != f"circuits.commands.{name}":
                raise
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p0-circuits",
        description="Find and measure the position-zero attention-sink circuit (P0 Sink Circuit).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _load_commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except P0Error as err:
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
