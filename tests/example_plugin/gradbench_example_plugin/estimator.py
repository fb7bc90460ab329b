"""An estimator from another package, found through the entry-point group ``gradbench.estimators``.

ĝ = (f(z) − c) ∇_φ log q_φ(z) with a fixed constant c: unbiased for every c, since
E[∇ log q] = 0 (Williams 1992). The class is not decorated: the entry point names it and
gradbench registers it on load.
"""

from __future__ import annotations

from torch import Tensor

from gradbench.estimators import Estimator, StochasticForward
from gradbench.estimators.nodes import StochasticNode


class ConstantBaseline(Estimator):
    """Score function with a constant baseline."""

    name = "constant-baseline"
    summary = "plugin example: (f(z) − c) ∇ log q(z), constant c"
    unbiased = True
    node_kinds = frozenset({"gaussian", "categorical", "bernoulli"})

    def __init__(self, *, constant: float = 1.0) -> None:
        super().__init__()
        self.constant = constant

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        return node.sample()

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        centred = forward.data_loss.detach() - self.constant
        return forward.mean_loss() + centred * forward.log_prob()
