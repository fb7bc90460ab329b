"""Shared setup of the benchmarks: profile, seeded data, model, estimator, and the timed bodies.

Both instruments build on this module: the asv suite (``benchmarks/bench_*.py``) and the
pytest-benchmark micro-benchmarks (``tests/benchmarks/test_perf.py``). Everything a timed body
needs (model, estimator, Adam, minibatches already drawn and binarized on the device) is built
in setup, seeded, so the bodies only compute; on CUDA they synchronise before returning, so the
caller's clock reads finished work (no host transfer, no Python loop over examples).

Profiles, chosen by the environment variable ``GRADBENCH_BENCH_PROFILE``:

- ``fast`` (default): scikit-learn's 8×8 digits (always available) and tiny networks; seconds
  for the whole suite, for CI and for noticing regressions in overheads.
- ``full``: the papers' sizes on MNIST (found by :func:`gradbench.data.load_dataset`, never
  downloaded here): bayes-mlp 784-3×1024-10 ReLU (Kingma, Salimans & Welling 2015),
  gaussian-vae 784-500-20 (Kingma & Welling 2014), categorical-vae 784-500-30×10-500-784.

Cases are model × estimator *label*: per model, the labels of the ``paper`` profile
(:meth:`gradbench.profiles.Profile.estimator_labels`), so every variant such as
``gumbel-softmax[temperature=0.1]`` is its own case, named by its label.

The ARM/DisARM protocol (issue 26): the Bernoulli VAE with the ``arm`` profile's model options
(learned prior, f = log p(x, b) − log q(b | x)) and minibatch 50, each of that profile's
estimators, timed against the deterministic step of the same network (:func:`protocol_case`,
:func:`step_timings`; ``python -m benchmarks.step_ratios`` prints the table). Its data is the
profile's: ``fast`` digits at the smoke sizes, ``full`` Larochelle's binarized MNIST at 784-200-784.

The other cases use minibatches of M = 100. The device is ``GRADBENCH_BENCH_DEVICE`` (cpu by default, so
asv's history does not change meaning with the machine; ``cuda`` or ``auto`` to benchmark a GPU).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gradbench.catalogue import applicable
from gradbench.data import DataConfig, Dataset, load_dataset
from gradbench.device import resolve_device, synchronize
from gradbench.estimators import Estimator, NotApplicable, base_name
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.measure.timing import (
    draw_batches,
    gradient,
    reference_steps,
    steps_per_epoch,
    time_reference_steps as reference_step_seconds,  # asv runs module-level time_* names
    time_steps as step_seconds,
)
from gradbench.measure.training import (
    NOISE_SEED_OFFSET,
    TrainConfig,
    make_optimizer,
    train_step,
)
from gradbench.measure.variance import (
    DRAW_MEMORY_BYTES,
    MAX_CHUNK_DRAWS,
    draw_memory_bytes,
    gradient_samples,
    gradient_summary,
)
from gradbench.measure.variance_stats import summary_statistics
from gradbench.models import MODELS, profile_model_options
from gradbench.models.base import (
    DeterministicNetwork,
    StochasticModel,
    bernoulli_log_likelihood,
)
from gradbench.models.gaussian_vae import GaussianVAE
from gradbench.profiles import ARM, PAPER

PROFILE_ENV = "GRADBENCH_BENCH_PROFILE"
DEVICE_ENV = "GRADBENCH_BENCH_DEVICE"
SEED = 0
"""Model initialisation (seed), data order (generator seed) and noise (seed + 2), as in training."""
VARIANCE_GROUPS = ("bottom", "top", "all")
"""Parameter groups whose ``grad_variance`` asv tracks: first and last weight layer (Kingma,
Salimans & Welling 2015, Table 1; a VAE's bottom is its encoder's first layer), and all."""
VARIANCE_REPLICATES = 10
"""Bootstrap replicates of the tracked variance; only the estimate itself is recorded."""

MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def estimator_labels(model: str) -> list[str]:
    """The estimators and variants benchmarked on ``model``: the paper profile's, in its order."""
    return PAPER.estimator_labels(model)


