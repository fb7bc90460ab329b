"""gradbench as a library: one function runs a profile and returns its rows and report.

:func:`run` is the one way in: ``python -m gradbench all`` and ``device-check``, the benchmarks
and the notebook helpers below all call it. A run resolves the profile with its overrides,
validates every input (before any work, a dry run exactly as a run), loads the data the profile
names, probes each model × estimator pair, plans the experiments' tasks
(:mod:`gradbench.experiments`), estimates them, prints a banner, runs what the results store
does not hold yet on an executor (:mod:`gradbench.execution`), and writes the report from the
stored rows alone.

Each profile writes its own folder, ``reports/<profile>/`` with ``results/`` inside; the
folder's ``run.json`` says what made it, and a run of another profile, dataset or set of models
refuses to write there unless ``overwrite``.

The notebook helpers :func:`measure_variance`, :func:`measure_bias`, :func:`measure_timing` and
:func:`train` run one experiment of given estimators on one model and dataset and return its
tidy rows (one row per metric, parameter group, minibatch size and epoch).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gradbench.data import DataConfig, Dataset, load_dataset
from gradbench.device import resolve_device, torch_threads
from gradbench.estimators import ESTIMATORS, make_estimator, split_labels
from gradbench.execution.driver import Driver, Executor, execute
from gradbench.execution.estimate import estimate, makespan
from gradbench.execution.in_process import InProcessExecutor
from gradbench.execution.limits import skip_too_long
from gradbench.execution.process_pool import PoolExecutor, one_line_warning
from gradbench.execution.progress import ProgressLines, WithProgressLines, duration
from gradbench.execution.ray_executor import LOCAL, RayExecutor, import_ray, validate_ray_address
from gradbench.execution.schedule import Schedule, plan_schedule
from gradbench.execution.task import Context, Task
from gradbench.experiments.bias import Bias
from gradbench.experiments.plan import Plan, make_plan, probe
from gradbench.experiments.registry import experiments, selectable
from gradbench.experiments.timing import Timing
from gradbench.experiments.train import Train
from gradbench.experiments.variance import Variance
from gradbench.models import MODELS
from gradbench.models.base import get_model_class
from gradbench.options import resolve_options
from gradbench.profiles import (
    CUSTOM_SUFFIX,
    Profile,
    get_profile,
    override,
    parse_setting,
    with_options,
)
from gradbench.report import Report, build_reports, check_writable
from gradbench.report.build import FIGURE_FORMATS, FIGURES_DIR, TABLE_FORMATS, TABLES_DIR
from gradbench.report.build import check_formats
from gradbench.results import Provenance, ResultStore

REPORTS = Path("reports")
"""Where each profile's folder is, by default: ``reports/<profile>/``."""
RESULTS_DIR = "results"
MANIFEST = "run.json"
"""The file in a report folder that says what made the report: profile, dataset, models."""

IN_PROCESS, POOL, RAY, AUTO = "in-process", "process-pool", "ray", "auto"
EXECUTORS = (AUTO, IN_PROCESS, POOL, RAY)
"""Where cells run. ``auto``: every core, on Ray where it is installed, else on a process pool
of the standard library; one process (``in-process``) with CUDA or ``jobs=1``."""

UNSTAMPED = ("models", "estimators", "seeds", "max_cell_hours", "torch_threads")
"""Profile fields that choose which cells run (each row names its model, estimator and seed)
or where and how (``max_cell_hours``; ``torch_threads``, which each row stamps), not what a
cell computes: changing them keeps the name."""

LOG = "gradbench all"


class UsageError(ValueError):
    """Bad input to a run: one line, exit status 2 on the command line."""


class FolderTaken(UsageError):
    """The report folder holds a report of another profile, dataset or set of models."""


