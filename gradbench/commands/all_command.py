"""``gradbench all``: every measurement for every applicable model × estimator × seed, then the
reports.

For each seed, model of the profile and estimator that applies to it: wall-clock timing (with
the speed-ups between the model's estimators), gradient variance at the profile's checkpoints
and minibatch sizes, bias against the exact gradient, and training with the ELBO per epoch.
Every measurement is a set of tasks (:mod:`gradbench.execution`) that runs in this process or on
Ray (``--executor ray``); each finished cell is stored at once by this process, so an
interrupted run resumes where it stopped; ``--force`` recomputes. ``--dry-run`` lists the cells
still to run with an estimated time each. The reports are then built from the stored rows alone
(as ``gradbench report`` does).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from gradbench.catalogue import CATALOGUE, applicable, catalogue_rows
from gradbench.commands.common import (
    check_estimator_args,
    key_values,
    load_data,
    progress_enabled,
)
from gradbench.data import DataConfig, DataNotFoundError, Dataset
from gradbench.device import resolve_device
from gradbench.estimators import (
    ESTIMATORS,
    NotApplicable,
    base_name,
    make_estimator,
    split_labels,
)
from gradbench.execution.driver import Driver, Executor, execute
from gradbench.execution.estimate import estimate, print_estimate
from gradbench.execution.in_process import InProcessExecutor
from gradbench.execution.limits import skip_too_long
from gradbench.execution.ray_executor import (
    LOCAL,
    RayExecutor,
    import_ray,
    validate_ray_address,
)
from gradbench.execution.schedule import plan_schedule
from gradbench.execution.task import Context, Resources, Task, cell_key
from gradbench.experiment import Setting, data_shape
from gradbench.measure.bias import bias_tasks
from gradbench.measure.checkpoints import TrainingConfig
from gradbench.measure.timing import TimingConfig, timing_tasks
from gradbench.measure.training import EvalConfig, TrainConfig, training_tasks
from gradbench.measure.variance import variance_tasks
from gradbench.models import MODELS, make_model
from gradbench.models.base import OracleUnavailable
from gradbench.models.toy import PROBLEMS
from gradbench.profiles import (
    PROFILES,
    Profile,
    default_profile_name,
    get_profile,
    override,
    with_options,
)
from gradbench.report import Report, build_reports, check_writable
from gradbench.report.build import (
    FIGURE_FORMATS,
    FIGURES_DIR,
    TABLE_FORMATS,
    TABLES_DIR,
    check_formats,
)
from gradbench.results import Cell, Provenance, ResultStore

IN_PROCESS = "in-process"
EXECUTORS = (IN_PROCESS, "ray")
"""Where cells run: here, one after the other (no extra dependency), or on Ray."""

EXPERIMENTS = ("timing", "variance", "bias", "train")
"""The measurements ``all`` runs, in the order it runs them."""

CUSTOM_SUFFIX = "+custom"
"""Appended to the profile's name when flags changed its values."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "all",
        help="run every measurement for every applicable model × estimator, then write reports",
        description="Run timing, gradient variance and training for every applicable model × "
        "estimator of a profile (resumable), then write the reports. Profiles: "
        + "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values())
        + ".",
    )
    parser.add_argument(
        "--profile",
        help=f"one of {', '.join(PROFILES)} (default: paper with CUDA, else quick)",
    )
    parser.add_argument("--out", default="reports", help="reports folder (reports)")
    parser.add_argument("--results", default="results", help="results folder, resumable (results)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--force", action="store_true", help="recompute finished cells")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--models", help="comma-separated models (default: the profile's)")
    parser.add_argument(
        "--estimators",
        help="comma-separated estimators or variants NAME[KEY=VALUE,...] "
        "(default: the profile's list)",
    )
    parser.add_argument(
        "--reuse-stale",
        action="store_true",
        help="reuse stored cells made by other code (default: recompute them); reports say so",
    )
    parser.add_argument(
        "--experiments", help=f"comma-separated subset of {', '.join(EXPERIMENTS)} (default: all)"
    )
    parser.add_argument("--dataset", help="override the profile's dataset")
    parser.add_argument("--data-dir", help="folder holding the dataset files")
    parser.add_argument("--subset", help="first N examples of each split, or 'none'")
    parser.add_argument(
        "--seeds", help="comma-separated seeds, one run of every cell each (default: the profile's)"
    )
    parser.add_argument(
        "--executor", default=IN_PROCESS,
        help=f"where cells run: {', '.join(EXECUTORS)} (default {IN_PROCESS}; ray needs "
        "pip install -e \".[ray]\")",
    )
    parser.add_argument(
        "--ray-address", default=LOCAL,
        help="with --executor ray: 'local' (an embedded Ray on this machine, the default), "
        "'auto', HOST:PORT or ray://HOST:PORT (an existing cluster, see `ray start`)",
    )
    parser.add_argument(
        "--jobs", type=int,
        help="with --ray-address local: worker CPUs (default: every core); --dry-run: workers "
        "to estimate for",
    )
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override any profile setting, e.g. train_epochs=3 or variance_batch_sizes=1,10,100",
    )
    parser.add_argument(
        "--model-arg", action="append", metavar="MODEL:KEY=VALUE",
        help="model option, e.g. gaussian-vae:latent_dim=10",
    )
    parser.add_argument(
        "--estimator-arg", action="append", metavar="ESTIMATOR:KEY=VALUE",
        help="estimator option, e.g. gumbel-softmax:temperature=0.5",
    )
    parser.add_argument(
        "--formats",
        default=",".join(TABLE_FORMATS + FIGURE_FORMATS),
        help=f"report formats, comma-separated ({','.join(TABLE_FORMATS + FIGURE_FORMATS)})",
    )
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print the resolved profile and the cells still to run with an estimated time each "
        "(from stored timings, else a short calibration), and the total for one process and "
        "for --jobs workers; run nothing",
    )
    parser.set_defaults(run=run)


