"""Statistical assertions shared by the tests (torch's "Note [Randomized statistical tests]").

Tolerances come from standard errors: with z = 4 a single coordinate fails by chance with
probability about 6e-5, small enough for the few hundred coordinates the suite checks.
"""

from __future__ import annotations

import torch
from torch import Tensor

Z = 4.0


def standard_error(draws: Tensor) -> Tensor:
    """SE of the mean of draws along dimension 0: std / √n."""
    return draws.std(0) / draws.shape[0] ** 0.5


def variance_standard_error(draws: Tensor) -> Tensor:
    """SE of the sample variance along dimension 0: √((m4 − s⁴) / n), from the draws' 4th moment."""
    centred = draws - draws.mean(0)
    fourth = centred.pow(4).mean(0)
    return ((fourth - centred.square().mean(0).square()) / draws.shape[0]).sqrt()


def z_scores(draws: Tensor, exact: Tensor) -> Tensor:
    """(mean − exact) / SE per coordinate (a zero SE with an exact match gives 0)."""
    error = draws.mean(0) - exact
    se = standard_error(draws)
    return torch.where(se > 0, error / se.clamp_min(1e-300), torch.where(error == 0, 0.0, torch.inf))


def assert_unbiased(draws: Tensor, exact: Tensor, z: float = Z, what: str = "") -> None:
    """Assert |mean − exact| < z·SE for every coordinate of the draws [n, ...]."""
    scores = z_scores(draws, exact)
    worst = float(scores.abs().max())
    assert worst < z, f"{what}: mean {draws.mean(0).tolist()} vs exact {exact.tolist()} (|z| = {worst:.2f})"


def assert_biased(draws: Tensor, exact: Tensor, z: float = Z, what: str = "") -> None:
    """Assert some coordinate's mean differs from the exact value by more than z·SE."""
    worst = float(z_scores(draws, exact).abs().max())
    assert worst > z, f"{what}: no significant bias (max |z| = {worst:.2f})"
