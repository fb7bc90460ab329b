"""``gradbench toy``: estimators' draws on a toy problem against the exact gradient."""

from __future__ import annotations

import argparse
import json

from tabulate import tabulate

from gradbench.commands.common import add_format, key_values, output_format
from gradbench.estimators import make_estimator, split_labels
from gradbench.measure.toy import ToyResult, check_applicable, check_samples, run_toy
from gradbench.models.toy import make_problem


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "toy", help="estimators on a toy problem with a closed-form gradient"
    )
    parser.add_argument("--problem", required=True, help="toy problem name (see `list`)")
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument(
        "--estimator", help="estimator or variant NAME[KEY=VALUE,...] (see `list`)"
    )
    chosen.add_argument(
        "--estimators", help="comma-separated estimators or variants NAME[KEY=VALUE,...]"
    )
    parser.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="problem parameter; vectors as 1,2,3"
    )
    parser.add_argument(
        "--estimator-arg", action="append", metavar="KEY=VALUE",
        help="estimator hyperparameter, for every chosen estimator",
    )
    parser.add_argument("--samples", type=int, default=10_000, help="gradient draws (10000)")
    parser.add_argument("--seed", type=int, default=0)
    add_format(parser, ("table", "json"), "table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fmt = output_format(args)
    problem = make_problem(args.problem, key_values(args.param, "--param"))
    labels = split_labels(args.estimators) if args.estimators else [args.estimator]
    options = key_values(args.estimator_arg, "--estimator-arg")
    estimators = [make_estimator(label, options) for label in labels]
    for estimator in estimators:
        check_applicable(problem, estimator)
    check_samples(problem, args.samples)
    results = [run_toy(problem, e, samples=args.samples, seed=args.seed) for e in estimators]
    if fmt == "json":
        payload = [r.as_dict() for r in results]
        print(json.dumps(payload[0] if args.estimator else payload))
        return 0
    for result in results:
        print_result(result)
    return 0


def print_result(result: ToyResult) -> None:
    """One estimator's draws against the exact gradient, a line per coordinate."""
    rows = [
        {
            "parameter": f"{name}[{i}]",
            "exact": exact,
            "mean": result.mean[name][i],
            "stderr": result.stderr[name][i],
            "z": (result.mean[name][i] - exact) / result.stderr[name][i]
            if result.stderr[name][i] > 0
            else float("nan"),
            "variance": result.variance[name][i],
        }
        for name, values in result.exact.items()
        for i, exact in enumerate(values)
    ]
    print(f"{result.problem} / {result.estimator}: {result.samples} draws, params {result.params}")
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".6g"))