def option(default: Any, doc: str) -> Any:
    """A run option with its one default and its one doc (``all --help`` reads it)."""
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class RunOptions:
    """How a run is made, not what its cells compute (that is the :class:`Profile`)."""

    experiments: tuple[str, ...] = option((), "experiments to run (default: every one)")
    out: str | None = option(None, "report folder (default: reports/<profile>/)")
    results: str | None = option(None, "results folder, resumable (default: OUT/results/)")
    data_dir: str | None = option(None, "folder holding the dataset files")
    device: str = option("auto", "auto, cpu or cuda")
    executor: str | Executor = option(
        AUTO, f"where cells run: {', '.join(EXECUTORS)} (auto: every core, on Ray where "
        "installed, else a process pool)")
    jobs: int | None = option(None, "worker processes (default: every core)")
    ray_address: str = option(LOCAL, "with executor ray: 'local' (an embedded Ray), 'auto', "
                              "HOST:PORT or ray://HOST:PORT (an existing cluster)")
    formats: tuple[str, ...] = option(TABLE_FORMATS + FIGURE_FORMATS, "report formats")
    force: bool = option(False, "recompute finished cells")
    reuse_stale: bool = option(False, "reuse stored cells made by other code (reports say so)")
    overwrite: bool = option(False, "write into a folder holding another run's report")
    dry_run: bool = option(False, "print the plan and the estimate, run nothing")
    progress: bool = option(True, "progress bars on a terminal, else a line a minute")
    verbose: bool = option(True, "print the banner, notes and the closing summary")
    report: bool = option(True, "write the report (and claim its folder) after the cells")


@dataclass
class RunResult:
    """What a run made: its stored rows, where the report and results are, and counts."""

    rows: pd.DataFrame
    report: Path
    results: Path
    profile: Profile
    cells: int  # cells the run had to compute
    computed: int  # cells computed (failed ones included)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    estimated_seconds: float = 0.0  # on one process
    estimated_workers_seconds: float = 0.0  # on the run's workers
    dry_run: bool = False

    @property
    def status(self) -> int:
        """The exit status: 0, 1 when a cell failed (stored, retried by the next run)."""
        return 1 if self.failed else 0


def split_names(raw: str | Sequence[str] | None) -> tuple[str, ...]:
    """Names from a comma-separated string or a sequence."""
    if raw is None:
        return ()
    items = raw.split(",") if isinstance(raw, str) else raw
    return tuple(str(n).strip() for n in items if str(n).strip())


def _typed(value: Any, name: str) -> Any:
    """A profile override as its field's type: strings parsed as ``--set`` does, lists as
    tuples."""
    if isinstance(value, str):
        return parse_setting(name, value)
    if isinstance(value, (list, range)):
        return tuple(value)
    return value


def check_estimator_args(estimator_args: Mapping[str, str]) -> None:
    """Build each estimator named by ``ESTIMATOR:KEY`` options with those options alone, so that
    its own validation rejects a bad value even where the profile's variants override the option
    (``gumbel-softmax:temperature=-1`` beside ``gumbel-softmax[temperature=0.5]``)."""
    given: dict[str, dict[str, str]] = {}
    for key, value in estimator_args.items():
        name, _, option = key.rpartition(":")
        if name in ESTIMATORS:
            given.setdefault(name, {})[option] = value
    for name, options in given.items():
        make_estimator(name, options)


def resolve_profile(
    profile: str | Profile,
    settings: Mapping[str, Any],
    model_args: Mapping[str, str] | None = None,
    estimator_args: Mapping[str, str] | None = None,
) -> Profile:
    """The profile with ``settings`` (profile fields, typed or as strings) and the
    ``MODEL:KEY=VALUE`` / ``ESTIMATOR:KEY=VALUE`` options applied; ValueError on any bad value.

    A profile whose values an override changed (other than :data:`UNSTAMPED`) is stamped
    ``NAME+custom``, so its rows and reports are not mistaken for the named profile's.
    """
    base = get_profile(profile) if isinstance(profile, str) else profile
    check_estimator_args(estimator_args or {})
    raw = {k: v for k, v in settings.items() if isinstance(v, str)}
    typed = {k: _typed(v, k) for k, v in settings.items() if not isinstance(v, str)}
    resolved = replace(override(base, raw), **typed)
    resolved = replace(
        resolved,
        model_options=with_options(resolved, dict(model_args or {}), "model", tuple(MODELS)),
        estimator_options=with_options(resolved, dict(estimator_args or {}), "estimator",
                                       tuple(ESTIMATORS)),
    )
    unchanged = replace(resolved, **{name: getattr(base, name) for name in UNSTAMPED})
    if unchanged != base:
        resolved = replace(resolved, name=f"{base.name}{CUSTOM_SUFFIX}")
    return resolved


