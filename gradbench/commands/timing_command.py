"""``gradbench timing``: seconds per epoch, step and gradient, examples per second, speed-ups.

Each estimator is one cell of the result store (experiment ``timing``); the speed-ups between
the estimators of a run are derived from those cells and stored as one more cell per estimator,
recomputed on every run. Metric names and conventions: :mod:`gradbench.measure.timing`.
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
from gradbench.experiments.metrics import SECONDS_PER_EPOCH, SPEEDUP
from gradbench.measure.timing import TimingConfig, timing_tasks


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "timing", help="wall-clock per epoch, step and gradient of each estimator"
    )
    add_setting_args(parser, estimators_flag="--estimators")
    defaults = TimingConfig()
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(100)")
    parser.add_argument(
        "--steps",
        type=int,
        help="time N steps per repeat and scale to an epoch (default: a full epoch)",
    )
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="timed repeats (5)")
    parser.add_argument(
        "--warmup-steps", type=int, default=defaults.warmup_steps, help="untimed steps first (5)"
    )
    add_format(parser, FORMATS, "table")
    parser.set_defaults(run=run)


def timing_table(frame: pd.DataFrame) -> str:
    """One line per estimator: each timing metric as median [min–max]; then the speed-ups."""
    main = frame[frame["metric"] != SPEEDUP]
    lines = []
    for estimator, rows in main.groupby("estimator", sort=False):
        line = {"estimator": estimator}
        for row in rows.itertuples():
            line[row.metric] = f"{row.value:.4g} [{row.ci_low:.4g}–{row.ci_high:.4g}]"
        first = rows.iloc[0]
        line |= {"n": first["n"], "steps_timed": first["steps_timed"]}
        per_epoch = rows[rows["metric"] == SECONDS_PER_EPOCH]
        line["extrapolated"] = bool(per_epoch["extrapolated"].iloc[0])
        line["status"] = first["status"]
        lines.append(line)
    text = tabulate(lines, headers="keys", tablefmt="github")
    speedups = frame[frame["metric"] == SPEEDUP]
    if not speedups.empty:
        order = list(dict.fromkeys(speedups["estimator"]))
        matrix = speedups.pivot_table(
            index="estimator", columns="param_group", values="value", sort=False
        ).reindex(index=order, columns=order)
        for name in order:
            matrix.loc[name, name] = 1.0
        text += "\n\nspeed-up (seconds per epoch of the column ÷ that of the row):\n"
        text += tabulate(matrix, headers="keys", tablefmt="github", floatfmt=".3g")
    return text


def run(args: argparse.Namespace) -> int:
    fmt = output_format(args)
    names = estimator_list(args, args.model)
    config = TimingConfig(args.batch_size, args.steps, args.repeats, args.warmup_steps)
    device = resolve_device(args.device)
    data = data_config(args)  # a bad dataset or folder exits before the results are touched
    check_results(args, ("timing",))
    dataset = load_data(data, device)
    check_model(args, dataset)
    tasks = [
        task
        for seed in seeds(args)
        for task in timing_tasks(setting(args, names, seed), names, dataset, device, config,
                                 args.profile)
    ]
    frame, status = run_here(args, tasks, dataset, device)
    emit_rows(frame, fmt, timing_table(frame) if fmt == "table" else "")
    return status
