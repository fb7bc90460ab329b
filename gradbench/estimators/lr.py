"""Likelihood-ratio estimator (score function, REINFORCE; Williams 1992).

ĝ = f(z) ∇_φ log q_φ(z) with z ~ q_φ drawn without a gradient path, plus the pathwise gradient of
f for its own parameters θ (z held fixed). Surrogate: f(z) + stopgrad(f(z)) · log q_φ(z).
"""

from __future__ import annotations

from torch import Tensor

from gradbench.estimators.base import Estimator, StochasticForward, register_estimator
from gradbench.estimators.nodes import StochasticNode


@register_estimator
class LikelihoodRatio(Estimator):
    """REINFORCE: unbiased for any q, discrete or continuous; often very high variance."""

    name = "lr"
    summary = "likelihood ratio / score function: f(z) ∇ log q(z)"
    unbiased = True
    node_kinds = frozenset({"gaussian", "categorical", "bernoulli"})

    def __init__(self) -> None:
        super().__init__()

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        return node.sample()

    def baseline(self, forward: StochasticForward) -> Tensor | float:
        """The control variate b subtracted from f; none for plain LR."""
        return 0.0

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        centred = forward.data_loss.detach() - self.baseline(forward)
        return forward.loss + centred * forward.log_prob()