@dataclass
class Plan:
    """What a run does: the profile, and per model the estimators to run."""

    profile: Profile
    experiments: tuple[str, ...]
    estimators: dict[str, list[str]]  # model → estimators, in registry order
    skipped: list[str] = field(default_factory=list)  # "estimator (model)" that do not apply
    evaluations: dict[str, dict[str, int]] = field(default_factory=dict)  # label → model → n
    bias_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # model → oracle's
    notes: list[str] = field(default_factory=list)  # what the probe left out, and why


def split_names(raw: str | None) -> list[str]:
    """A comma-separated flag as a list of names."""
    return [n.strip() for n in raw.split(",") if n.strip()] if raw else []


def resolve_profile(args: argparse.Namespace) -> Profile:
    """The chosen profile with every flag applied; ValueError (exit 2) on any bad value.

    A profile whose values a flag changed (other than which models and seeds run, every row
    carrying its seed, and ``max_cell_hours``, which decides where a cell runs, not what it
    computes) is stamped ``NAME+custom``, so its rows and reports are not mistaken for
    the named profile's.
    """
    profile = get_profile(args.profile or default_profile_name())
    settings = key_values(args.set, "--set")
    for flag in ("dataset", "subset", "seeds"):
        value = getattr(args, flag)
        if value is not None:
            settings[flag] = value
    if args.models:
        settings["models"] = args.models
    profile = override(profile, settings)
    model_options = with_options(
        profile, key_values(args.model_arg, "--model-arg"), "model", tuple(MODELS)
    )
    estimator_options = with_options(
        profile, key_values(args.estimator_arg, "--estimator-arg"), "estimator", tuple(ESTIMATORS)
    )
    resolved = replace(profile, model_options=model_options, estimator_options=estimator_options)
    base = get_profile(profile.name)
    unstamped = {"models": base.models, "seeds": base.seeds, "max_cell_hours": base.max_cell_hours}
    if replace(resolved, **unstamped) != base:
        resolved = replace(resolved, name=f"{base.name}{CUSTOM_SUFFIX}")
    return resolved


