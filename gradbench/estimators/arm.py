"""ARM, the augment-REINFORCE-merge estimator for Bernoulli latents (Yin & Zhou 2019).

With u ~ U(0, 1)^d, the antithetic pair b = 1[u < σ(α)] and b̃ = 1[u > σ(−α)] (each exactly
Bernoulli(σ(α))) gives ĝ_α = [f(b̃) − f(b)] (u − ½) for the logits α. Unbiased; 2 evaluations.

The estimator stays a pure function of the forward pass without keeping u: f depends on u only
through the pair, and u given the pair is uniform on the interval of values that produce it, so
:meth:`ARM.gradient_term` draws u afresh from that interval. (u, b, b̃) then has exactly ARM's
joint law, so the estimator's distribution is ARM's; DisARM is its expectation over that interval.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.base import Estimator, StochasticForward, register_estimator
from gradbench.estimators.nodes import BernoulliNode, StochasticNode


def antithetic_pair(logits: Tensor, uniform: Tensor) -> Tensor:
    """The pair (b, b̃) = (1[u < σ(α)], 1[u > σ(−α)]) stacked on a leading dimension of 2."""
    return torch.stack(
        [uniform < torch.sigmoid(logits), uniform > torch.sigmoid(-logits)]
    ).to(logits.dtype)


def uniform_given_pair(logits: Tensor, pair: Tensor) -> Tensor:
    """A draw of u ~ U(0, 1) conditioned on the pair it produced: uniform on the interval where
    1[u < σ(α)] = b and 1[u > σ(−α)] = b̃ (of positive length for every pair that occurs)."""
    below, above = torch.sigmoid(logits), torch.sigmoid(-logits)
    b, b_tilde = pair[0], pair[1]
    low = torch.maximum((1 - b) * below, b_tilde * above)
    high = torch.minimum(b * below + (1 - b), b_tilde + (1 - b_tilde) * above)
    return low + torch.rand_like(low) * (high - low)


def per_coordinate(per_example: Tensor, node: BernoulliNode) -> Tensor:
    """A [batch] tensor viewed as [batch, 1, ...], broadcasting over the node's event dims."""
    return per_example.reshape(*per_example.shape, *(1,) * len(node.event_shape))


def sum_event(values: Tensor, node: BernoulliNode) -> Tensor:
    """``values`` [batch, *event] summed over the node's event dimensions: [batch]."""
    dims = tuple(range(-len(node.event_shape), 0))
    return values.sum(dims) if dims else values


@register_estimator
class ARM(Estimator):
    """Antithetic pair of Bernoulli samples; the loss difference weighted by u − ½."""

    name = "arm"
    summary = "augment-REINFORCE-merge: antithetic pair, [f(b̃) − f(b)] (u − ½)"
    unbiased = True
    node_kinds = frozenset({"bernoulli"})

    def __init__(self) -> None:
        super().__init__()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The antithetic pair (b, b̃)."""
        return (2,)

    def sample(self, node: StochasticNode) -> Tensor:
        """(b, b̃) from one u ~ U(0, 1)^d, shape [2, *batch, *event], with no gradient path."""
        self._check_kind(node)
        logits = node.logits.detach()
        return antithetic_pair(logits, torch.rand_like(logits))

    def logit_direction(self, node: BernoulliNode, pair: Tensor, difference: Tensor) -> Tensor:
        """ĝ_α [batch, *event] of one node, given f(b̃) − f(b) [batch, 1, ...] (detached)."""
        return difference * (uniform_given_pair(node.logits.detach(), pair) - 0.5)

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        """Σ stopgrad(ĝ_α) α over every node, plus the mean loss of the pair: the pathwise
        gradient for the model's own parameters and the analytic regularizer's."""
        difference = (forward.data_loss[1] - forward.data_loss[0]).detach()
        term = forward.mean_loss()
        for node, pair in zip(forward.nodes, forward.samples):
            direction = self.logit_direction(node, pair, per_coordinate(difference, node))
            term = term + sum_event(direction.detach() * node.logits, node)
        return term
