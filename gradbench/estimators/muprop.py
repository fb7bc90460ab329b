"""MuProp (Gu, Levine, Sutskever & Mnih 2016): REINFORCE with a first-order Taylor control variate.

With the mean-field point μ̄ = E_q[z] (the mean of a Gaussian, σ(logits) for a Bernoulli, the class
probabilities for a categorical) and h(z) = f(μ̄) + f′(μ̄)ᵀ(z − μ̄),
ĝ_φ = (f(z) − h(z) − b) ∇_φ log q_φ(z) + f′(μ̄)ᵀ ∇_φ μ̄,
the second term being ∇_φ E_q[h] = ∇_φ [f(μ̄) + f′(μ̄)ᵀ(E_q[z] − μ̄)]. As in the paper, the
expansion point is deterministic (independent of z) and held fixed inside h (stopgrad): h is then a
valid control variate and the estimator is unbiased; f(μ̄)'s own dependence on φ contributes
nothing. Our choice for the model's own parameters θ (the decoder), as for LR: the pathwise
∇_θ f(z) at the drawn z only, never ∇_θ f(μ̄) (which would bias it).
``baseline="ema"`` adds a moving average b of the residual's mean: E[f(z) − h(z)] = E[f(z)] − f(μ̄)
because h is linear with E[z − μ̄] = 0, so b tracks f(z) − f(μ̄), updated in ``observe``.

One forward pass evaluates f at both points: the sample axis has two rows, row 0 the drawn z
(no gradient path) and row 1 the mean-field point μ̄(φ), which the model decodes like any draw.
f′(μ̄) is then a reverse-mode gradient of row 1's loss with respect to the model's input μ̄
(``FirstOrderTaylor``), so 2 evaluations per gradient, one of them with its gradient. Nodes must
be conditionally independent given the input (every node's parameters come from the input, not
from another node's draw), as in the shared models.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.base import Estimator, StochasticForward, register_estimator
from gradbench.estimators.control_variates import FirstOrderTaylor, MovingAverage, mean_field
from gradbench.estimators.nodes import StochasticNode

BASELINES = ("none", "ema")
DRAWN, MEAN_FIELD = 0, 1
"""Rows of the sample axis: the draw z and the mean-field point μ̄."""


@register_estimator
class MuProp(Estimator):
    """Score function of the residual f(z) − h(z), plus the Taylor term's exact gradient."""

    name = "muprop"
    summary = "MuProp: (f(z) − h(z)) ∇ log q(z) + f′(μ̄)ᵀ ∇ μ̄, h the Taylor expansion at E[z]"
    unbiased = True
    node_kinds = frozenset({"gaussian", "categorical", "bernoulli"})

    def __init__(self, *, baseline: str = "none", baseline_decay: float = 0.9) -> None:
        super().__init__()
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
        self.kind = baseline
        self.moving = MovingAverage(baseline_decay)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Two rows: the draw z and the mean-field point μ̄."""
        return (2,)

    @property
    def tracks_losses(self) -> bool:
        return self.kind == "ema"

    def sample(self, node: StochasticNode) -> Tensor:
        """[z, μ̄] stacked [2, *batch, *event]: z drawn without a gradient path, μ̄(φ) with one."""
        self._check_kind(node)
        return torch.stack([node.sample(), mean_field(node)])

    def value(self, forward: StochasticForward) -> Tensor:
        """The loss at the draw, [batch] (row 1 is f at μ̄, not a sample of the loss)."""
        return forward.loss[DRAWN]

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        """loss(z) + stopgrad(f(z) − h(z) − b) log q(z) + stopgrad(f′(μ̄))ᵀ μ̄(φ), [batch]."""
        if forward.sample_shape != torch.Size(self.sample_shape):
            raise ValueError(
                f"muprop decodes 2 rows per example (z, μ̄) but the data loss has sample shape "
                f"{tuple(forward.sample_shape)}; the model must keep the sample dimension"
            )
        taylor = FirstOrderTaylor.from_row(forward.data_loss, forward.samples, MEAN_FIELD)
        control = taylor([sample[DRAWN] for sample in forward.samples])
        residual = forward.data_loss[DRAWN].detach() - control - self.baseline()
        score = forward.log_prob()[DRAWN]
        return forward.loss[DRAWN] + residual * score + taylor.expectation_term()

    def baseline(self) -> Tensor | float:
        """The moving average of f(z) − f(μ̄) (``baseline="ema"``), else 0."""
        return self.moving.average if self.kind == "ema" else 0.0

    def observe(self, forward: StochasticForward) -> None:
        """EMA baseline: b ← ρ b + (1 − ρ) mean (f(z) − f(μ̄))."""
        super().observe(forward)
        if self.kind == "ema":
            self.moving.update(forward.data_loss[DRAWN] - forward.data_loss[MEAN_FIELD])
