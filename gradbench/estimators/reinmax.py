"""ReinMax (Liu, Zhao, Lu & Gao 2023, "Bridging discrete and backpropagation: straight-through
and beyond").

Forward: an exact one-hot sample D ~ Cat(π), π = softmax(θ). Backward: Heun's second-order
approximation of the gradient through D, 2 ∇π₁ − ½ ∇π with π₁ = (D + softmax(θ/τ))/2 held
differentiable as softmax(θ + stopgrad(log π₁ − θ)) (so ∇π₁ is the softmax Jacobian at π₁).
At τ = 1 it is exact in expectation for an f linear in D (E[J(π₁)] = ¾ J(π)); otherwise biased.
A Bernoulli b is the two-class categorical D = (1 − b, b) with logits (0, l). The temperature is
fixed, as in the paper, not annealed; the default 1.3 is the setting its Table 8 lists for the
10×30 categorical VAE, the thesis's latent configuration.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.base import Estimator, register_estimator
from gradbench.estimators.nodes import CategoricalNode, StochasticNode


def reinmax_straight_through(logits: Tensor, one_hot: Tensor, temperature: float) -> Tensor:
    """The value ``one_hot`` D with ReinMax's backward to ``logits`` θ, both [..., classes]."""
    # log(D + softmax(θ/τ)) is log π₁ up to the constant log 2, which the softmax removes; where
    # the tempered softmax underflows it is −∞, a zero probability with a zero gradient.
    log_midpoint = torch.log(one_hot + torch.softmax(logits.detach() / temperature, dim=-1))
    midpoint = torch.softmax(logits + (log_midpoint - logits.detach()), dim=-1)
    direction = 2.0 * midpoint - 0.5 * torch.softmax(logits, dim=-1)
    return one_hot + (direction - direction.detach())


@register_estimator
class ReinMax(Estimator):
    """One-hot forward pass; second-order (Heun) straight-through backward pass."""

    name = "reinmax"
    summary = "ReinMax: one-hot forward, backward 2∇π₁ − ½∇π with π₁ = (D + softmax(θ/τ))/2"
    unbiased = False
    node_kinds = frozenset({"categorical", "bernoulli"})

    def __init__(self, *, temperature: float = 1.3) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        hard = node.sample()
        if isinstance(node, CategoricalNode):
            return reinmax_straight_through(node.log_probs(), hard, self.temperature)
        logits = torch.stack([torch.zeros_like(node.logits), node.logits], dim=-1)
        one_hot = torch.stack([1.0 - hard, hard], dim=-1)
        return reinmax_straight_through(logits, one_hot, self.temperature)[..., 1]
