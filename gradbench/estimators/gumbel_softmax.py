"""Gumbel-softmax / Concrete relaxation (Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017).

Categorical: y = softmax((log π + g) / τ), g ~ Gumbel(0, 1). Bernoulli (binary Concrete):
y = σ((l + log u − log(1 − u)) / τ). Differentiable, biased for the discrete objective when τ > 0.
Annealing: τ_t = max(τ_min, τ_0 exp(−r t)) with t the number of optimizer steps taken.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.base import Estimator, annealed, register_estimator
from gradbench.estimators.nodes import CategoricalNode, StochasticNode, gumbel_like, logistic_like


@register_estimator
class GumbelSoftmax(Estimator):
    """Relaxed sample; the model continues with the relaxed, not the discrete, value."""

    name = "gumbel-softmax"
    summary = "Gumbel-softmax relaxation softmax((log π + g)/τ)"
    unbiased = False
    node_kinds = frozenset({"categorical", "bernoulli"})

    def __init__(
        self, *, temperature: float = 1.0, min_temperature: float = 0.0, anneal_rate: float = 0.0
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 <= min_temperature <= temperature:
            raise ValueError(
                f"min_temperature must lie in [0, temperature={temperature}], got {min_temperature}"
            )
        if anneal_rate < 0:
            raise ValueError(f"anneal_rate must be non-negative, got {anneal_rate}")
        self.initial_temperature = temperature
        self.min_temperature = min_temperature
        self.anneal_rate = anneal_rate

    @property
    def temperature(self) -> float:
        """The current temperature τ_t."""
        return annealed(
            self.initial_temperature, self.min_temperature, self.anneal_rate, int(self.steps)
        )

    def relaxed_sample(self, node: StochasticNode) -> Tensor:
        """The Concrete sample y at the current temperature, differentiable in the logits."""
        self._check_kind(node)
        tau = self.temperature
        if isinstance(node, CategoricalNode):
            log_pi = node.log_probs()
            return torch.softmax((log_pi + gumbel_like(log_pi)) / tau, dim=-1)
        return torch.sigmoid((node.logits + logistic_like(node.logits)) / tau)

    def sample(self, node: StochasticNode) -> Tensor:
        return self.relaxed_sample(node)
