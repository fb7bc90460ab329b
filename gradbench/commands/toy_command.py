"""``gradbench toy``: an estimator's draws on a toy problem against the exact gradient."""

from __future__ import annotations

import argparse
import json

from tabulate import tabulate

from gradbench.commands.common import add_format, key_values, output_format
from gradbench.estimators import make_estimator
from gradbench.measure.toy import check_applicable, run_toy
from gradbench.models.toy import make_problem


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "toy", help="an estimator on a toy problem with a closed-form gradient"
    )
    parser.add_argument("--problem", required=True, help="toy problem name (see `list`)")
    parser.add_argument("--estimator", required=True, help="estimator name (see `list`)")
    parser.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="problem parameter; vectors as 1,2,3"
    )
    parser.add_argument(
        "--estimator-arg", action="append", metavar="KEY=VALUE", help="estimator hyperparameter"
    )
    parser.add_argument("--samples", type=int, default=10_000, help="gradient draws (10000)")
    parser.add_argument("--seed", type=int, default=0)
    add_format(parser, ("table", "json"), "table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fmt = output_format(args)
    problem = make_problem(args.problem, key_values(args.param, "--param"))
    estimator = make_estimator(args.estimator, key_values(args.estimator_arg, "--estimator-arg"))
    check_applicable(problem, estimator)
    result = run_toy(problem, estimator, samples=args.samples, seed=args.seed)
    if fmt == "json":
        print(json.dumps(result.as_dict()))
        return 0
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
    return 0
