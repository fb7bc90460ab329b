"""pytest-benchmark micro-benchmarks: a training step and a batch of variance draws per model ×
estimator label (``common.estimator_labels``, the paper profile's: every variant such as
``gumbel-softmax[temperature=0.1]`` is its own case, its id ``model/label``), and the
speed-target comparisons of issue 6 side by side in named groups.

The default test run (pyproject's addopts hold ``--benchmark-disable``) runs each body once as a
plain test at the ``fast`` profile, so the benchmarks keep working. To measure, and to compare
runs (``GRADBENCH_BENCH_PROFILE=full`` for the papers' sizes)::

    python -m pytest tests/benchmarks --benchmark-enable --benchmark-only --benchmark-autosave
    python -m pytest tests/benchmarks --benchmark-enable --benchmark-only --benchmark-compare
    GRADBENCH_BENCH_PROFILE=full python -m pytest tests/benchmarks --benchmark-enable \
        --benchmark-only -k speed

``test_speed_protocol_step``: the ARM/DisARM protocol's Bernoulli VAE step of each ``arm``
profile estimator beside the deterministic step (``python -m benchmarks.step_ratios`` prints
their ratios against issue 26's goal, 2 × evaluations).

Every case is built (seeded model, estimator, Adam, minibatches on the device) before the
clock starts; the timed bodies are those of ``benchmarks/common.py``. No test asserts a time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import torch

from benchmarks import common
from gradbench.measure.timing import steps_per_epoch

T = TypeVar("T")

CASES = [
    pytest.param(model, label, id=f"{model}/{label}")
    for model in common.MODEL_NAMES
    for label in common.estimator_labels(model)
]


@pytest.fixture(autouse=True)
def one_thread_when_disabled(benchmark) -> Iterator[None]:
    """With benchmarks disabled (the default run) nothing is timed: use one thread, since tiny
    tensors gain nothing from threads and lose much to spinning ones on a loaded CPU. Measured
    runs keep torch's thread count."""
    if not benchmark.disabled:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def case_or_skip(build: Callable[..., T], model: str, estimator: str) -> T:
    """A benchmark case, skipped where the estimator cannot run on the profile's model
    configuration (asv skips the same combinations)."""
    try:
        return build(model, estimator)
    except NotImplementedError as error:
        pytest.skip(str(error))


def _finite(draws: dict[str, torch.Tensor], count: int) -> bool:
    return all(g.shape[0] == count and bool(torch.isfinite(g).all()) for g in draws.values())


@pytest.mark.parametrize(("model", "estimator"), CASES)
def test_step(benchmark, model: str, estimator: str) -> None:
    """One optimizer step (forward, backward, Adam, observe) on M examples."""
    case = case_or_skip(common.training_case, model, estimator)
    common.train_steps(case)  # warm-up: Adam's state, first-call allocations
    benchmark.group = f"step {model} (M={case.profile.batch_size}, {case.profile.name})"
    loss = benchmark(common.train_steps, case)
    assert torch.isfinite(loss)


@pytest.mark.parametrize(("model", "estimator"), CASES)
def test_variance_draws(benchmark, model: str, estimator: str) -> None:
    """R minibatch gradients through vmap, as the variance measurement draws them."""
    variance = case_or_skip(common.variance_case, model, estimator)
    profile = variance.case.profile
    benchmark.group = (
        f"variance draws {model} (R={variance.draws}, M={profile.batch_size}, {profile.name})"
    )
    draws = benchmark.pedantic(
        common.draw_gradients, args=(variance, True), rounds=profile.rounds, warmup_rounds=1
    )
    assert _finite(draws, variance.draws)


