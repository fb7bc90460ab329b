"""Gumbel-Rao (Paulus, Maddison & Krause 2021, "Rao-Blackwellizing the straight-through
Gumbel-softmax gradient estimator").

Forward: D = one-hot(argmax(log π + G)), an exact categorical sample. Backward: the
straight-through Gumbel-softmax Jacobian averaged over K draws of the Gumbels given D,
(1/K) Σ_j ∂ softmax((log π + G̃⁽ʲ⁾)/τ) / ∂θ with z̃⁽ʲ⁾ = log π + G̃⁽ʲ⁾ ~ (log π + G) | argmax = D.
The gradient does not flow through z̃'s dependence on θ given D: each G̃⁽ʲ⁾ = z̃⁽ʲ⁾ − log π is
held fixed, as the straight-through estimator holds G. The estimate is then a Monte Carlo
conditional expectation E[ĝ_ST | D] of the straight-through one: the same mean (the same bias),
a variance no larger for any K and falling as K grows. One decoder evaluation; K relaxed
softmaxes. Temperature options and annealing as gumbel-softmax's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.base import register_estimator
from gradbench.estimators.gumbel_softmax import GumbelSoftmax
from gradbench.estimators.nodes import (
    StochasticNode,
    conditional_gumbel,
    expand_to,
    uniform_like,
)


def conditional_gumbels(log_probs: Tensor, one_hot: Tensor, samples: int) -> Tensor:
    """``samples`` draws of z = log π + G given argmax z = k* (``one_hot``), no gradient path.

    ``log_probs`` is the normalised log π [..., classes]; returns [samples, ..., classes]. The
    maximum z_{k*} is a standard Gumbel (log Σ π = 0) independent of k*; every other z_k is
    Gumbel(log π_k) truncated to lie below it: z̃_k = −log(e^{−(log π_k + G_k)} + e^{−z̃_{k*}}).
    With G = −log(−log v) this is Paulus et al.'s z̃_{k*} = −log(−log v_{k*}),
    z̃_k = −log(−log v_k / π_k − log v_{k*}).
    """
    log_probs = log_probs.detach()
    return conditional_gumbel(log_probs, one_hot, uniform_like(expand_to(log_probs, (samples,))))


@register_estimator
class GumbelRao(GumbelSoftmax):
    """One-hot forward pass; backward averaged over K conditional Gumbel draws given D."""

    name = "gumbel-rao"
    summary = "Gumbel-Rao: straight-through Gumbel-softmax Rao-Blackwellised over K Gumbels given D"
    node_kinds = frozenset({"categorical"})

    def __init__(
        self,
        *,
        samples: int = 10,
        temperature: float = 0.5,
        initial_temperature: float = 1.0,
        anneal_fraction: float = 0.5,
    ) -> None:
        super().__init__(
            temperature=temperature,
            initial_temperature=initial_temperature,
            anneal_fraction=anneal_fraction,
        )
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self.samples = samples

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        log_pi = node.log_probs()
        hard = node.sample()
        noise = conditional_gumbels(log_pi, hard, self.samples) - log_pi.detach()
        relaxed = torch.softmax((log_pi + noise) / self.temperature, dim=-1).mean(0)
        return hard + (relaxed - relaxed.detach())
