"""``gradbench variance``: variance, noise/data split and SNR of minibatch gradients."""

from __future__ import annotations

import argparse
import math

import pandas as pd
from tabulate import tabulate

from gradbench.catalogue import check_applicable
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
from gradbench.experiments.metrics import GRAD_VARIANCE, GRAD_VARIANCE_NOISE, SNR
from gradbench.measure.checkpoints import TrainingConfig
from gradbench.measure.variance_stats import INTERVAL_METHOD
from gradbench.measure.variance import EXPERIMENT, GRADIENT_CONVENTION, variance_tasks
from gradbench.measure.variance_stats import SLOPE_METRIC
from gradbench.models import MODELS
from gradbench.profiles import setting_default

MIN_BOOTSTRAP = 2
"""Fewest bootstrap replicates of an interval: its ends are quantiles of the replicates, which
one replicate collapses to a point (and none leaves undefined)."""

SUMMARY_GROUPS = ("bottom", "top", "all")
"""Groups the table shows (Kingma et al.'s Table 1 reports bottom and top); JSON/CSV have all."""


def _int_list(text: str, flag: str, minimum: int) -> list[int]:
    """Comma-separated integers >= ``minimum``; ValueError naming the flag otherwise."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < minimum:
        raise ValueError(f"{flag} needs integers >= {minimum}, got {text!r}")
    return list(dict.fromkeys(values))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "variance",
        help="gradient variance per estimator, batch size and layer at trained checkpoints",
        description=f"Draws R minibatch gradients ({GRADIENT_CONVENTION}) per estimator and "
        "batch size at checkpoints trained with a reference estimator; reports per parameter "
        "group the mean per-parameter variance, its trace, the noise/data split, the SNR and the "
        "slope of log variance against log batch size, with 95% intervals.",
    )
    add_setting_args(parser)
    parser.add_argument(
        "--batch-sizes",
        default=",".join(map(str, setting_default("variance_batch_sizes"))),
        help="comma-separated minibatch sizes M (default %(default)s)",
    )
    parser.add_argument(
        "--draws",
        type=int,
        default=setting_default("variance_draws"),
        help="gradient draws R per estimator and batch size (default %(default)s)",
    )
    parser.add_argument(
        "--noise-draws",
        type=int,
        default=setting_default("variance_noise_draws"),
        help="noise draws K per minibatch: R/K minibatches (default %(default)s; 1: no split)",
    )
    parser.add_argument(
        "--at-epochs",
        default=",".join(map(str, setting_default("variance_epochs"))),
        help="comma-separated training epochs of the checkpoints (default %(default)s)",
    )
    parser.add_argument(
        "--reference-estimator",
        help="estimator that trains the checkpoints (default: the model's reference estimator; "
        "--estimator-arg options apply to it too)",
    )
    parser.add_argument(
        "--train-batch-size",
        type=int,
        default=setting_default("checkpoint_batch_size"),
        help="minibatch size of checkpoint training (default %(default)s)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=setting_default("checkpoint_learning_rate"),
        help="Adam step size of checkpoint training (default %(default)s)",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        help="cap on optimizer steps per training epoch (default: full passes)",
    )
    parser.add_argument(
        "--horizon-epochs",
        type=int,
        help="length of the training run the checkpoints belong to, over which annealing "
        "schedules run (default: the last checkpoint epoch)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=setting_default("variance_replicates"),
        help="bootstrap replicates of each interval (default %(default)s)",
    )
    parser.add_argument(
        "--no-vmap", action="store_true", help="draw in a Python loop instead of torch.func.vmap"
    )
    add_format(parser, FORMATS, "table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fmt = output_format(args)
    names = estimator_list(args, args.model)
    reference = args.reference_estimator or MODELS[args.model].reference_estimator
    check_applicable(reference, args.model)
    if args.bootstrap < MIN_BOOTSTRAP:
        raise ValueError(f"--bootstrap needs at least {MIN_BOOTSTRAP} replicates for an "
                         f"interval, got {args.bootstrap}")
    batch_sizes = _int_list(args.batch_sizes, "--batch-sizes", 1)
    epochs = _int_list(args.at_epochs, "--at-epochs", 0)
    training = TrainingConfig(
        args.train_batch_size,
        args.learning_rate,
        args.steps_per_epoch,
        args.horizon_epochs or max(1, *epochs),
    )
    device = resolve_device(args.device)
    data = data_config(args)  # a bad dataset or folder exits before the results are touched
    check_results(args, ("variance",))
    dataset = load_data(data, device)
    check_model(args, dataset)
    # --estimator-arg reaches the reference estimator too (it trains the checkpoints).
    everyone = list(dict.fromkeys([*names, reference]))
    tasks = [
        task
        for seed in seeds(args)
        for task in variance_tasks(
            setting(args, everyone, seed), names, batch_sizes, args.draws, epochs, dataset,
            device, args.results, args.profile, noise_draws=args.noise_draws,
            reference_estimator=reference, training=training, replicates=args.bootstrap,
            vectorize=not args.no_vmap,
        )
    ]
    frame, status = run_here(args, tasks, dataset, device)
    frame["batch_size"] = frame["batch_size"].astype("Int64")  # empty for the slope rows
    emit_rows(frame, fmt, _table(frame, args) if fmt == "table" else "")
    return status


def _interval(row: pd.Series) -> str:
    if not math.isfinite(row["value"]):
        return row["status"]
    if not (math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"])):
        return f"{row['value']:.3g}"
    return f"{row['value']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}]"


def _table(frame: pd.DataFrame, args: argparse.Namespace) -> str:
    """Human-readable summary: per epoch, estimator and M the variance of the shown groups."""
    rows = frame[(frame["experiment"] == EXPERIMENT) & frame["param_group"].isin(SUMMARY_GROUPS)]
    if rows.empty:
        return "no variance rows for the groups " + ", ".join(SUMMARY_GROUPS)
    first = rows.iloc[0]
    lines = [
        (
            f"Gradient variance: {first['model']} on {first['dataset']}, {args.draws} draws per "
            f"cell ({args.draws // args.noise_draws} minibatches x {args.noise_draws} noise draws)."
        ),
        (
            f"Convention: {GRADIENT_CONVENTION}; variance = mean over a group's parameters of the "
            f"per-parameter variance; 95% intervals: {INTERVAL_METHOD}."
        ),
        (
            "noise = E_B[Var(g|B)], data = Var_B(E[g|B]) (shares of the variance); "
            "SNR = root mean square over the group's random parameters of |E g| / std g, its square "
            "debiased."
        ),
        "",
    ]
    sized = rows[rows["metric"] != SLOPE_METRIC]
    table = []
    for (epoch, estimator, size, group), part in sized.groupby(
        ["epoch", "estimator", "batch_size", "param_group"], sort=False
    ):
        by_metric = {r["metric"]: r for _, r in part.iterrows()}
        variance = by_metric[GRAD_VARIANCE]
        entry = {
            "epoch": int(epoch),
            "estimator": estimator,
            "M": int(size),
            "group": group,
            "variance [95% CI]": _interval(variance),
        }
        if GRAD_VARIANCE_NOISE in by_metric and variance["value"] > 0:
            entry["noise share"] = (
                f"{by_metric[GRAD_VARIANCE_NOISE]['value'] / variance['value']:.2f}"
            )
        entry["SNR"] = _interval(by_metric[SNR])
        entry["path"] = variance.get("draw_path", "")
        table.append(entry)
    lines.append(tabulate(table, headers="keys", tablefmt="github"))
    slopes = rows[rows["metric"] == SLOPE_METRIC]
    if not slopes.empty:
        lines += [
            "",
            (
                "Slope of log variance against log M (-1: independent per-example noise; "
                "interval: linregress t-interval)"
            ),
            "",
        ]
        lines.append(
            tabulate(
                [
                    {
                        "epoch": int(r["epoch"]),
                        "estimator": r["estimator"],
                        "group": r["param_group"],
                        "slope [95% CI]": _interval(r),
                        "batch sizes": int(r["n"]),
                    }
                    for _, r in slopes.iterrows()
                ],
                headers="keys",
                tablefmt="github",
            )
        )
    return "\n".join(lines)
