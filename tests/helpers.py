"""Statistical assertions shared by the tests (torch's "Note [Randomized statistical tests]").

Tolerances come from standard errors. An assertion over n coordinates uses
z = Φ⁻¹(1 − α / 2n) (Bonferroni), so that it fails by chance with probability at most
α = 1e-4 however many coordinates it checks (z ≈ 3.9 for one coordinate, 5.2 for 600).
"""

from __future__ import annotations

import torch
from scipy import stats
from torch import Tensor

FALSE_FAILURE_RATE = 1e-4


def z_for(coordinates: int) -> float:
    """The two-sided z bound that keeps the family-wise false-failure rate at 1e-4."""
    return float(stats.norm.isf(FALSE_FAILURE_RATE / (2 * max(coordinates, 1))))


Z = z_for(1)


def standard_error(draws: Tensor) -> Tensor:
    """SE of the mean of draws along dimension 0: std / √n."""
    return draws.std(0) / draws.shape[0] ** 0.5


def variance_standard_error(draws: Tensor) -> Tensor:
    """SE of the sample variance along dimension 0: √((m4 − s⁴) / n), from the draws' 4th moment."""
    centred = draws - draws.mean(0)
    fourth = centred.pow(4).mean(0)
    return ((fourth - centred.square().mean(0).square()) / draws.shape[0]).sqrt()


ROUNDING = 1e-9
"""Relative rounding floor added to the SE, so that deterministic draws (enumeration, a
noiseless coordinate) compare with a closed form up to round-off rather than bit for bit."""


def z_scores(draws: Tensor, exact: Tensor) -> Tensor:
    """(mean − exact) / SE per coordinate, the SE floored at rounding level (a zero SE with an
    exact match gives 0)."""
    error = draws.mean(0) - exact
    floor = ROUNDING * (exact.abs() + draws.abs().mean(0))
    se = (standard_error(draws).square() + floor.square()).sqrt()
    return torch.where(se > 0, error / se.clamp_min(1e-300), torch.where(error == 0, 0.0, torch.inf))


def assert_unbiased(draws: Tensor, exact: Tensor, what: str = "") -> None:
    """Assert |mean − exact| < z·SE for every coordinate of the draws [n, ...], z from their count."""
    scores = z_scores(draws, exact)
    z = z_for(scores.numel())
    worst = float(scores.abs().max())
    assert worst < z, f"{what}: mean {draws.mean(0).tolist()} vs exact {exact.tolist()} (|z| = {worst:.2f})"


def assert_biased(draws: Tensor, exact: Tensor, what: str = "") -> None:
    """Assert some coordinate's mean differs from the exact value by more than z·SE."""
    scores = z_scores(draws, exact)
    z = z_for(scores.numel())
    worst = float(scores.abs().max())
    assert worst > z, f"{what}: no significant bias (max |z| = {worst:.2f})"