def make_plan(args: argparse.Namespace, profile: Profile) -> Plan:
    """Which estimators and variants run on which model; unknown or inapplicable names are errors.

    ``--estimators`` (names or ``NAME[KEY=VALUE,...]`` variants) replaces the profile's list;
    each label runs on the profile's models it applies to.
    """
    experiments = tuple(split_names(args.experiments)) or EXPERIMENTS
    for name in experiments:
        if name not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    chosen = split_labels(args.estimators) if args.estimators else []
    for label in chosen:
        make_estimator(label)
    if chosen:
        profile = replace(profile, estimators=tuple(chosen))
    plan = Plan(profile, tuple(e for e in EXPERIMENTS if e in experiments), {})
    for model in profile.models:
        names = profile.estimator_labels(model)
        plan.skipped += [f"{n} ({model})" for n in chosen if n not in names]
        if names:
            plan.estimators[model] = names
    if not plan.estimators:
        valid = {m: applicable(m) for m in profile.models}
        detail = "; ".join(f"{m}: {', '.join(v)}" for m, v in valid.items())
        raise ValueError(
            f"estimator(s) {', '.join(chosen)} do not apply to model(s) "
            f"{', '.join(profile.models)}; applicable: {detail}"
        )
    return plan


def setting_for(profile: Profile, model: str, estimators: list[str], seed: int) -> Setting:
    """The measurement setting of one model and seed: its options, its estimators' options."""
    names = {base_name(label) for label in estimators}
    options = {e: dict(o) for e, o in profile.estimator_options.items() if e in names and o}
    return Setting(model, profile.options_for(model), options, seed)


def duration(seconds: float) -> str:
    """``1h 02m 03s`` / ``2m 03s`` / ``3.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def cell_resources(profile: Profile, device: torch.device) -> Resources:
    """What one cell asks for: one GPU on CUDA, else the profile's torch threads in CPU cores."""
    return Resources(cpus=profile.torch_threads or 1, gpus=1 if device.type == "cuda" else 0)


def checkpoint_training(profile: Profile) -> TrainingConfig:
    """How the reference estimator trains the variance and bias checkpoints."""
    return TrainingConfig(
        profile.checkpoint_batch_size, profile.checkpoint_learning_rate,
        profile.checkpoint_max_steps, checkpoint_horizon(profile),
    )


def experiment_tasks(
    plan: Plan, experiment: str, model: str, seed: int, dataset: Dataset, device: torch.device,
    root: Path,
) -> list[Task]:
    """The tasks of one experiment on one model at one seed, for every estimator of the plan."""
    profile = plan.profile
    names = plan.estimators[model]
    setting = setting_for(profile, model, names, seed)
    resources = cell_resources(profile, device)
    if experiment == "timing":
        config = TimingConfig(
            profile.timing_batch_size, profile.timing_steps, profile.timing_repeats,
            profile.timing_warmup_steps, profile.train_learning_rate,
        )
        whole = Resources(resources.cpus, resources.gpus, whole_node=True)
        return timing_tasks(setting, names, dataset, device, config, profile.name, whole)
    if experiment == "variance":
        sizes = [m for m in profile.variance_batch_sizes if m <= len(dataset.train)]
        return variance_tasks(
            setting, names, sizes, profile.variance_draws, profile.variance_epochs, dataset,
            device, root, profile.name, noise_draws=profile.variance_noise_draws,
            training=checkpoint_training(profile), replicates=profile.variance_replicates,
            resources=resources,
        )
    if experiment == "bias":
        if model not in plan.bias_options:
            return []
        small = replace(setting, model_options=dict(plan.bias_options[model]))
        return bias_tasks(
            small, names, profile.variance_epochs, dataset, device, root, profile.name,
            draws=profile.bias_draws, batch_size=min(profile.bias_batch_size, len(dataset.train)),
            training=checkpoint_training(profile), resources=resources,
        )
    config = TrainConfig(
        profile.train_epochs, profile.train_batch_size, profile.train_learning_rate,
        profile.train_lr_decay,
    )
    evaluation = EvalConfig(
        profile.eval_samples, profile.eval_iw_samples, profile.eval_iw_every,
        profile.eval_train_subset, iw_subset=profile.eval_iw_subset,
    )
    return training_tasks(setting, names, dataset, device, config, evaluation, profile.name,
                          resources)


