"""A run's plan: which estimators run on which model, found by probing each pair once.

:func:`make_plan` resolves the estimators and experiments asked for (unknown, duplicate or
inapplicable names are errors before any work); :func:`probe` builds every model and estimator
and runs one forward pass of one example, dropping the pairs that cannot run with their reason
and recording each pair's evaluations per gradient and the configuration bias runs on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from gradbench.catalogue import applicable
from gradbench.data import Dataset
from gradbench.estimators import NotApplicable, base_name, make_estimator
from gradbench.execution.task import Resources
from gradbench.experiment import Setting, data_shape
from gradbench.measure.checkpoints import TrainingConfig
from gradbench.models import MODELS, make_model
from gradbench.models.base import OracleUnavailable
from gradbench.profiles import Profile


@dataclass
class Plan:
    """What a run does: the profile, the experiments, and per model the estimators to run."""

    profile: Profile
    experiments: tuple[str, ...]
    estimators: dict[str, list[str]]  # model → estimators, in profile order
    skipped: list[str] = field(default_factory=list)  # "estimator (model)" that do not apply
    evaluations: dict[str, dict[str, int]] = field(default_factory=dict)  # label → model → n
    bias_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # model → oracle's
    notes: list[str] = field(default_factory=list)  # what the probe left out, and why

    @property
    def cells_per_seed(self) -> int:
        """Model × estimator pairs of the plan."""
        return sum(len(names) for names in self.estimators.values())


def duplicates(names: Sequence[str]) -> list[str]:
    """The names given more than once, in order of their second appearance."""
    seen: set[str] = set()
    repeated = [name for name in names if name in seen or seen.add(name)]
    return list(dict.fromkeys(repeated))


def make_plan(
    profile: Profile,
    experiments: Sequence[str],
    valid_experiments: Sequence[str],
    asked: Sequence[str] = (),
) -> Plan:
    """Which estimators run on which model and which experiments run (all valid ones when
    ``experiments`` is empty); ValueError on an unknown or repeated experiment, a repeated
    estimator or model, or estimators that apply to none of the profile's models. ``asked``:
    the estimators the user named, each said skipped on the models it does not apply to."""
    for what, names in (("experiment", experiments), ("estimator", profile.estimators),
                        ("model", profile.models)):
        if repeated := duplicates(names):
            raise ValueError(f"{what} {repeated[0]!r} given twice")
    for name in experiments:
        if name not in valid_experiments:
            raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(valid_experiments)}")
    for label in profile.estimators:
        make_estimator(label)
    chosen = tuple(e for e in valid_experiments if e in experiments) if experiments else tuple(
        valid_experiments
    )
    plan = Plan(profile, chosen, {})
    for model in profile.models:
        names = profile.estimator_labels(model)
        plan.skipped += [f"{n} ({model})" for n in asked if n not in names]
        if names:
            plan.estimators[model] = names
    if not plan.estimators:
        detail = "; ".join(f"{m}: {', '.join(applicable(m))}" for m in profile.models)
        raise ValueError(
            f"estimator(s) {', '.join(profile.estimators)} do not apply to model(s) "
            f"{', '.join(profile.models)}; applicable: {detail}"
        )
    return plan


def setting_for(profile: Profile, model: str, estimators: list[str], seed: int) -> Setting:
    """The measurement setting of one model and seed: its options, its estimators' options."""
    names = {base_name(label) for label in estimators}
    options = {e: dict(o) for e, o in profile.estimator_options.items() if e in names and o}
    return Setting(model, profile.options_for(model), options, seed)


def cell_resources(profile: Profile, device: torch.device) -> Resources:
    """What one cell asks for: one GPU on CUDA, else the profile's torch threads in CPU cores."""
    return Resources(cpus=profile.torch_threads or 1, gpus=1 if device.type == "cuda" else 0)


def checkpoint_horizon(profile: Profile) -> int:
    """The run the variance checkpoints belong to: the training epochs or the last checkpoint,
    whichever is longer (annealing schedules span it, as in the training cells)."""
    return max(1, profile.train_epochs, *profile.variance_epochs)


def checkpoint_training(profile: Profile) -> TrainingConfig:
    """How the reference estimator trains the variance and bias checkpoints."""
    return TrainingConfig(
        profile.checkpoint_batch_size, profile.checkpoint_learning_rate,
        profile.checkpoint_max_steps, checkpoint_horizon(profile),
    )


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


def probe(plan: Plan, dataset: Dataset, bias: str) -> None:
    """Build every model and estimator of the plan and run one forward pass of one example on the
    CPU: bad options fail before any cell runs, an estimator that cannot run on a model's
    configuration (:class:`NotApplicable`) is dropped from the plan with its reason, and each
    pair's evaluations per gradient are recorded (they may depend on the model's latent size).
    When the plan runs the experiment named ``bias``, bias runs on the model's own configuration
    where its oracle is exact there (a categorical VAE of 8 × 4), else on its small oracle
    configuration; a model whose oracle cannot serve the data (a two-class oracle on ten
    classes) gets no bias cells, with the reason."""
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
        if bias not in plan.experiments or not oracle:
            continue
        for options in (chosen.model_options, dict(oracle)):
            reason = oracle_problem(replace(chosen, model_options=options), dataset)
            if reason is None:
                plan.bias_options[model] = options
                break
        else:
            plan.notes.append(f"no bias rows for {model}: {reason}")
