"""``gradbench all``: every measurement for every applicable model × estimator, then the reports.

For each model of the profile and each estimator that applies to it: wall-clock timing (with
the speed-ups between the model's estimators), gradient variance at the profile's checkpoints
and minibatch sizes, and training with the ELBO per epoch. Each finished cell is stored at once
in the result store, so an interrupted run resumes where it stopped; ``--force`` recomputes.
The reports are then built from the stored rows alone (as ``gradbench report`` does).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from gradbench.catalogue import CATALOGUE, applicable, catalogue_rows
from gradbench.commands.common import key_values, progress_enabled
from gradbench.data import DataConfig, DataNotFoundError, Dataset, load_dataset
from gradbench.device import resolve_device
from gradbench.estimators import (
    ESTIMATORS,
    NotApplicable,
    base_name,
    make_estimator,
    split_labels,
)
from gradbench.experiment import Setting, data_shape
from gradbench.measure.bias import measure_bias
from gradbench.measure.checkpoints import TrainingConfig
from gradbench.measure.timing import (
    TimingConfig,
    speedup_cell,
    speedup_rows,
    timing_cell,
    timing_rows,
)
from gradbench.measure.training import (
    EvalConfig,
    TrainConfig,
    checkpoint_path,
    training_cell,
    training_rows,
)
from gradbench.measure.variance import measure_variance
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
from gradbench.results import Cell, Provenance, ResultStore, read_cell

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
    parser.add_argument("--seed", help="override the profile's seed")
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
        help="print the resolved profile and the cells, run nothing",
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

    @property
    def cells(self) -> int:
        """Model × estimator × experiment units (one progress step each)."""
        return len(self.experiments) * sum(len(v) for v in self.estimators.values())


def split_names(raw: str | None) -> list[str]:
    """A comma-separated flag as a list of names."""
    return [n.strip() for n in raw.split(",") if n.strip()] if raw else []


def resolve_profile(args: argparse.Namespace) -> Profile:
    """The chosen profile with every flag applied; ValueError (exit 2) on any bad value.

    A profile whose values a flag changed (other than which models run) is stamped
    ``NAME+custom``, so its rows and reports are not mistaken for the named profile's.
    """
    profile = get_profile(args.profile or default_profile_name())
    settings = key_values(args.set, "--set")
    for flag in ("dataset", "subset", "seed"):
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
    if replace(resolved, models=base.models) != base:
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


def setting_for(profile: Profile, model: str, estimators: list[str]) -> Setting:
    """The measurement setting of one model: its options, its estimators' options, the seed."""
    names = {base_name(label) for label in estimators}
    options = {e: dict(o) for e, o in profile.estimator_options.items() if e in names and o}
    return Setting(model, profile.options_for(model), options, profile.seed)