ESTIMATOR_LABELS: tuple[str, ...] = tuple(
    dict.fromkeys(label for model in MODEL_NAMES for label in estimator_labels(model))
)
"""Every model's labels, each once: asv's estimator parameter (a label that is not one of a
model's is skipped in setup)."""

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class BenchProfile:
    """Sizes of one benchmark profile; every benchmark reads them from here."""

    name: str
    dataset: str  # gradbench.data dataset name ("digits" or "mnist")
    protocol_dataset: str  # the ARM/DisARM protocol's data ("digits" or "binarized-mnist")
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> options
    batch_size: int = 100  # M, minibatch size of every step and gradient draw
    draws: int = 100  # R, gradient draws of one variance batch and of the tracked variance
    ratio_steps: int = 10  # steps per round of the epoch-ratio micro-benchmark (both estimators)
    protocol_steps: int = 20  # minibatches per timed round of the ARM/DisARM protocol's cases
    rounds: int = 5  # rounds of the heavier pytest-benchmark cases (pedantic mode)
    timeout_s: float = 60.0  # asv's limit for one benchmark (setup included)
    epoch_timeout_s: float = 60.0  # the same for one epoch of steps


FAST = BenchProfile(
    name="fast",
    dataset="digits",
    protocol_dataset="digits",
    model_options=profile_model_options("smoke"),  # the smoke profile's sizes
    draws=16,
    ratio_steps=2,
    protocol_steps=2,
    rounds=3,
    timeout_s=120.0,
    epoch_timeout_s=120.0,
)

FULL = BenchProfile(
    name="full",
    dataset="mnist",
    protocol_dataset="binarized-mnist",
    model_options={},  # every model's defaults are its paper's sizes
    draws=100,
    ratio_steps=5,  # reparam-per-example takes seconds per step on a CPU
    rounds=5,
    timeout_s=1800.0,
    epoch_timeout_s=7200.0,  # 500 steps: tens of minutes for reparam-per-example on a CPU
)

PROFILES = {p.name: p for p in (FAST, FULL)}


def bench_profile() -> BenchProfile:
    """The profile named by ``$GRADBENCH_BENCH_PROFILE`` (default ``fast``)."""
    name = os.environ.get(PROFILE_ENV, FAST.name)
    if name not in PROFILES:
        raise ValueError(f"unknown {PROFILE_ENV} {name!r}; valid: {', '.join(PROFILES)}")
    return PROFILES[name]


def bench_device() -> torch.device:
    """The device named by ``$GRADBENCH_BENCH_DEVICE`` (default ``cpu``)."""
    return resolve_device(os.environ.get(DEVICE_ENV, "cpu"))


def shared_data_dir(dataset: str) -> str | None:
    """The workspace's shared copy of ``dataset`` (``mnist``, ``binarized-mnist``) when present;
    data.py also searches $GRADBENCH_DATA."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / dataset
    return str(shared) if shared.is_dir() else None


@functools.cache
def load_data(dataset: str, device: str) -> Dataset:
    """The profile's dataset on ``device``, loaded once per process (binarized, offline)."""
    data_dir = None if dataset == "digits" else shared_data_dir(dataset)
    return load_dataset(DataConfig(dataset=dataset, data_dir=data_dir, download=False), device)


def check_applicable(model: str, estimator: str) -> None:
    """NotImplementedError (asv's "skip this parameter combination") unless the estimator label
    is one of the model's benchmarked labels or names an estimator that applies to it."""
    if estimator in estimator_labels(model):
        return
    if base_name(estimator) not in applicable(model):
        raise NotImplementedError(
            f"estimator {estimator!r} does not apply to model {model!r} "
            f"(benchmarked: {', '.join(estimator_labels(model))})"
        )


def check_runs(network: StochasticModel, estimator: Estimator, batch: Batch) -> None:
    """NotImplementedError (asv's skip) when the estimator cannot run on this configuration of
    the model (:class:`NotApplicable`, e.g. too many latent configurations to enumerate)."""
    try:
        with torch.no_grad():
            network(*batch, estimator)
    except NotApplicable as error:
        raise NotImplementedError(str(error)) from error


def check_benchmarked(model: str, estimator: str) -> None:
    """NotImplementedError unless ``estimator`` is one of the labels benchmarked on ``model``."""
    if estimator not in estimator_labels(model):
        check_applicable(model, estimator)
        raise NotImplementedError(
            f"estimator {estimator!r} is not benchmarked on model {model!r} "
            f"(benchmarked: {', '.join(estimator_labels(model))})"
        )


@dataclass
class Case:
    """A model and an estimator ready to be timed: seeded, on the device, minibatches drawn."""

    model: StochasticModel
    estimator: Estimator
    optimizer: torch.optim.Optimizer  # Adam over model and estimator parameters
    dataset: Dataset
    device: torch.device
    batches: list[Batch]  # binarized (x [M, D], y [M]) on the device, in training order
    profile: BenchProfile