def plan_tasks(plan: Plan, dataset: Dataset, device: torch.device, root: Path) -> list[Task]:
    """Every task of the plan: the catalogue, then each experiment × seed × model."""
    tasks = catalogue_tasks(plan, dataset)
    for experiment in plan.experiments:
        for seed in plan.profile.seeds:
            for model in plan.estimators:
                tasks += experiment_tasks(plan, experiment, model, seed, dataset, device, root)
    return tasks


def oracle_problem(setting: Setting, dataset: Dataset) -> str | None:
    """Why the model at the setting's options cannot compute its exact expected loss on this
    data (one example, on the CPU), or None when it can."""
    network = make_model(setting.model, data_shape(dataset), setting.model_options)
    x = (dataset.train.images[:1] >= 0.5).float().cpu()
    try:
        with torch.no_grad():
            network.expected_loss(x, dataset.train.labels[:1].cpu())
    except (OracleUnavailable, NotImplementedError, ValueError) as error:
        return str(error) or type(error).__name__
    return None


def checkpoint_horizon(profile: Profile) -> int:
    """The run the variance checkpoints belong to: the training epochs or the last checkpoint,
    whichever is longer (annealing schedules span it, as in the training cells)."""
    return max(1, profile.train_epochs, *profile.variance_epochs)


def print_plan(plan: Plan) -> None:
    """The resolved profile and what runs (``--dry-run``)."""
    print(f"profile {plan.profile.name}: {plan.profile.summary}")
    for key, value in plan.profile.values().items():
        if key not in ("name", "summary"):
            print(f"  {key} = {value!r}")
    print(f"experiments: {', '.join(plan.experiments)}")
    for model, names in plan.estimators.items():
        print(f"  {model}: {', '.join(names)}")
    if plan.skipped:
        print(f"skipped (does not apply): {', '.join(plan.skipped)}")


def make_executor(args: argparse.Namespace) -> Executor:
    """The ``--executor`` (with its Ray address and jobs); ValueError naming the choices."""
    if args.executor not in EXECUTORS:
        raise ValueError(f"unknown executor {args.executor!r}; valid: {', '.join(EXECUTORS)}")
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be positive, got {args.jobs}")
    if args.executor == IN_PROCESS:
        if args.ray_address != LOCAL:
            raise ValueError("--ray-address needs --executor ray")
        return InProcessExecutor()
    import_ray()
    return RayExecutor(validate_ray_address(args.ray_address), args.jobs)


