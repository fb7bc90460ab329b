"""Pieces several commands share: option flags and output formats."""

from __future__ import annotations

import argparse
import io
import json
import sys

import pandas as pd
import torch

from gradbench.api import check_data_dir
from gradbench.catalogue import applicable, check_applicable
from gradbench.data import BINARIZATIONS, DATASETS, ChecksumError, DataConfig, Dataset, load_dataset
from gradbench.estimators import ESTIMATORS, base_name, make_estimator, split_labels
from gradbench.execution.in_process import CellsFailed, execute_here
from gradbench.execution.task import Context, Task
from gradbench.experiment import Setting, data_shape
from gradbench.models import MODELS, make_model
from gradbench.options import option_defaults, parse_key_values
from gradbench.profiles import default_profile_name, get_profile, setting_default
from gradbench.results import Provenance, ResultStore


def choose(value: str, valid: list[str] | tuple[str, ...], what: str) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise ValueError naming the valid choices."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value


FORMATS = ("table", "json", "csv")
"""Output formats of the measurement commands: a readable table, or the tidy rows."""


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--quiet`` or stderr is not a terminal."""
    return not args.quiet and sys.stderr.isatty()


def emit_rows(frame: pd.DataFrame, fmt: str, table: str) -> None:
    """Print tidy rows as JSON (a list of row objects, NaN as null) or CSV, else ``table``."""
    if fmt == "json":
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        print(json.dumps(records))
    elif fmt == "csv":
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        print(buffer.getvalue(), end="")
    else:
        print(table)


def add_format(parser: argparse.ArgumentParser, formats: tuple[str, ...], default: str) -> None:
    """Add ``--format`` (validated at run time so the error is one line naming the choices)."""
    parser.add_argument("--format", default=default, help=f"one of {', '.join(formats)}")
    parser.set_defaults(valid_formats=formats)


def output_format(args: argparse.Namespace) -> str:
    """The validated ``--format`` value."""
    return choose(args.format, list(args.valid_formats), "format")


def key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    """``KEY=VALUE`` flags as a dict; a malformed one raises ValueError."""
    return parse_key_values(items or [], flag)


def add_setting_args(parser: argparse.ArgumentParser, estimators_flag: str = "--estimators") -> None:
    """Flags shared by the measurement commands: model, estimators, data, device, seed, results."""
    parser.add_argument("--model", required=True, help="model name (see `list`)")
    if estimators_flag == "--estimators":
        parser.add_argument(
            "--estimators",
            help="comma-separated estimators or variants NAME[KEY=VALUE,...] "
            "(default: all applicable)",
        )
    else:
        chosen = parser.add_mutually_exclusive_group(required=True)
        chosen.add_argument(
            "--estimator", help="estimator or variant NAME[KEY=VALUE,...] (see `list`)"
        )
        chosen.add_argument(
            "--estimators", help="comma-separated estimators or variants NAME[KEY=VALUE,...]"
        )
    parser.add_argument(
        "--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. latent_dim=20"
    )
    parser.add_argument(
        "--estimator-arg",
        action="append",
        metavar="[ESTIMATOR:]KEY=VALUE",
        help="estimator option, for every chosen estimator that has it or for one named",
    )
    parser.add_argument(
        "--dataset", default=setting_default("dataset"),
        help=f"one of {', '.join(DATASETS)} (%(default)s; missing files: an error, never another "
        "dataset)",
    )
    parser.add_argument("--data-dir", help="folder holding the dataset files")
    parser.add_argument(
        "--binarization", default="threshold",
        help=f"one of {', '.join(BINARIZATIONS)}; threshold only for a dataset binary as "
        "published (binarized-mnist)",
    )
    parser.add_argument("--subset", type=int, help="keep only the first N examples of each split")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--seeds", default="0",
        help="comma-separated seeds: every cell runs once per seed (default 0)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: the default profile's policy: 1 on a CPU, torch's "
        "default with CUDA); stamped on every row",
    )
    parser.set_defaults(threads_for=thread_policy)
    parser.add_argument("--results", default="results", help="results directory (resumable)")
    parser.add_argument("--force", action="store_true", help="recompute finished cells")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--reuse-stale", action="store_true", help="reuse stored cells made by other code"
    )
    parser.add_argument("--profile", default="custom", help=argparse.SUPPRESS)


def result_store(args: argparse.Namespace) -> ResultStore:
    """The ``--results`` store; cells made by other code are recomputed unless ``--reuse-stale``."""
    return ResultStore(args.results, reuse_stale=args.reuse_stale)


def check_results(args: argparse.Namespace, experiments: tuple[str, ...]) -> None:
    """Fail at once (one line, exit 2) when ``--results`` or one of its ``experiments``'
    folders cannot be written: before the data are loaded or any cell runs."""
    result_store(args).check_writable(experiments)


def one_line(error: BaseException) -> str:
    """An error's message on one line (its lines joined by "; "), so that the reason of a
    several-line message (a rejected data file's) is not cut off."""
    lines = [line.strip().removeprefix("- ") for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    return " ".join(lines[:1] + ["; ".join(lines[1:])]).strip() or type(error).__name__


def load_data(config: DataConfig, device: torch.device) -> Dataset:
    """:func:`load_dataset`; a data file that fails its checksum (a truncated download) is a
    ValueError whose one line keeps every rejected file's reason."""
    try:
        return load_dataset(config, device)
    except ChecksumError as error:
        raise ValueError(one_line(error)) from None


def check_model(args: argparse.Namespace, dataset: Dataset) -> None:
    """Build the ``--model`` with its ``--model-arg`` options once, on this data, so that the
    model's own validation rejects a bad option (``latent_dim=0``) before any cell runs."""
    make_model(args.model, data_shape(dataset), key_values(args.model_arg, "--model-arg"))


def thread_policy(args: argparse.Namespace) -> int | None:
    """Torch threads of a measurement command: ``--threads``, else the default profile's
    (``quick``'s 1 thread on a CPU, ``paper``'s torch default with CUDA)."""
    if args.threads is not None:
        return args.threads
    return get_profile(default_profile_name()).torch_threads


def data_config(args: argparse.Namespace) -> DataConfig:
    """The data configuration the flags describe (validated by DataConfig); the fixed
    binarization's sample is the same for every seed (as in ``all``'s profiles); a
    ``--data-dir`` that does not exist is an error."""
    check_data_dir(args.data_dir)
    return DataConfig(
        dataset=args.dataset,
        binarization=args.binarization,
        data_dir=args.data_dir,
        subset=args.subset,
    )


def seeds(args: argparse.Namespace) -> list[int]:
    """The ``--seeds`` list: distinct non-negative integers; ValueError naming the flag."""
    try:
        values = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if not values or min(values) < 0 or len(set(values)) < len(values):
        raise ValueError(f"--seeds must be distinct non-negative integers, got {args.seeds!r}")
    return values


def run_here(
    args: argparse.Namespace, tasks: list[Task], dataset: Dataset, device: torch.device
) -> tuple[pd.DataFrame, int]:
    """Run ``tasks`` in this process against the ``--results`` store (resuming unless
    ``--force``); the rows of their cells and the exit status: 1 when a cell failed (said in
    one line on stderr; stored as failed, retried by a rerun), else 0."""
    store = result_store(args)
    provenance = Provenance.collect(device, args.profile)
    context = Context(dataset, device, store.root, progress_enabled(args))
    try:
        return execute_here(tasks, store, provenance, context, force=args.force,
                            describe=args.command), 0
    except CellsFailed as failure:
        print(f"gradbench {args.command}: {failure}; stored as failed, a rerun retries",
              file=sys.stderr)
        return failure.rows, 1


def estimator_list(args: argparse.Namespace, model: str) -> list[str]:
    """The chosen estimators and variants (``--estimators`` or ``--estimator``), default all
    applicable ones; ``NAME[KEY=VALUE,...]`` labels are validated (unknown keys or values name
    the valid ones).

    Checks the model name first, so an unknown model is reported as such.
    """
    choose(model, list(MODELS), "model")
    valid = applicable(model)
    raw = getattr(args, "estimators", None) or getattr(args, "estimator", None)
    names = split_labels(raw) if raw else valid
    for name in names:
        check_applicable(name, model)
        make_estimator(name)
    if len(set(names)) < len(names):
        raise ValueError(f"estimator list names one estimator twice: {', '.join(names)}")
    return names


def estimator_options(items: list[str] | None, names: list[str]) -> dict[str, dict[str, str]]:
    """Spread ``[ESTIMATOR:]KEY=VALUE`` flags over the chosen estimators, keyed by registered
    name (a variant's own bracketed options take precedence over them).

    A key without an estimator prefix goes to every chosen estimator that has that option; a key
    no chosen estimator accepts is an error listing the options they do accept.
    """
    bases = list(dict.fromkeys(base_name(n) for n in names))
    options: dict[str, dict[str, str]] = {name: {} for name in bases}
    for key, value in key_values(items, "--estimator-arg").items():
        target, _, option = key.rpartition(":")
        targets = [target] if target else bases
        accepted = [n for n in targets if n in options and option in option_defaults(ESTIMATORS[n])]
        if not accepted:
            valid = sorted({o for n in bases for o in option_defaults(ESTIMATORS[n])})
            raise ValueError(
                f"no chosen estimator has option {key!r}; valid: {', '.join(valid) or 'none'}"
            )
        for name in accepted:
            options[name][option] = value
    return options


def setting(args: argparse.Namespace, names: list[str], seed: int) -> Setting:
    """The measurement setting the flags describe, at one seed."""
    return Setting(
        model=args.model,
        model_options=key_values(args.model_arg, "--model-arg"),
        estimator_options=estimator_options(args.estimator_arg, names),
        seed=seed,
    )