def training_case(model: str, estimator: str, steps: int | None = 1) -> Case:
    """The seeded case of ``model`` × ``estimator`` (a label: a name or a variant such as
    ``gumbel-softmax[temperature=0.1]``) with ``steps`` minibatches (None: one epoch).

    The model's initialisation depends on the seed alone (the same network for every
    estimator); noise is seeded as in training. NotImplementedError for an invalid combination.
    """
    check_applicable(model, estimator)
    profile = bench_profile()
    return seeded_case(
        model, profile.model_options.get(model, {}), estimator, profile.dataset,
        profile.batch_size, steps,
    )


def seeded_case(
    model: str,
    options: dict[str, Any],
    estimator: str,
    dataset_name: str,
    batch_size: int,
    steps: int | None,
) -> Case:
    """The seeded case of ``model`` (with ``options``) × ``estimator`` on ``dataset_name`` with
    ``steps`` minibatches of ``batch_size`` (None: one epoch), Adam at the training default."""
    profile = bench_profile()
    device = bench_device()
    dataset = load_data(dataset_name, str(device))
    setting = Setting(model, options, seed=SEED)
    network = build_model(setting, dataset, device)
    chosen = build_estimator(setting, estimator, dataset, device)
    count = steps_per_epoch(dataset, batch_size) if steps is None else steps
    generator = torch.Generator(device=dataset.device).manual_seed(SEED)
    batches = draw_batches(dataset, batch_size, count, generator)
    check_runs(network, chosen, batches[0])
    torch.manual_seed(SEED + NOISE_SEED_OFFSET)
    optimizer = make_optimizer(network, TrainConfig().learning_rate)
    return Case(network, chosen, optimizer, dataset, device, batches, profile)


PROTOCOL_MODEL = "bernoulli-vae"
"""The model of the ARM/DisARM protocol (linear unless its options say otherwise)."""


def protocol_labels() -> list[str]:
    """The ``arm`` profile's estimators on the Bernoulli VAE, in its order."""
    return ARM.estimator_labels(PROTOCOL_MODEL)


def protocol_case(estimator: str) -> Case:
    """The ARM/DisARM protocol's Bernoulli VAE × ``estimator``: the bench profile's sizes with
    the ``arm`` profile's model options on top (learned prior, sampled-KL signal), minibatches
    of the ``arm`` profile's 50 from the profile's protocol data, ``protocol_steps`` of them."""
    profile = bench_profile()
    options = profile.model_options.get(PROTOCOL_MODEL, {}) | ARM.options_for(PROTOCOL_MODEL)
    return seeded_case(
        PROTOCOL_MODEL, options, estimator, profile.protocol_dataset, ARM.train_batch_size,
        profile.protocol_steps,
    )


def train_steps(case: Case) -> Tensor:
    """One optimizer step (forward, backward, Adam, observe) per minibatch; the last loss."""
    loss = torch.zeros((), device=case.device)
    for x, y in case.batches:
        loss = train_step(case.model, case.estimator, case.optimizer, x, y)
    synchronize(case.device)
    return loss


def gradient_once(case: Case) -> list[Tensor]:
    """Forward and backward of the first minibatch, no optimizer (seconds per gradient)."""
    x, y = case.batches[0]
    grads = gradient(case.model, case.estimator, x, y)
    synchronize(case.device)
    return grads


def autoencoder_loss(model: GaussianVAE, x: Tensor) -> Tensor:
    """−log p(x | z = μ(x)) per example [B]: the VAE's network as a deterministic autoencoder.

    The estimator-free reference for the reparameterization step's overhead: the same encoder
    (log σ² computed and unused), decoder and Bernoulli likelihood, with z the posterior mean
    instead of a sample, and no KL term.
    """
    mean, _ = model.encode(x)
    return -bernoulli_log_likelihood(model.decode(mean), x)


def autoencoder_steps(case: Case) -> Tensor:
    """One Adam step of the deterministic autoencoder per minibatch of a gaussian-vae case."""
    if not isinstance(case.model, GaussianVAE):
        raise TypeError(f"the autoencoder reference needs a gaussian-vae, got {case.model.name!r}")
    loss = torch.zeros((), device=case.device)
    for x, _ in case.batches:
        loss = autoencoder_loss(case.model, x).mean()
        case.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        case.optimizer.step()
        loss = loss.detach()
    synchronize(case.device)
    return loss


