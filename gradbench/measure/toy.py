"""Estimator draws on a toy problem, compared with its closed-form gradient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gradbench.estimators.base import Estimator, applicable_estimators
from gradbench.gradients import gradient_draws
from gradbench.models.toy import ToyProblem

BASELINE_WARMUP_DRAWS = 1000


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
    if samples < 2:
        raise ValueError(f"samples must be at least 2, got {samples}")
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
