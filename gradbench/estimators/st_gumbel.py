"""Straight-through Gumbel-softmax (Jang, Gu & Poole 2017).

Forward: the discrete sample one-hot(argmax y) (Bernoulli: 1[y > 1/2]), exact for the
categorical distribution. Backward: the gradient of the relaxed y = softmax((log π + g)/τ).
Value hard + (y − stopgrad(y)). Biased.
"""

from __future__ import annotations

from torch import Tensor

from gradbench.estimators.base import register_estimator
from gradbench.estimators.gumbel_softmax import GumbelSoftmax
from gradbench.estimators.nodes import CategoricalNode, StochasticNode, one_hot_argmax


@register_estimator
class StraightThroughGumbel(GumbelSoftmax):
    """Discrete forward pass, relaxed backward pass."""

    name = "st-gumbel"
    summary = "straight-through Gumbel-softmax: one-hot forward, relaxed backward"

    def sample(self, node: StochasticNode) -> Tensor:
        relaxed = self.relaxed_sample(node)
        if isinstance(node, CategoricalNode):
            hard = one_hot_argmax(relaxed.detach())
        else:
            hard = (relaxed.detach() > 0.5).to(relaxed.dtype)
        return hard + (relaxed - relaxed.detach())
