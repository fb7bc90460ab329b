"""Command-line entry point: ``python -m gradbench COMMAND``.

Each command lives in ``gradbench.commands`` as a module with ``add_parser(subparsers)`` and
``run(args) -> int``. Bad input (an unknown name, a malformed option) exits with status 2 and a
single line that names the valid choices, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from gradbench.commands import COMMANDS
from gradbench.commands.common import one_line
from gradbench.data import DataNotFoundError
from gradbench.device import torch_threads
from gradbench.execution.process_pool import one_line_warning


class UsageError(ValueError):
    """Bad command-line input; reported as one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered command."""
    parser = _Parser(
        prog="gradbench",
        description="Benchmark and gradient-variance analysis of Monte Carlo gradient estimators.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status. Warnings print as
    one line each."""
    warnings.formatwarning = one_line_warning
    args = build_parser().parse_args(argv)
    try:
        policy = getattr(args, "threads_for", None)
        with torch_threads(policy(args) if policy else None):
            return int(args.run(args))
    except DataNotFoundError as error:
        # Several lines on purpose: every place looked in, and how to provide the files.
        print(f"gradbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, LookupError) as error:
        # One line, every reason kept (a rejected data file's several lines joined).
        print(f"gradbench {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