@pytest.mark.parametrize("estimator", ["local-reparam", "no-noise"])
def test_speed_gradient(benchmark, estimator: str) -> None:
    """bayes-mlp seconds per gradient (forward + backward, no optimizer).

    Target: local-reparam ≤ 3× no-noise.
    """
    case = common.training_case("bayes-mlp", estimator)
    common.gradient_once(case)
    benchmark.group = (
        f"speed target bayes-mlp gradient (local-reparam <= 3x no-noise, {case.profile.name})"
    )
    grads = benchmark(common.gradient_once, case)
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("estimator", ["reparam-per-example", "local-reparam"])
def test_speed_epoch_ratio(benchmark, estimator: str) -> None:
    """bayes-mlp optimizer steps; equal step counts, so the time ratio is the epoch ratio."""
    profile = common.bench_profile()
    case = common.training_case("bayes-mlp", estimator, steps=profile.ratio_steps)
    epoch = steps_per_epoch(case.dataset, profile.batch_size)
    benchmark.group = (
        f"speed target bayes-mlp epoch ratio "
        f"({profile.ratio_steps} of {epoch} steps, {profile.name})"
    )
    benchmark.extra_info.update(steps_timed=len(case.batches), steps_per_epoch=epoch)
    loss = benchmark.pedantic(
        common.train_steps, args=(case,), rounds=profile.rounds, warmup_rounds=1
    )
    if not benchmark.disabled:
        per_step = benchmark.stats.stats.median / len(case.batches)
        benchmark.extra_info["seconds_per_epoch_extrapolated"] = per_step * epoch
    assert torch.isfinite(loss)


@pytest.mark.parametrize("network", ["gaussian-vae-reparam", "deterministic-autoencoder"])
def test_speed_vae_step(benchmark, network: str) -> None:
    """gaussian-vae reparam step vs the same network as a deterministic autoencoder.

    Target: reparam ≤ 1.3× the autoencoder.
    """
    case = common.training_case("gaussian-vae", "reparam")
    body = common.train_steps if network == "gaussian-vae-reparam" else common.autoencoder_steps
    body(case)
    benchmark.group = (
        f"speed target gaussian-vae step vs autoencoder (<= 1.3x, {case.profile.name})"
    )
    loss = benchmark(body, case)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("network", ["bayes-mlp-local-reparam", "deterministic-mlp"])
def test_speed_local_reparam_step(benchmark, network: str) -> None:
    """bayes-mlp local-reparam step vs a plain MLP of the same sizes with fused Adam.

    Target: local-reparam ≤ 3× the deterministic MLP.
    """
    case = common.training_case("bayes-mlp", "local-reparam")
    if network == "deterministic-mlp":
        reference = common.deterministic_reference(case)
        body = functools.partial(common.deterministic_steps, case, reference)
    else:
        body = functools.partial(common.train_steps, case)
    body()
    benchmark.group = (
        f"speed target bayes-mlp local-reparam step vs deterministic MLP, fused Adam "
        f"(<= 3x, {case.profile.name})"
    )
    loss = benchmark(body)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("path", ["vmap", "loop"])
def test_speed_variance_draws(benchmark, path: str) -> None:
    """gaussian-vae reparam: R draws at M = 100 through vmap vs a Python loop; target ≥ 5×."""
    variance = common.variance_case("gaussian-vae", "reparam")
    profile = variance.case.profile
    benchmark.group = (
        f"speed target gaussian-vae variance draws vmap >= 5x loop "
        f"(R={variance.draws}, M={profile.batch_size}, {profile.name})"
    )
    draws = benchmark.pedantic(
        common.draw_gradients,
        args=(variance, path == "vmap"),
        rounds=profile.rounds,
        warmup_rounds=1,
    )
    assert _finite(draws, variance.draws)


DETERMINISTIC = "deterministic"


@pytest.mark.parametrize("network", [*common.protocol_labels(), DETERMINISTIC])
def test_speed_protocol_step(benchmark, network: str) -> None:
    """The ARM/DisARM protocol's Bernoulli VAE (``arm`` profile's options, M = 50): each
    estimator's step beside the deterministic step of the same network, in one group.

    Target: each step ≤ 2 × its evaluations × the deterministic step; ``extra_info`` holds the
    evaluations and one round's ratio (``python -m benchmarks.step_ratios`` times many).
    """
    case = common.protocol_case("lr" if network == DETERMINISTIC else network)
    reference = common.deterministic_reference(case)
    if network == DETERMINISTIC:
        body = functools.partial(common.deterministic_steps, case, reference)
    else:
        body = functools.partial(common.train_steps, case)
        ratio = common.fastest_ratio(*common.step_timings(case, reference, repeats=1))
        assert 0 < ratio < float("inf")
        benchmark.extra_info.update(evaluations=case.estimator.evaluations, step_ratio=ratio)
    body()
    benchmark.group = (
        f"speed target bernoulli-vae ARM/DisARM protocol step vs deterministic "
        f"(<= 2x evaluations, {len(case.batches)} steps of M={len(case.batches[0][0])}, "
        f"{case.profile.name})"
    )
    loss = benchmark(body)
    assert torch.isfinite(loss)

