"""A tiny command dispatcher that imports a command's module only when that command runs.

``maskwatch --help`` must start fast and without TensorFlow, so the top-level parser knows
only names and one-line helps; the chosen command's module adds its own arguments.
Each command module provides ``add_arguments(parser)`` and ``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# A command table maps a name either to (module path, help) or to a nested table (help, table).
Commands = dict[str, "tuple[str, str] | tuple[str, dict]"]


def _add(sub: argparse._SubParsersAction, table: Commands, argv: Sequence[str], prefix: str) -> None:
    for name, (first, second) in table.items():
        selected = bool(argv) and argv[0] == name
        if isinstance(second, dict):
            p = sub.add_parser(name, help=first, description=first)
            nested = p.add_subparsers(dest=f"{prefix}{name}_command", metavar="COMMAND", required=True)
            _add(nested, second, argv[1:] if selected else (), f"{prefix}{name}_")
        else:
            p = sub.add_parser(name, help=second, description=second)
            if selected:
                module = importlib.import_module(first)
                module.add_arguments(p)
                p.set_defaults(_main=module.main)


def parse(prog: str, description: str, table: Commands, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` against the command table (the chosen command's module adds its arguments)."""
    argv = list(argv)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add(sub, table, _command_path(argv), "")
    return parser.parse_args(argv)


def run(prog: str, description: str, table: Commands, argv: Sequence[str] | None = None) -> int:
    args = parse(prog, description, table, sys.argv[1:] if argv is None else argv)
    import logging

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as Unix tools do. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (FileNotFoundError, ValueError, RuntimeError, PermissionError) as exc:
        # Expected failures (bad input, missing files) end with one clear line, no traceback.
        if args.verbose:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def _command_path(argv: list[str]) -> list[str]:
    """The argv tail starting at the command name: global options before it (like -v) are skipped."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    return argv[i:]