def report_folder(profile: Profile, options: RunOptions) -> tuple[Path, Path]:
    """(report folder, results folder): ``reports/<profile>/`` and its ``results/`` unless
    given."""
    out = Path(options.out) if options.out else REPORTS / profile.name
    results = Path(options.results) if options.results else out / RESULTS_DIR
    return out, results


def manifest(profile: Profile) -> dict[str, Any]:
    """What a report folder's ``run.json`` records of the run that made it: its profile, its
    data (dataset and binarization), its models and their options resolved (``--model-arg``
    included, defaults written out, so that a spelling of the same network is the same)."""
    models = sorted(profile.models)
    return {"profile": profile.name, "dataset": profile.dataset,
            "binarization": profile.binarization, "models": models,
            "model_options": {model: resolve_options(get_model_class(model),
                                                     profile.options_for(model))
                              for model in models}}


def recorded_manifest(path: Path) -> dict[str, Any]:
    """A folder's ``run.json``, the options of each registered model resolved as today's code
    resolves them (an option added since reads as its default)."""
    theirs = json.loads(path.read_text())
    options = dict(theirs.get("model_options") or {})
    for model in options:
        if model in MODELS:
            try:
                options[model] = resolve_options(get_model_class(model), options[model])
            except ValueError:
                continue  # an option today's model lacks: compared as written, so it differs
    return theirs | ({"model_options": options} if options else {})


