"""Flipout (Wen, Vicol, Ba, Tran & Grosse 2018, "Flipout: efficient pseudo-independent weight
perturbations on mini-batches").

One perturbation ΔW = σ ⊙ ε, ε ~ N(0, I) [n_in, n_out], shared by the minibatch and decorrelated
per example by random signs s_n ∈ {±1}^{n_in} and r_n ∈ {±1}^{n_out}:
b_n = a_n μ + ((a_n ⊙ s_n) ΔW) ⊙ r_n (+ bias). Example n sees the weights μ + diag(s_n) ΔW
diag(r_n), whose law is N(μ, σ²) because ε is symmetric: the per-example marginal of a separate
weight sample, so unbiased, with two matrix products and n_in·n_out + M(n_in + n_out) random
numbers per layer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.base import Estimator, register_estimator
from gradbench.estimators.nodes import StochasticNode


def rademacher_like(values: Tensor) -> Tensor:
    """Independent random signs ±1 with probability ½ each, of the shape of ``values``."""
    return 2.0 * (torch.rand_like(values) < 0.5).to(values.dtype) - 1.0


@register_estimator
class Flipout(Estimator):
    """Pathwise gradient through one shared weight perturbation with per-example sign flips."""

    name = "flipout"
    summary = "flipout: shared ΔW = σ ε, per-example signs b = aμ + ((a ⊙ s) ΔW) ⊙ r"
    unbiased = True
    node_kinds = frozenset({"weight-noise"})

    def __init__(self) -> None:
        super().__init__()

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        std = node.weight_variance().sqrt()  # [n_in, n_out]
        perturbation = std * torch.randn_like(std)
        mean = node.mean_preactivation()  # [batch, n_out]
        flipped = node.inputs * rademacher_like(node.inputs)  # [batch, n_in]
        return mean + (flipped @ perturbation) * rademacher_like(mean)
