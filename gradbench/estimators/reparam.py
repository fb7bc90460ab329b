"""Reparameterization (pathwise) estimator, Kingma & Welling (2014); Rezende et al. (2014).

ĝ = ∇_φ f(g_φ(ε)), ε ~ p(ε). Gaussian latents: z = μ + σ ⊙ ε. Weight noise: one weight sample
W = μ + σ ⊙ ε shared by the whole minibatch (Kingma, Salimans & Welling 2015's "single weight
sample"), so the per-example gradient terms are correlated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.base import Estimator, register_estimator
from gradbench.estimators.nodes import GaussianNode, StochasticNode


@register_estimator
class Reparameterization(Estimator):
    """Pathwise gradient; weight noise shared across the minibatch."""

    name = "reparam"
    summary = "reparameterization z = μ + σ ε; one weight sample per minibatch"
    unbiased = True
    node_kinds = frozenset({"gaussian", "weight-noise"})

    def __init__(self) -> None:
        super().__init__()

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        if isinstance(node, GaussianNode):
            return node.reparameterize(node.noise())
        std = node.weight_variance().sqrt()
        weight = node.weight_mean + std * torch.randn_like(std)  # [n_in, n_out]
        out = node.inputs @ weight
        return out if node.bias is None else out + node.bias