def report_difference(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> str | None:
    """What keeps a run (``ours``) from adding to the report of ``theirs`` (``run.json``), as
    "KEY THEIRS, this run OURS"; None when it adds to it: the same profile and data, and
    models among the report's with the same options (a run of some of its cells, the report
    built from all its stored rows). What a ``run.json`` written before a key was recorded
    lacks (the binarization, a model's options) is not held against the run."""
    for key in ("profile", "dataset", "binarization"):
        if theirs.get(key, ours[key] if key == "binarization" else None) != ours[key]:
            return f"{key} {theirs.get(key)!r}, this run {ours[key]!r}"
    if not set(ours["models"]) <= set(theirs.get("models") or ()):
        return f"models {theirs.get('models')!r}, this run {ours['models']!r}"
    their_options = theirs.get("model_options") or {}
    for model, options in ours["model_options"].items():
        if model in their_options and their_options[model] != options:
            return f"{model} options {their_options[model]!r}, this run {options!r}"
    return None


def write_manifest(out: Path, profile: Profile) -> None:
    """``run.json`` of the run's profile; a run that adds to the folder's report keeps its
    models (and their options)."""
    path, ours = out / MANIFEST, manifest(profile)
    if path.is_file():
        theirs = recorded_manifest(path)
        if report_difference(theirs, ours) is None:
            ours = ours | {"models": theirs["models"], "model_options": (
                theirs.get("model_options", {}) | ours["model_options"])}
    path.write_text(json.dumps(ours, indent=1) + "\n")


def check_folder(out: Path, profile: Profile, overwrite: bool) -> None:
    """FolderTaken when ``out`` holds a report of another profile, data, set of models or
    model options (its ``run.json``; some of its models add to it), or a report without one,
    unless ``overwrite``."""
    if overwrite or not out.is_dir():
        return
    path = out / MANIFEST
    ours = manifest(profile)
    if path.is_file():
        difference = report_difference(recorded_manifest(path), ours)
        if difference is None:
            return
        raise FolderTaken(f"{out}/ holds the report of another run ({difference}); choose "
                          "another --out or pass --overwrite")
    if (out / "README.md").is_file():
        raise FolderTaken(f"{out}/ holds a report without {MANIFEST}; choose another --out or "
                          "pass --overwrite")


def make_executor(options: RunOptions, device: torch.device) -> Executor:
    """The executor the options name (``auto`` resolved), or the one they hold (a caller's,
    already started: a benchmark's warm Ray); ValueError naming the choices."""
    if not isinstance(options.executor, str):
        return options.executor
    if options.executor not in EXECUTORS:
        raise UsageError(f"unknown executor {options.executor!r}; valid: {', '.join(EXECUTORS)}")
    if options.jobs is not None and options.jobs < 1:
        raise UsageError(f"--jobs must be positive, got {options.jobs}")
    name = options.executor
    if options.ray_address != LOCAL and name not in (RAY, AUTO):
        raise UsageError("--ray-address needs --executor ray")
    if name == AUTO:
        if options.ray_address != LOCAL:
            name = RAY
        elif device.type == "cuda" or options.jobs == 1 or (os.cpu_count() or 1) == 1:
            name = IN_PROCESS
        else:
            name = RAY if importlib.util.find_spec("ray") else POOL
    if name == IN_PROCESS:
        return InProcessExecutor()
    if name == POOL:
        return PoolExecutor(options.jobs)
    import_ray()
    return RayExecutor(validate_ray_address(options.ray_address), options.jobs)


def workers(executor: Executor, options: RunOptions) -> int:
    """The workers a run's estimate is made for."""
    if isinstance(executor, InProcessExecutor):
        return 1
    if isinstance(executor, RayExecutor) and executor.jobs:
        return executor.jobs
    return options.jobs or os.cpu_count() or 1


def check_data_dir(data_dir: str | None) -> None:
    """UsageError when a data folder is given that does not exist."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {data_dir}: no such folder")


def plan_tasks(plan: Plan, dataset: Dataset, device: torch.device, root: Path) -> list[Task]:
    """Every task of the plan: the catalogue, then each experiment's, in registry order."""
    tasks: list[Task] = []
    for name, experiment in experiments().items():
        if name in plan.experiments or not experiment.selectable:
            tasks += experiment.run_tasks(plan, dataset, device, root)
    return tasks



def within_limits(
    tasks: list[Task], profile: Profile, store: ResultStore, provenance: Provenance,
    dataset: Dataset, device: torch.device, force: bool, verb: str, verbose: bool,
) -> list[Task]:
    """On a CPU with the profile's ``max_cell_hours`` set, the tasks with the cells estimated
    over it turned into skipped rows (:mod:`gradbench.execution.limits`), each said on stderr."""
    if device.type != "cpu" or profile.max_cell_hours is None:
        return tasks
    tasks, lines = skip_too_long(tasks, store, provenance, dataset, device,
                                 profile.max_cell_hours, force)
    for line in lines:
        if verbose:
            print(f"{LOG}: {verb} {line}", file=sys.stderr)
    return tasks


@dataclass
class Prepared:
    """A validated run, ready to execute: everything :func:`run` decided before the first
    cell."""

    plan: Plan
    options: RunOptions
    executor: Executor
    device: torch.device
    dataset: Dataset
    out: Path
    results: Path
    formats: tuple[str, ...]
    store: ResultStore
    provenance: Provenance
    tasks: list[Task]  # every task of the run, stored ones included (the schedule needs them)
    schedule: Schedule
    costs: dict[str, tuple[float, str]]
    workers: int

    @property
    def one_process_seconds(self) -> float:
        """The estimated seconds of the tasks to run, one after the other."""
        return sum(seconds for seconds, _ in self.costs.values())

    @cached_property
    def workers_seconds(self) -> float:
        """The estimated seconds of the tasks to run on the run's workers."""
        return makespan(self.schedule.tasks, self.costs, self.workers)


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run options, profile settings) from ``run``'s keyword arguments; UsageError naming an
    unknown one."""
    run_keys = {f.name for f in fields(RunOptions)}
    profile_keys = {f.name for f in fields(Profile)} - {"name", "summary"}
    unknown = [k for k in overrides if k not in run_keys | profile_keys]
    if unknown:
        valid = sorted(run_keys | profile_keys)
        raise UsageError(f"unknown setting {unknown[0]!r}; valid: {', '.join(valid)}")
    options = {k: v for k, v in overrides.items() if k in run_keys}
    settings = {k: v for k, v in overrides.items() if k in profile_keys}
    if isinstance(settings.get("estimators"), str):
        settings["estimators"] = tuple(split_labels(settings["estimators"]))
    for key in ("experiments", "formats"):
        if key in options:
            options[key] = split_names(options[key])
    return options, settings


def prepare(
    profile: str | Profile,
    overrides: Mapping[str, Any],
    model_args: Mapping[str, str] | None = None,
    estimator_args: Mapping[str, str] | None = None,
) -> Prepared:
    """Validate a run and plan it, as :func:`run` does before its first cell (a dry run too):
    UsageError (or ValueError, LookupError) on bad input, DataNotFoundError when the data
    are not found."""
    option_values, settings = split_overrides(overrides)
    options = RunOptions(**option_values)
    resolved = resolve_profile(profile, settings, model_args, estimator_args)
    data = DataConfig(dataset=resolved.dataset, binarization=resolved.binarization,
                      data_dir=options.data_dir, subset=resolved.subset, seed=resolved.data_seed)
    plan = make_plan(resolved, options.experiments, selectable(),
                     asked=resolved.estimators if "estimators" in settings else ())
    formats = check_formats(options.formats) if options.report else ()
    device = resolve_device(options.device)
    executor = make_executor(options, device)
    check_data_dir(options.data_dir)
    out, results = report_folder(resolved, options)
    if options.report:
        check_folder(out, resolved, options.overwrite)
    if not options.dry_run:
        if options.report:
            check_writable(out)
        check_writable(results)
    dataset = load_dataset(data, device)
    probe(plan, dataset, bias=Bias.name)
    tasks = plan_tasks(plan, dataset, device, results)
    store = ResultStore(results, reuse_stale=options.reuse_stale)
    if not options.dry_run:  # every experiment's folder, before the banner and the first cell
        store.check_writable({task.cell.experiment for task in tasks if task.cell})
    with torch_threads(resolved.torch_threads):  # stamped as the cells run (run_prepared)
        provenance = Provenance.collect(device, resolved.name)
    verb = "would skip" if options.dry_run else "skipping"
    tasks = within_limits(tasks, resolved, store, provenance, dataset, device, options.force,
                          verb, options.verbose)
    schedule = plan_schedule(tasks, store, provenance, options.force)
    costs = estimate(schedule.tasks, store, dataset, device)
    return Prepared(plan, options, executor, device, dataset, out, results, formats, store,
                    provenance, tasks, schedule, costs, workers(executor, options))


def banner(prepared: Prepared) -> str:
    """What the run will do, printed before its first cell: the profile, the grid, the cells
    to run, the estimated time on one process and on the run's workers, the folders."""
    plan = prepared.plan
    profile = plan.profile
    counts = sorted({len(names) for names in plan.estimators.values()})
    per_model = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    schedule = prepared.schedule
    stored = len(schedule.stored)
    models, seeds = len(plan.estimators), len(profile.seeds)
    lines = [
        f"{LOG}: profile {profile.name} ({profile.summary}), dataset {prepared.dataset.name}, "
        f"device {prepared.device.type}",
        f"  {models} model{'s' * (models != 1)} × {per_model} estimators "
        f"({plan.cells_per_seed} pairs) × {seeds} seed{'s' * (seeds != 1)}; experiments "
        f"{', '.join(plan.experiments)}",
        f"  {schedule.cells} cells to run ({stored} stored), "
        f"{len(schedule.tasks) - schedule.cells} checkpoints",
        f"  estimated {duration(prepared.one_process_seconds)} on one process, "
        f"{duration(prepared.workers_seconds)} on {prepared.workers} "
        f"{'worker' if prepared.workers == 1 else 'workers'} ({prepared.executor.name})",
        f"  results: {prepared.results}/",
    ]
    if prepared.options.report:
        lines.append(f"  report:  {prepared.out}/")
    return "\n".join(lines)


