"""The exact gradient by enumeration: the reference every unbiased estimator is measured against.

∇ Σ_c q(z_c) f(z_c) over all C latent configurations, per example: K^V for V categorical
variables of K classes, 2^d for d Bernoulli units; the encoder's gradient flows through q, the
decoder's through every f(z_c). No sampling noise: its only variance is the minibatch's data
variance. Feasible while C is small (the ReinMax suite of Liu, Zhao, Lu & Gao 2023 enumerates
below 16,384 configurations); larger latents raise :class:`EnumerationTooLarge`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradbench.estimators.base import (
    Estimator,
    NotApplicable,
    StochasticForward,
    register_estimator,
)
from gradbench.estimators.nodes import (
    BernoulliNode,
    CategoricalNode,
    StochasticNode,
    configuration_digits,
)


class EnumerationTooLarge(NotApplicable):
    """A latent with more configurations than the exact estimator may enumerate."""


def configuration_count(node: BernoulliNode | CategoricalNode) -> int:
    """Configurations of one latent: K^V (V variables of K classes) or 2^d (d Bernoulli units)."""
    if isinstance(node, CategoricalNode):
        classes = node.event_shape[-1]
        return classes ** math.prod(node.event_shape[:-1])
    return 2 ** math.prod(node.event_shape)


def enumerate_support(node: BernoulliNode | CategoricalNode) -> Tensor:
    """Every configuration of the node's latent, [C, *event_shape], in the node's dtype, in the
    order of :func:`configuration_digits`: the class (one-hot) of each categorical variable, the
    value of each Bernoulli unit."""
    categorical = isinstance(node, CategoricalNode)
    base = node.event_shape[-1] if categorical else 2
    variables = node.event_shape[:-1] if categorical else node.event_shape
    digits = configuration_digits(math.prod(variables), base, node.logits.device)
    digits = digits.reshape(-1, *variables)
    if categorical:
        return torch.nn.functional.one_hot(digits, base).to(node.logits.dtype)
    return digits.to(node.logits.dtype)


@register_estimator
class Exact(Estimator):
    """Σ_c q(z_c) f(z_c) over every latent configuration: exact value and gradient.

    ``sample`` returns all C configurations (sample shape (C,)), so the model evaluates its
    decoder C times per example. C depends on the model's latent, so :attr:`sample_shape` and
    :attr:`evaluations` are known once :meth:`sample` has seen a node (C is recorded then, a
    Python int fixed by the node's shape); before that they raise RuntimeError.
    """

    name = "exact"
    summary = "exact gradient by enumerating every latent configuration: ∇ Σ_z q(z) f(z)"
    unbiased = True
    node_kinds = frozenset({"categorical", "bernoulli"})

    def __init__(self, *, max_configurations: int = 16384) -> None:
        super().__init__()
        if max_configurations < 1:
            raise ValueError(f"max_configurations must be positive, got {max_configurations}")
        self.max_configurations = max_configurations
        self.configurations: int | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(C,): every configuration of the last node sampled."""
        if self.configurations is None:
            raise RuntimeError(
                f"estimator {self.label!r} draws one value per latent configuration: its sample "
                "shape and evaluations are known once sample() has seen a node"
            )
        return (self.configurations,)

    def sample(self, node: StochasticNode) -> Tensor:
        """All C configurations, [C, *batch, *event], with no gradient path; EnumerationTooLarge
        when C exceeds ``max_configurations``."""
        self._check_kind(node)
        count = configuration_count(node)
        if count > self.max_configurations:
            raise EnumerationTooLarge(
                f"the {node.kind} latent of event shape {tuple(node.event_shape)} has {count} "
                f"configurations, more than max_configurations={self.max_configurations}"
            )
        self.configurations = count
        support = enumerate_support(node)
        batch, event = node.batch_shape, node.event_shape
        return support.reshape(count, *(1,) * len(batch), *event).expand(count, *batch, *event)

    def expectation(self, forward: StochasticForward) -> Tensor:
        """Σ_c q(z_c) data_loss_c + regularizer, [batch]: differentiable in q and every loss."""
        if len(forward.nodes) != 1:
            raise ValueError(
                f"estimator {self.label!r} enumerates one stochastic node; the forward pass has "
                f"{len(forward.nodes)}"
            )
        weights = forward.log_prob().exp()  # [C, batch]
        return (weights * forward.data_loss).sum(0) + forward.regularizer

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        return self.expectation(forward)

    def value(self, forward: StochasticForward) -> Tensor:
        return self.expectation(forward)
