"""The ``p0-circuits`` command: one module per subcommand in this package.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import nothing heavy at module level, so ``--help`` and every check of the
arguments (flags, paths, model names) answer before torch or TransformerLens is imported; the
model libraries are imported inside ``run`` once the input is known to be good.

How a command ends:

* success: exit 0;
* bad input (``UsageError``): one line naming the value and the fix, exit 2, nothing written;
* a file the system would not write (full disk, permissions): one line naming the file, exit 1;
* anything else (a bug): one line naming the error and where it happened, exit 1; ``--debug``
  (or ``P0_CIRCUITS_DEBUG=1``) shows the whole traceback instead;
* Ctrl-C: exit 130. In every failing case no output folder is left half-written.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import traceback

from circuits.core.errors import UsageError

COMMANDS = (
    "models",
    "plan",
    "measure",
    "discover",
    "accounts",
    "render",
    "train",
    "trace",
    "sweep",
)
COMMAND_MODULES = {name: f"circuits.cli.{name}" for name in COMMANDS} | {
    # sweep sits above the CLI (it builds, checks and runs p0-circuits command lines), so its
    # command module lives in circuits.sweep and is registered here by name
    "sweep": "circuits.sweep.command",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p0-circuits",
        description="Find and measure the position-zero attention-sink circuit (P0 Sink Circuit).",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an unexpected error (also: P0_CIRCUITS_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(COMMAND_MODULES[name])
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the full traceback",
        )
        command.set_defaults(run_command=module.run)
    return parser


def _where(err: BaseException) -> str:
    """``file:line`` where ``err`` was raised."""
    frames = traceback.extract_tb(err.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    run_command = args.run_command
    del args.run_command  # the arguments alone go into provenance
    args._command_line = shlex.join(["p0-circuits", *argv])
    debug = args.debug or os.environ.get("P0_CIRCUITS_DEBUG") == "1"
    prefix = f"p0-circuits {args.command}"
    try:
        return int(run_command(args) or 0)
    except UsageError as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stderr.close()
        return 0
    except OSError as err:
        if debug:
            raise
        name = f" {err.filename}" if err.filename else ""
        print(f"{prefix}: error: cannot use{name}: {err.strerror or err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        print(
            f"{prefix}: internal error: {type(err).__name__}: {err} (at {_where(err)}); "
            "rerun with --debug for the traceback",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