def duration(seconds: float) -> str:
    """``1h 02m 03s`` / ``2m 03s`` / ``3.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


@dataclass
class Runner:
    """Runs a plan's cells into a store, advancing one overall progress bar per unit."""

    plan: Plan
    store: ResultStore
    dataset: Dataset
    device: torch.device
    provenance: Provenance
    force: bool
    progress: bool
    bar: tqdm

    def run(self, experiment: str, model: str) -> None:
        """One experiment for every estimator of ``model``."""
        setting = setting_for(self.plan.profile, model, self.plan.estimators[model])
        runs = {"timing": self.timing, "variance": self.variance, "bias": self.bias,
                "train": self.train}
        runs[experiment](model, setting)

    def timing(self, model: str, setting: Setting) -> None:
        """Timing cells of one model's estimators, then their speed-ups against each other."""
        profile = self.plan.profile
        config = TimingConfig(
            profile.timing_batch_size, profile.timing_steps, profile.timing_repeats,
            profile.timing_warmup_steps, profile.train_learning_rate,
        )
        cells, frames, computed = [], [], False
        for name in self.plan.estimators[model]:
            self.bar.set_postfix_str(f"timing {model} / {name}")
            cell = timing_cell(setting, name, self.dataset, self.device, config, profile.name)

            def compute(name: str = name) -> list[dict]:
                return timing_rows(setting, name, self.dataset, self.device, config, self.progress)

            _, now = self.store.run(cell, compute, self.provenance, force=self.force)
            computed |= now
            cells.append(cell)
            frames.append(read_cell(self.store.path(cell)))
            self.bar.update()
        if len(cells) < 2:
            return
        per_epoch = {
            cell.estimator: frame[frame["metric"] == "seconds_per_epoch"].iloc[0].to_dict()
            for cell, frame in zip(cells, frames)
        }
        derived = speedup_rows(per_epoch)
        for cell in cells:
            target = speedup_cell(cell, [c for c in cells if c is not cell])
            self.store.run(target, lambda rows=derived[cell.estimator]: rows, self.provenance,
                           force=computed)

    def variance(self, model: str, setting: Setting) -> None:
        """Variance cells of one model's estimators at every checkpoint and minibatch size."""
        profile = self.plan.profile
        training = TrainingConfig(
            profile.checkpoint_batch_size, profile.checkpoint_learning_rate,
            profile.checkpoint_max_steps, checkpoint_horizon(profile),
        )
        sizes = [m for m in profile.variance_batch_sizes if m <= len(self.dataset.train)]
        for name in self.plan.estimators[model]:
            self.bar.set_postfix_str(f"variance {model} / {name}")
            measure_variance(
                setting, [name], sizes, profile.variance_draws, profile.variance_epochs,
                self.dataset, self.device, self.store, self.provenance, self.force,
                noise_draws=profile.variance_noise_draws, training=training,
                replicates=profile.variance_replicates, progress=self.bar.set_postfix_str,
            )
            self.bar.update()

    def bias(self, model: str, setting: Setting) -> None:
        """Bias against the exact gradient at the variance checkpoints: on the run's own
        configuration where its oracle is exact there (a categorical VAE of 8 × 4), else on the
        model's small oracle configuration; models without one are skipped."""
        profile = self.plan.profile
        oracle = MODELS[model].oracle_options
        if not oracle:
            self.bar.update(len(self.plan.estimators[model]))
            return
        small = setting if has_exact_oracle(setting, self.dataset) else replace(
            setting, model_options=dict(oracle)
        )
        training = TrainingConfig(
            profile.checkpoint_batch_size, profile.checkpoint_learning_rate,
            profile.checkpoint_max_steps, checkpoint_horizon(profile),
        )
        for name in self.plan.estimators[model]:
            self.bar.set_postfix_str(f"bias {model} / {name}")
            try:
                measure_bias(
                    small, [name], profile.variance_epochs, self.dataset, self.device,
                    self.store, self.provenance, self.force, draws=profile.bias_draws,
                    batch_size=min(profile.bias_batch_size, len(self.dataset.train)),
                    training=training, progress=self.bar.set_postfix_str,
                )
            except OracleUnavailable as error:
                print(f"gradbench all: no bias rows for {model}: {error}", file=sys.stderr)
                self.bar.update(len(self.plan.estimators[model]))
                return
            self.bar.update()

    def train(self, model: str, setting: Setting) -> None:
        """Training cells of one model's estimators, resumable from per-epoch checkpoints."""
        profile = self.plan.profile
        config = TrainConfig(
            profile.train_epochs, profile.train_batch_size, profile.train_learning_rate,
            profile.train_lr_decay,
        )
        evaluation = EvalConfig(
            profile.eval_samples, profile.eval_iw_samples, profile.eval_iw_every,
            profile.eval_train_subset,
        )
        for name in self.plan.estimators[model]:
            self.bar.set_postfix_str(f"train {model} / {name}")
            cell = training_cell(
                setting, name, self.dataset, self.device, config, evaluation, profile.name
            )
            resume = checkpoint_path(self.store.root, cell)
            if self.force:
                resume.unlink(missing_ok=True)

            def compute(name: str = name, resume: Path = resume) -> list[dict]:
                return training_rows(
                    setting, name, self.dataset, self.device, config, evaluation, resume,
                    self.progress,
                )

            self.store.run(cell, compute, self.provenance, force=self.force)
            resume.unlink(missing_ok=True)
            self.bar.update()


def has_exact_oracle(setting: Setting, dataset: Dataset) -> bool:
    """Whether the model at the setting's own options computes its exact expected loss (one
    example, on the CPU) rather than raising :class:`OracleUnavailable`."""
    network = make_model(setting.model, data_shape(dataset), setting.model_options)
    x = (dataset.train.images[:1] >= 0.5).float().cpu()
    try:
        with torch.no_grad():
            network.expected_loss(x, dataset.train.labels[:1].cpu())
    except (OracleUnavailable, NotImplementedError):
        return False
    return True


def checkpoint_horizon(profile: Profile) -> int:
    """The run the variance checkpoints belong to: the training epochs or the last checkpoint,
    whichever is longer (annealing schedules span it, as in the training cells)."""
    return max(1, profile.train_epochs, *profile.variance_epochs)