def run(args: argparse.Namespace) -> int:
    check_estimator_args(args.estimator_arg)
    profile = resolve_profile(args)
    plan = make_plan(args, profile)
    formats = check_formats(split_names(args.formats))
    executor = make_executor(args) if not args.dry_run else None
    device = resolve_device(args.device)
    data = DataConfig(
        dataset=profile.dataset, binarization=profile.binarization, data_dir=args.data_dir,
        subset=profile.subset, seed=profile.data_seed,
    )
    if not args.dry_run:
        out = check_writable(args.out)
        check_writable(args.results)
    try:
        dataset = load_data(data, device)
    except DataNotFoundError as error:
        print(f"gradbench all: error: {error}", file=sys.stderr)
        return 2
    probe(plan, dataset)
    results = Path(args.results)
    threads = torch.get_num_threads()
    if profile.torch_threads is not None:
        torch.set_num_threads(profile.torch_threads)
    try:
        tasks = plan_tasks(plan, dataset, device, results)
        if args.dry_run:
            print_plan(plan)
            store = ResultStore(results, reuse_stale=args.reuse_stale)
            provenance = Provenance.collect(device, profile.name)
            tasks = within_limits(tasks, profile, store, provenance, dataset, device, args.force,
                                  "would skip")
            schedule = plan_schedule(tasks, store, provenance, args.force)
            costs = estimate(schedule.tasks, store, dataset, device)
            print_estimate(schedule.tasks, costs, args.jobs or os.cpu_count() or 1)
            return 0
        for skipped in plan.skipped:
            print(f"gradbench all: skipping estimator {skipped}", file=sys.stderr)
        for note in plan.notes:
            print(f"gradbench all: {note}", file=sys.stderr)
        return run_plan(plan, tasks, executor, args, out, results, dataset, device, formats)
    finally:
        torch.set_num_threads(threads)


def probe(plan: Plan, dataset: Dataset) -> None:
    """Build every model and estimator of the plan and run one forward pass of one example on the
    CPU: bad options fail before any cell runs, an estimator that cannot run on a model's
    configuration (:class:`NotApplicable`) is dropped from the plan with its reason, and each
    pair's evaluations per gradient are recorded (they may depend on the model's latent size).
    Bias runs on the model's own configuration where its oracle is exact there (a categorical
    VAE of 8 × 4), else on its small oracle configuration; a model whose oracle cannot serve
    the data (bayes-mlp's two-class oracle on ten classes) gets no bias cells, with the reason."""
    x = (dataset.train.images[:1] >= 0.5).float().cpu()
    y = dataset.train.labels[:1].cpu()
    seed = plan.profile.seeds[0]
    for model in list(plan.estimators):
        chosen = setting_for(plan.profile, model, plan.estimators[model], seed)
        network = make_model(model, data_shape(dataset), chosen.model_options)
        kept = []
        for label in plan.estimators[model]:
            estimator = make_estimator(label, chosen.estimator_options.get(base_name(label), {}))
            estimator.bind(dataset.input_dim)
            try:
                with torch.no_grad():
                    network(x, y, estimator)
            except NotApplicable as error:
                plan.skipped.append(f"{label} ({model}): {error}")
                continue
            kept.append(label)
            plan.evaluations.setdefault(label, {})[model] = estimator.evaluations
        if not kept:
            del plan.estimators[model]
            continue
        plan.estimators[model] = kept
        oracle = MODELS[model].oracle_options
        if "bias" not in plan.experiments or not oracle:
            continue
        for options in (chosen.model_options, dict(oracle)):
            reason = oracle_problem(replace(chosen, model_options=options), dataset)
            if reason is None:
                plan.bias_options[model] = options
                break
        else:
            plan.notes.append(f"no bias rows for {model}: {reason}")


def catalogue_tasks(plan: Plan, dataset: Dataset) -> list[Task]:
    """One catalogue cell per estimator or variant of the profile: where it applies (models and
    toy problems), whether it is unbiased; the report's applicability table reads these."""
    targets = [*plan.profile.models, *PROBLEMS]
    tasks = []
    for label in plan.profile.estimators or tuple(ESTIMATORS):
        evaluations = plan.evaluations.get(label, {})
        config = {"targets": targets, "profile": plan.profile.name, "dataset": dataset.name,
                  "evaluations": evaluations}
        cell = Cell(CATALOGUE, "all", label, config)
        tasks.append(Task(cell_key(cell), partial(_catalogue, label, targets, evaluations),
                          cell=cell, on_driver=True, describe=f"catalogue {label}"))
    return tasks


