"""Estimator draws on a toy problem, compared with its closed-form gradient."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from gradbench.estimators.base import Estimator, applicable_estimators
from gradbench.gradients import gradient_draws
from gradbench.models.toy import ToyProblem

BASELINE_WARMUP_DRAWS = 1000
DRAW_COPIES = 3
"""Copies of the draws held at the peak of :func:`run_toy`: the chunks, their concatenation,
and a reduction's temporary."""


def available_memory_bytes() -> int:
    """This machine's physical memory not in use (``SC_AVPHYS_PAGES``; all of it where the
    system does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def draws_memory_bytes(problem: ToyProblem, samples: int) -> int:
    """Memory the draws take at their peak: samples × parameters × bytes per element ×
    :data:`DRAW_COPIES`."""
    params = problem.parameters()
    per_draw = sum(p.numel() * p.element_size() for p in params.values())
    return samples * per_draw * DRAW_COPIES


def check_samples(problem: ToyProblem, samples: int) -> None:
    """ValueError unless ``samples`` ≥ 2 and their draws fit in the available memory."""
    if samples < 2:
        raise ValueError(f"samples must be at least 2, got {samples}")
    needed, available = draws_memory_bytes(problem, samples), available_memory_bytes()
    if needed > available:
        raise ValueError(
            f"--samples {samples} needs about {needed / 2**30:.1f} GiB for its draws, over the "
            f"{available / 2**30:.1f} GiB of memory available; draw fewer"
        )


@dataclass
class ToyResult:
    """Per differentiated parameter: exact gradient, mean, standard error and variance of draws."""

    problem: str
    estimator: str
    params: dict[str, Any]
    samples: int
    exact: dict[str, list[float]]
    mean: dict[str, list[float]]
    stderr: dict[str, list[float]]
    variance: dict[str, list[float]]

    def as_dict(self) -> dict[str, Any]:
        """The JSON object ``gradbench toy --format json`` prints."""
        return dict(vars(self))


def check_applicable(problem: ToyProblem, estimator: Estimator) -> None:
    """Raise ValueError when ``estimator`` cannot be used on ``problem``."""
    if not estimator.applies_to(problem.node_kinds, problem.has_inverse):
        valid = applicable_estimators(problem.node_kinds, problem.has_inverse)
        raise ValueError(
            f"estimator {estimator.label!r} does not apply to problem {problem.name!r}; "
            f"applicable: {', '.join(valid)}"
        )


def toy_draws(
    problem: ToyProblem, estimator: Estimator, samples: int, seed: int, vectorize: bool = True
) -> dict[str, torch.Tensor]:
    """``samples`` independent gradient draws at the problem's parameters: name → [samples, ...].

    An estimator whose state tracks the losses (a moving-average or learned baseline) is first
    settled on draws that are not kept, then frozen, so the kept draws are independent and the
    baseline does not depend on them.
    """
    check_applicable(problem, estimator)
    torch.manual_seed(seed)
    estimator.bind(None)
    params = problem.parameters()
    if estimator.tracks_losses:
        for _ in range(BASELINE_WARMUP_DRAWS):
            estimator.observe(problem.forward(params, estimator))

    def surrogate(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return estimator.surrogate(problem.forward(p, estimator)).mean()

    return gradient_draws(surrogate, params, samples, vectorize=vectorize)


def run_toy(problem: ToyProblem, estimator: Estimator, samples: int = 10_000, seed: int = 0) -> ToyResult:
    """Draw ``samples`` gradients and summarise them against the exact gradient."""
    check_samples(problem, samples)
    draws = toy_draws(problem, estimator, samples, seed)
    exact = problem.exact_gradient()
    return ToyResult(
        problem=problem.name,
        estimator=estimator.label,
        params=problem.settings(),
        samples=samples,
        exact={k: v.flatten().tolist() for k, v in exact.items()},
        mean={k: d.mean(0).flatten().tolist() for k, d in draws.items()},
        stderr={k: (d.std(0) / samples**0.5).flatten().tolist() for k, d in draws.items()},
        variance={k: d.var(0).flatten().tolist() for k, d in draws.items()},
    )
