"""Reference without weight noise: the network evaluated at its mean weights, b = A μ.

Not an estimator of the noisy objective's gradient: the variance it leaves is what minibatch
subsampling alone causes, the floor of Kingma, Salimans & Welling (2015)'s Table 1.
"""

from __future__ import annotations

from torch import Tensor

from gradbench.estimators.base import Estimator, register_estimator
from gradbench.estimators.nodes import StochasticNode


@register_estimator
class NoNoise(Estimator):
    """Weight-noise model with its noise switched off (the minimal-variance reference)."""

    name = "no-noise"
    summary = "reference: mean weights, noise switched off (data-subsampling variance only)"
    unbiased = False
    node_kinds = frozenset({"weight-noise"})
    estimates_elbo_gradient = False
    objective = "the loss of the network at its mean weights (no noise)"

    def __init__(self) -> None:
        super().__init__()

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        return node.mean_preactivation()