def print_plan(prepared: Prepared) -> None:
    """The resolved profile, what runs and the estimate of each task (a dry run)."""
    plan = prepared.plan
    print(f"profile {plan.profile.name}: {plan.profile.summary}")
    for key, value in plan.profile.values().items():
        if key not in ("name", "summary"):
            print(f"  {key} = {value!r}")
    print(f"experiments: {', '.join(plan.experiments)}")
    for model, names in plan.estimators.items():
        print(f"  {model}: {', '.join(names)}")
    if plan.skipped:
        print(f"skipped (does not apply): {', '.join(plan.skipped)}")
    tasks = prepared.schedule.tasks
    print(f"to run: {prepared.schedule.cells} cells "
          f"(and {len(tasks) - prepared.schedule.cells} checkpoints)")
    for task in tasks:
        if task.key in prepared.costs:
            seconds, source = prepared.costs[task.key]
            print(f"  {seconds:9.1f} s  ({source:10s})  {task.describe or task.key}")
    print(f"estimated total: {duration(prepared.one_process_seconds)} in one process; "
          f"{duration(prepared.workers_seconds)} with {prepared.workers} "
          f"{'worker' if prepared.workers == 1 else 'workers'} "
          "(estimates: stored cell times where present, else a calibration of one gradient "
          "and one evaluation draw)")