def deterministic_reference(case: Case) -> tuple[DeterministicNetwork, torch.optim.Optimizer]:
    """The case's network without noise (:meth:`StochasticModel.deterministic_network`: a plain
    MLP of bayes-mlp's sizes, the Bernoulli VAE's encoder and decoder with σ(l) between them)
    and fused Adam over it: the floor an estimator's step is compared with."""
    reference = case.model.deterministic_network()
    if reference is None:
        raise TypeError(f"model {case.model.name!r} has no deterministic network")
    return reference, make_optimizer(reference.network, TrainConfig().learning_rate)


def deterministic_steps(
    case: Case, reference: tuple[DeterministicNetwork, torch.optim.Optimizer]
) -> Tensor:
    """One fused-Adam step of the deterministic network per minibatch of the case."""
    loss = reference_steps(*reference, case.batches)
    synchronize(case.device)
    return loss


def step_timings(
    case: Case, reference: tuple[DeterministicNetwork, torch.optim.Optimizer], repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds per round of the case's optimizer steps and of the deterministic network's steps
    on the same minibatches, timed in alternation (one warm-up round of each first)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    step_seconds(case.model, case.estimator, case.optimizer, case.batches, case.device)
    reference_step_seconds(*reference, case.batches, case.device)
    steps, deterministic = [], []
    for _ in range(repeats):
        seconds, _ = step_seconds(case.model, case.estimator, case.optimizer, case.batches, case.device)
        steps.append(seconds)
        deterministic.append(reference_step_seconds(*reference, case.batches, case.device))
    return steps, deterministic


def fastest_ratio(steps: list[float], deterministic: list[float]) -> float:
    """The fastest round of the steps over the fastest of the deterministic steps: the ratio
    least inflated by other work on a shared machine (a round is only ever slowed by it)."""
    return min(steps) / min(deterministic)


@dataclass
class VarianceCase:
    """A case at fixed (initial) parameters, ready for R gradient draws."""

    case: Case
    draws: int  # R
    chunk_size: int  # draws per vmap call, from the variance module's memory probe


def variance_case(model: str, estimator: str, draws: int | None = None) -> VarianceCase:
    """The seeded case with the chunk size the variance measurement's memory probe gives."""
    case = training_case(model, estimator, steps=1)
    count = case.profile.draws if draws is None else draws
    x, y = case.batches[0]
    per_draw = draw_memory_bytes(case.model, case.estimator, x, y)
    chunk = int(min(count, MAX_CHUNK_DRAWS, max(1, DRAW_MEMORY_BYTES // per_draw)))
    return VarianceCase(case, count, chunk)


def draw_gradients(variance: VarianceCase, vectorize: bool) -> dict[str, Tensor]:
    """R minibatch gradients, name → [R, ...]: one vmap per chunk, or a Python loop per draw.

    Each draw has its own minibatch of M examples (index sets drawn and gathered on the device)
    and its own noise, as in the variance measurement. The estimator is not settled first
    (that costs the same for both paths and is no part of a draw).
    """
    case = variance.case
    generator = torch.Generator(device=case.dataset.device).manual_seed(SEED)
    draws = gradient_samples(
        case.model,
        case.estimator,
        case.dataset,
        case.profile.batch_size,
        variance.draws,
        generator,
        vectorize=vectorize,
        chunk_size=variance.chunk_size,
        settle_steps=0,
    )
    synchronize(case.device)
    return draws


def gradient_variance(model: str, estimator: str, group: str) -> float:
    """grad_variance of ``group``: the mean over its parameters of Var ĝ, R draws at M, seeded.

    Parameters are the seeded initialisation; R = the profile's draws, each on its own
    minibatch (K = 1); the estimator is settled first, as in ``gradbench variance``. NaN when a
    draw was not finite.
    """
    variance = variance_case(model, estimator)
    case = variance.case
    torch.manual_seed(SEED)
    generator = torch.Generator(device=case.dataset.device).manual_seed(SEED)
    summary, _ = gradient_summary(
        case.model,
        case.estimator,
        case.dataset,
        case.profile.batch_size,
        variance.draws,
        generator,
        noise_draws=1,
        chunk_size=variance.chunk_size,
    )
    if summary is None:
        return math.nan
    groups = {group: case.model.parameter_groups()[group]}
    rows = summary_statistics(summary, groups, replicates=VARIANCE_REPLICATES, seed=SEED)
    return next(float(r["value"]) for r in rows if r["metric"] == "grad_variance")
