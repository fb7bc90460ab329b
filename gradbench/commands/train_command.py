"""``gradbench train``: train a model with estimators; ELBO (and more) per epoch, resumable.

Each estimator is one cell of the result store (experiment ``train``), holding every epoch's
rows; an interrupted cell resumes from its per-epoch checkpoint under ``RESULTS/resume``.
Metric names and conventions: :mod:`gradbench.measure.training`.
"""

from __future__ import annotations

import argparse

import pandas as pd
from tabulate import tabulate

from gradbench.commands.common import (
    FORMATS,
    add_format,
    add_setting_args,
    check_model,
    check_results,
    data_config,
    emit_rows,
    estimator_list,
    load_data,
    output_format,
    run_here,
    seeds,
    setting,
)
from gradbench.device import resolve_device
from gradbench.measure.training import EvalConfig, TrainConfig, training_tasks
from gradbench.profiles import setting_default


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model with estimators: ELBO, bounds and error per epoch"
    )
    add_setting_args(parser, estimators_flag="--estimator")
    defaults, evaluation = TrainConfig(), EvalConfig()
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="(50, the thesis)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(100)")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="Adam (3e-4)")
    parser.add_argument(
        "--lr-decay",
        type=float,
        default=defaults.lr_decay,
        help="multiply the learning rate by this after every epoch (1: constant)",
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=evaluation.samples,
        help="draws per example of the expected log-likelihood (1)",
    )
    parser.add_argument(
        "--iw-samples",
        type=int,
        default=setting_default("eval_iw_samples"),
        help="k of the importance-weighted bound on the test set (%(default)s)",
    )
    parser.add_argument(
        "--iw-every",
        type=int,
        default=evaluation.iw_every,
        help="also compute the iw bound every N epochs (0: epoch 0 and the last only)",
    )
    parser.add_argument(
        "--eval-subset",
        type=int,
        help="evaluate the training ELBO on the first N training examples",
    )
    parser.add_argument(
        "--iw-subset",
        type=int,
        help="compute the iw bound on the first N test examples (default: all)",
    )
    parser.add_argument(
        "--eval-chunk",
        type=int,
        default=evaluation.chunk_size,
        help="examples per evaluation call, to bound memory (500)",
    )
    add_format(parser, FORMATS, "table")
    parser.set_defaults(run=run)


def training_table(frame: pd.DataFrame) -> str:
    """One line per estimator and epoch, one column per metric[split]."""
    labels = frame["metric"] + "[" + frame["param_group"].astype(str) + "]"
    wide = (
        frame.assign(column=labels)
        .pivot_table(index=["estimator", "epoch"], columns="column", values="value", sort=False)
        .reset_index()
    )
    status = frame.groupby(["estimator", "epoch"], sort=False)["status"].agg(
        lambda s: "diverged" if (s == "diverged").any() else "ok"
    )
    wide = wide.merge(status.reset_index(), on=["estimator", "epoch"])
    return tabulate(wide, headers="keys", tablefmt="github", floatfmt=".5g", showindex=False)


def run(args: argparse.Namespace) -> int:
    fmt = output_format(args)
    names = estimator_list(args, args.model)
    config = TrainConfig(args.epochs, args.batch_size, args.lr, args.lr_decay)
    evaluation = EvalConfig(
        args.eval_samples, args.iw_samples, args.iw_every, args.eval_subset, args.eval_chunk,
        args.iw_subset,
    )
    device = resolve_device(args.device)
    data = data_config(args)  # a bad dataset or folder exits before the results are touched
    check_results(args, ("train",))
    dataset = load_data(data, device)
    check_model(args, dataset)
    tasks = [
        task
        for seed in seeds(args)
        for task in training_tasks(setting(args, names, seed), names, dataset, device, config,
                                   evaluation, args.profile)
    ]
    frame, status = run_here(args, tasks, dataset, device)
    emit_rows(frame, fmt, training_table(frame) if fmt == "table" else "")
    return status