def _executor_with_progress(prepared: Prepared) -> tuple[Executor, bool]:
    """The run's executor, printing plain progress lines where stderr is not a terminal; and
    whether progress bars show."""
    if not prepared.options.progress:
        return prepared.executor, False
    if sys.stderr.isatty():
        return prepared.executor, True
    costs = {key: seconds for key, (seconds, _) in prepared.costs.items()}
    lines = ProgressLines(costs, prepared.schedule.cells, wall_seconds=prepared.workers_seconds)
    return WithProgressLines(prepared.executor, lines), False


def execute_prepared(prepared: Prepared) -> RunResult:
    """Run a prepared run's cells, then write its report (:func:`run`)."""
    plan, options = prepared.plan, prepared.options
    if options.verbose:
        print(banner(prepared), file=sys.stderr, flush=True)
        for skipped in plan.skipped:
            print(f"{LOG}: skipping estimator {skipped}", file=sys.stderr)
        for note in plan.notes:
            print(f"{LOG}: {note}", file=sys.stderr)
    if options.report:
        prepared.out.mkdir(parents=True, exist_ok=True)
        write_manifest(prepared.out, plan.profile)
    executor, bars = _executor_with_progress(prepared)
    context = Context(prepared.dataset, prepared.device, prepared.results, bars)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    if plan.profile.torch_threads is not None:
        torch.set_num_threads(plan.profile.torch_threads)
    try:
        driver = execute(prepared.tasks, prepared.store, prepared.provenance, executor,
                         context, force=options.force,
                         describe=f"all ({plan.profile.name}, {executor.name})")
    except KeyboardInterrupt:
        print(f"\n{LOG}: interrupted; finished cells are kept in {prepared.results}/. "
              "Run the same command again to resume.", file=sys.stderr)
        raise
    finally:
        torch.set_num_threads(threads)
    cells_seconds = time.perf_counter() - started
    clock = time.perf_counter()
    rows = prepared.store.load()
    report = None
    if options.report:
        report = build_reports(rows, prepared.out, profile=plan.profile.name,
                               formats=prepared.formats)
    spent = {"cells": cells_seconds, "reports": time.perf_counter() - clock}
    if options.verbose:
        print_summary(prepared, driver, report, len(rows), spent, time.perf_counter() - started)
    return RunResult(rows, prepared.out, prepared.results, plan.profile, prepared.schedule.cells,
                     driver.computed, list(driver.failed), list(plan.skipped),
                     prepared.one_process_seconds, prepared.workers_seconds)


def print_summary(
    prepared: Prepared, driver: Driver, report: Report | None, n_rows: int,
    spent: dict[str, float], total: float,
) -> None:
    """The closing summary: what was written where and how long each part took."""
    plan = prepared.plan
    parts = ", ".join(f"{k} {duration(v)}" for k, v in spent.items())
    seeds = ",".join(map(str, plan.profile.seeds))
    print(
        f"{LOG}: profile {plan.profile.name}, dataset {prepared.dataset.name}, device "
        f"{prepared.device.type}, seeds {seeds}, executor {prepared.executor.name}: "
        f"{driver.computed} cells computed in {duration(total)} ({parts})"
    )
    print(f"  results: {prepared.results}/ ({n_rows} rows)")
    if report is not None:
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


