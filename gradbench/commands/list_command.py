"""``gradbench list``: estimators, models, datasets, experiments, profiles, toy problems and
which estimator applies where: every registry, plugins' entries included."""

from __future__ import annotations

import argparse
import json
import os
import sys

import pandas as pd
from tabulate import tabulate

from gradbench.catalogue import (
    applicability,
    dataset_table,
    estimator_table,
    model_table,
    problem_table,
)
from gradbench.commands.common import add_format, output_format
from gradbench.experiments.registry import experiment_table
from gradbench.profiles import profile_table


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="list estimators, models, datasets, experiments, "
                                   "profiles and toy problems")
    add_format(parser, ("table", "json"), "table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the registry; a reader that stops early (``list | head -1``) ends it quietly."""
    try:
        status = _print(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader is gone: later writes (the interpreter's final flush) go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


def _print(args: argparse.Namespace) -> int:
    fmt = output_format(args)
    matrix = applicability()
    tables = {
        "estimators": estimator_table(),
        "models": model_table(),
        "datasets": dataset_table(),
        "experiments": experiment_table(),
        "profiles": pd.DataFrame(profile_table()),
        "problems": problem_table(),
        "applicability": matrix,
    }
    if fmt == "json":
        print(json.dumps({k: v.to_dict(orient="records") for k, v in tables.items()}, indent=2))
        return 0
    for title, frame in tables.items():
        print(f"\n{title.capitalize()}\n")
        print(tabulate(frame, headers="keys", tablefmt="github", showindex=False))
    return 0
