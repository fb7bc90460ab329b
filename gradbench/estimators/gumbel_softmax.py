"""Gumbel-softmax / Concrete relaxation (Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017).

Categorical: y = softmax((log π + g) / τ), g ~ Gumbel(0, 1). Bernoulli (binary Concrete):
y = σ((l + log u − log(1 − u)) / τ). Differentiable, biased for the discrete objective when τ > 0.
Annealing, per epoch as in the thesis (following Jang et al.): τ_e = τ₀ (τ/τ₀)^(e / (f E)) for
epoch e of a planned run of E epochs, so τ falls exponentially from ``initial_temperature`` τ₀
and reaches ``temperature`` τ after the fraction f = ``anneal_fraction`` of the run, then stays.
The variant is named by the τ it reaches; f = 0, or no planned run (a toy), holds τ throughout.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.base import Estimator, geometric_anneal, register_estimator
from gradbench.estimators.nodes import CategoricalNode, StochasticNode, gumbel_like, logistic_like
from gradbench.experiments.metrics import TEMPERATURE


@register_estimator
class GumbelSoftmax(Estimator):
    """Relaxed sample; the model continues with the relaxed, not the discrete, value."""

    name = "gumbel-softmax"
    summary = "Gumbel-softmax relaxation softmax((log π + g)/τ)"
    unbiased = False
    node_kinds = frozenset({"categorical", "bernoulli"})

    def __init__(
        self,
        *,
        temperature: float = 0.5,
        initial_temperature: float = 1.0,
        anneal_fraction: float = 0.5,
    ) -> None:
        super().__init__()
        for option, value in (("temperature", temperature),
                              ("initial_temperature", initial_temperature)):
            if not value > 0:
                raise ValueError(f"{option} must be positive, got {value}")
        if not 0.0 <= anneal_fraction <= 1.0:
            raise ValueError(f"anneal_fraction must lie in [0, 1], got {anneal_fraction}")
        self.final_temperature = temperature
        self.initial_temperature = initial_temperature
        self.anneal_fraction = anneal_fraction

    @property
    def temperature(self) -> float:
        """The current temperature τ_e."""
        if self.anneal_fraction == 0.0:
            return self.final_temperature
        done = self.run_fraction(per_epoch=True)
        progress = None if done is None else done / self.anneal_fraction
        return geometric_anneal(self.initial_temperature, self.final_temperature, progress)

    def schedule(self) -> dict[str, float]:
        return {TEMPERATURE: self.temperature}

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