def run(
    profile: str | Profile = "quick",
    *,
    model_args: Mapping[str, str] | None = None,
    estimator_args: Mapping[str, str] | None = None,
    **overrides: Any,
) -> RunResult:
    """Run a profile: every experiment for every applicable model × estimator × seed (resuming
    from the results folder), then the report; returns the stored rows and where they are.

    ``overrides``: any :class:`Profile` field (``models=["MODEL"]``,
    ``train_epochs=3``, or strings as ``--set`` takes them) and any :class:`RunOptions` field
    (``out``, ``results``, ``executor``, ``jobs``, ``dry_run``, ...). ``model_args`` and
    ``estimator_args``: ``{"MODEL:KEY": "VALUE"}`` options. Raises UsageError (a ValueError)
    on bad input and DataNotFoundError when the profile's data are not found, before any work.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        previous = warnings.formatwarning
        warnings.formatwarning = one_line_warning
        try:
            prepared = prepare(profile, overrides, model_args, estimator_args)
            if prepared.options.dry_run:
                if prepared.options.verbose:
                    print_plan(prepared)
                    print(banner(prepared), file=sys.stderr)
                return RunResult(pd.DataFrame(), prepared.out, prepared.results,
                                 prepared.plan.profile, prepared.schedule.cells, 0,
                                 skipped=list(prepared.plan.skipped),
                                 estimated_seconds=prepared.one_process_seconds,
                                 estimated_workers_seconds=prepared.workers_seconds,
                                 dry_run=True)
            return execute_prepared(prepared)
        finally:
            warnings.formatwarning = previous


def _measure(
    experiment: str,
    estimators: str | Iterable[str],
    model: str,
    *,
    dataset: str,
    subset: int | None,
    seed: int,
    model_options: Mapping[str, Any] | None,
    profile: str,
    results: str | os.PathLike[str] | None,
    settings: Mapping[str, Any],
) -> pd.DataFrame:
    """One experiment's rows for ``estimators`` on ``model`` (the notebook helpers)."""
    labels = tuple(split_labels(estimators)) if isinstance(estimators, str) else tuple(estimators)
    base = get_profile(profile)
    if model_options is not None:
        base = replace(base, model_options={**base.model_options, model: dict(model_options)})
    overrides = dict(settings, models=(model,), estimators=labels, seeds=(seed,),
                     dataset=dataset, subset=subset, experiments=(experiment,), report=False,
                     verbose=False, progress=False, executor=IN_PROCESS)
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(results) if results is not None else Path(scratch)
        overrides.update(results=str(where), out=str(where / "report"))
        found = run(base, **overrides).rows
    if found.empty:
        return found
    chosen = found[(found["experiment"] == experiment) & (found["model"] == model)
                   & (found["seed"] == seed) & found["estimator"].isin(labels)]
    return chosen.reset_index(drop=True)


def _notebook_helper(experiment: str, name: str, doc: str) -> Any:
    """A helper that runs ``experiment`` for given estimators on one model (:func:`_measure`)."""

    def helper(
        estimators: str | Iterable[str],
        model: str,
        *,
        dataset: str = "digits",
        subset: int | None = None,
        seed: int = 0,
        model_options: Mapping[str, Any] | None = None,
        profile: str = "smoke",
        results: str | os.PathLike[str] | None = None,
        **settings: Any,
    ) -> pd.DataFrame:
        return _measure(experiment, estimators, model, dataset=dataset, subset=subset,
                        seed=seed, model_options=model_options, profile=profile,
                        results=results, settings=settings)

    helper.__name__ = helper.__qualname__ = name
    helper.__doc__ = doc + NOTEBOOK_ARGUMENTS
    return helper


NOTEBOOK_ARGUMENTS = """

    ``estimators``: names or variants (a list, or one comma-separated string); ``model``: a
    registered model with ``model_options`` (default: the profile's); ``dataset`` and
    ``subset``: the data (:mod:`gradbench.data`); ``seed``: one seed; ``settings``: profile
    fields (``variance_draws=100``, ``train_epochs=3``, ...), the others from ``profile``;
    ``results``: a folder that keeps the cells, so that a second call resumes (default: a
    temporary one). Returns the tidy rows: one per metric, parameter group, minibatch size
    and epoch, with ``value``, ``ci_low``, ``ci_high`` and the provenance columns."""

measure_variance = _notebook_helper(
    Variance.name, "measure_variance",
    "Gradient variance of each estimator on the model (the mean over a group's parameters of "
    "Var[g_i], Kingma et al. 2015, Table 1) per parameter group, minibatch size and "
    "checkpoint, with its noise and data parts and bootstrap intervals.")
measure_bias = _notebook_helper(
    Bias.name, "measure_bias",
    "Bias of each estimator against the model's exact gradient (relative bias "
    "‖E ĝ − g‖ / ‖g‖, cosine, mean squared error) at the variance checkpoints, on the model's "
    "oracle configuration.")
measure_timing = _notebook_helper(
    Timing.name, "measure_timing",
    "Seconds per epoch of each estimator on the model (timed steps scaled to an epoch) and "
    "the speed-ups between them.")
train = _notebook_helper(
    Train.name, "train",
    "Training of the model with each estimator: the ELBO, the importance-weighted bound "
    "(Burda et al. 2016) and the error per epoch.")
