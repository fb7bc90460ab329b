"""REINFORCE with a leave-one-out baseline over K draws (RLOO; Kool, van Hoof & Welling 2019,
"Buy 4 REINFORCE samples, get a baseline for free!").

ĝ = 1/(K−1) Σ_k (f(z_k) − f̄) ∇_φ log q_φ(z_k), f̄ = mean_k f(z_k), z_1..z_K iid ~ q_φ: each draw's
baseline is the mean of the other K − 1 losses, so it never sees its own draw and the estimator is
unbiased. Plus the pathwise gradient of mean_k loss(z_k) for the model's own parameters and the
analytic regularizer. K decoder evaluations per gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.base import Estimator, StochasticForward, register_estimator
from gradbench.estimators.control_variates import leave_one_out
from gradbench.estimators.nodes import StochasticNode


@register_estimator
class LeaveOneOut(Estimator):
    """K draws per example; each draw's score weighted by its loss minus the others' mean."""

    name = "rloo"
    summary = "REINFORCE leave-one-out: 1/(K−1) Σ_k (f(z_k) − f̄) ∇ log q(z_k)"
    unbiased = True
    node_kinds = frozenset({"gaussian", "categorical", "bernoulli"})

    def __init__(self, *, samples: int = 4) -> None:
        super().__init__()
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
            raise ValueError(f"samples must be an int >= 2 (K draws per example), got {samples!r}")
        self.samples = samples

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """K iid draws per example."""
        return (self.samples,)

    def sample(self, node: StochasticNode) -> Tensor:
        """K exact draws [K, *batch, *event] with no gradient path."""
        self._check_kind(node)
        return node.sample(self.sample_shape)

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        """mean_k [loss_k + stopgrad(f_k − b_k) log q(z_k)] with b_k the leave-one-out mean:
        (f_k − b_k) = K/(K−1) (f_k − f̄), so the mean over k is the RLOO sum. [batch]."""
        if forward.sample_shape != torch.Size(self.sample_shape):
            raise ValueError(
                f"rloo drew {self.sample_shape} samples per example but the data loss has sample "
                f"shape {tuple(forward.sample_shape)}; the model must keep the sample dimension"
            )
        losses = forward.data_loss.detach()  # [K, batch]
        centred = losses - leave_one_out(losses)
        return forward.mean_loss() + (centred * forward.log_prob()).mean(0)