def print_plan(plan: Plan) -> None:
    """The resolved profile and the cells (``--dry-run``)."""
    print(f"profile {plan.profile.name}: {plan.profile.summary}")
    for key, value in plan.profile.values().items():
        if key not in ("name", "summary"):
            print(f"  {key} = {value!r}")
    print(f"experiments: {', '.join(plan.experiments)}")
    for model, names in plan.estimators.items():
        print(f"  {model}: {', '.join(names)}")
    if plan.skipped:
        print(f"skipped (does not apply): {', '.join(plan.skipped)}")


def run(args: argparse.Namespace) -> int:
    profile = resolve_profile(args)
    plan = make_plan(args, profile)
    formats = check_formats(split_names(args.formats))
    if args.dry_run:
        print_plan(plan)
        return 0
    out = check_writable(args.out)
    results = check_writable(args.results)
    device = resolve_device(args.device)
    data = DataConfig(
        dataset=profile.dataset, binarization=profile.binarization, data_dir=args.data_dir,
        subset=profile.subset, seed=profile.seed,
    )
    try:
        dataset = load_dataset(data, device)
    except DataNotFoundError as error:
        print(f"gradbench all: error: {error}", file=sys.stderr)
        return 2
    probe(plan, dataset)
    for skipped in plan.skipped:
        print(f"gradbench all: skipping estimator {skipped}", file=sys.stderr)
    threads = torch.get_num_threads()
    if profile.torch_threads is not None:
        torch.set_num_threads(profile.torch_threads)
    try:
        return run_plan(plan, args, out, results, dataset, device, formats)
    finally:
        torch.set_num_threads(threads)


def probe(plan: Plan, dataset: Dataset) -> None:
    """Build every model and estimator of the plan and run one forward pass of one example on the
    CPU: bad options fail before any cell runs, an estimator that cannot run on a model's
    configuration (:class:`NotApplicable`) is dropped from the plan with its reason, and each
    pair's evaluations per gradient are recorded (they may depend on the model's latent size)."""
    x = (dataset.train.images[:1] >= 0.5).float().cpu()
    y = dataset.train.labels[:1].cpu()
    for model in list(plan.estimators):
        chosen = setting_for(plan.profile, model, plan.estimators[model])
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
        if kept:
            plan.estimators[model] = kept
        else:
            del plan.estimators[model]


def store_catalogue(plan: Plan, runner: Runner) -> None:
    """One catalogue cell per estimator or variant of the profile: where it applies (models and
    toy problems), whether it is unbiased; the report's applicability table reads these."""
    targets = [*plan.profile.models, *PROBLEMS]
    for label in plan.profile.estimators or tuple(ESTIMATORS):
        config = {"targets": targets, "profile": plan.profile.name,
                  "dataset": runner.dataset.name, "seed": plan.profile.seed}
        evaluations = plan.evaluations.get(label, {})
        config["evaluations"] = evaluations
        cell = Cell(CATALOGUE, "all", label, config)
        runner.store.run(cell, partial(catalogue_rows, label, targets, evaluations),
                         runner.provenance, force=runner.force)


def run_plan(
    plan: Plan,
    args: argparse.Namespace,
    out: Path,
    results: Path,
    dataset: Dataset,
    device: torch.device,
    formats: tuple[str, ...],
) -> int:
    """Run every cell of ``plan`` (resuming), then write the reports; the exit status."""
    profile = plan.profile
    progress = progress_enabled(args)
    bar = tqdm(total=plan.cells, desc=f"all ({profile.name})", unit="cell", disable=not progress)
    store = ResultStore(results, reuse_stale=args.reuse_stale)
    runner = Runner(plan, store, dataset, device,
                    Provenance.collect(device, profile.name), args.force, progress, bar)
    started = time.perf_counter()
    spent: dict[str, float] = {}
    store_catalogue(plan, runner)
    try:
        for experiment in plan.experiments:
            clock = time.perf_counter()
            for model in plan.estimators:
                runner.run(experiment, model)
            spent[experiment] = time.perf_counter() - clock
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\ngradbench all: interrupted; finished cells are kept in {results}/. "
            "Run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    bar.close()
    clock = time.perf_counter()
    rows = runner.store.load()
    report = build_reports(rows, out, profile=profile.name, formats=formats)
    spent["reports"] = time.perf_counter() - clock
    print_summary(plan, dataset.name, device, results, report, len(rows), spent,
                  time.perf_counter() - started)
    return 0


def print_summary(
    plan: Plan,
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
    print(
        f"gradbench all: profile {plan.profile.name}, dataset {dataset}, device {device.type}: "
        f"{plan.cells} cells in {duration(total)} ({parts})"
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