def _catalogue(
    label: str, targets: list[str], evaluations: dict[str, int], context: Context
) -> list[dict[str, object]]:
    return catalogue_rows(label, targets, evaluations)


def within_limits(
    tasks: list[Task],
    profile: Profile,
    store: ResultStore,
    provenance: Provenance,
    dataset: Dataset,
    device: torch.device,
    force: bool,
    verb: str,
) -> list[Task]:
    """On a CPU with the profile's ``max_cell_hours`` set, the tasks with the cells estimated
    over it turned into skipped rows (:mod:`gradbench.execution.limits`), each said on stderr."""
    if device.type != "cpu" or profile.max_cell_hours is None:
        return tasks
    tasks, lines = skip_too_long(tasks, store, provenance, dataset, device,
                                 profile.max_cell_hours, force)
    for line in lines:
        print(f"gradbench all: {verb} {line}", file=sys.stderr)
    return tasks


def run_plan(
    plan: Plan,
    tasks: list[Task],
    executor: Executor,
    args: argparse.Namespace,
    out: Path,
    results: Path,
    dataset: Dataset,
    device: torch.device,
    formats: tuple[str, ...],
) -> int:
    """Run every task of ``plan`` (resuming), then write the reports; the exit status (1 when a
    cell failed: it is stored as failed and retried by the next run)."""
    profile = plan.profile
    store = ResultStore(results, reuse_stale=args.reuse_stale)
    provenance = Provenance.collect(device, profile.name)
    tasks = within_limits(tasks, profile, store, provenance, dataset, device, args.force,
                          "skipping")
    context = Context(dataset, device, results, progress_enabled(args))
    started = time.perf_counter()
    try:
        driver = execute(tasks, store, provenance, executor, context, force=args.force,
                         describe=f"all ({profile.name}, {executor.name})")
    except KeyboardInterrupt:
        print(
            f"\ngradbench all: interrupted; finished cells are kept in {results}/. "
            "Run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    cells_seconds = time.perf_counter() - started
    clock = time.perf_counter()
    rows = store.load()
    report = build_reports(rows, out, profile=profile.name, formats=formats)
    spent = {"cells": cells_seconds, "reports": time.perf_counter() - clock}
    print_summary(plan, driver, executor, dataset.name, device, results, report, len(rows),
                  spent, time.perf_counter() - started)
    return 1 if driver.failed else 0


def print_summary(
    plan: Plan,
    driver: Driver,
    executor: Executor,
    dataset: str,
    device: torch.device,
    results: Path,
    report: Report,
    n_rows: int,
    spent: dict[str, float],
    total: float,
) -> None:
    """The closing summary: what was written where and how long each part took."""
    parts = ", ".join(f"{k} {duration(v)}" for k, v in spent.items())
    seeds = ",".join(map(str, plan.profile.seeds))
    print(
        f"gradbench all: profile {plan.profile.name}, dataset {dataset}, device {device.type}, "
        f"seeds {seeds}, executor {executor.name}: {driver.computed} cells computed in "
        f"{duration(total)} ({parts})"
    )
    print(f"  results: {results}/ ({n_rows} rows)")
    print(f"  index:   {report.out / 'README.md'}, {report.out / 'references.bib'}")
    table_dirs = sorted({p.parent for p in report.paths if p.parent.name == TABLES_DIR})
    figure_dirs = sorted({p.parent for p in report.paths if p.parent.name == FIGURES_DIR})
    for folder in table_dirs:
        print(f"  tables:  {len(report.tables)} in {folder}/")
    for folder in figure_dirs:
        print(f"  figures: {len(report.plots)} in {folder}/")
    if plan.skipped:
        print(f"  skipped (does not apply): {', '.join(plan.skipped)}")
    if driver.failed:
        print(f"  failed ({len(driver.failed)}, stored as failed rows; rerun to retry): "
              + "; ".join(driver.failed))
