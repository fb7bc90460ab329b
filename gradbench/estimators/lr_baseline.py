"""Likelihood ratio with a baseline (control variate).

ĝ = (f(z) − b) ∇_φ log q_φ(z); unbiased while b does not depend on the current z, since
E[∇ log q] = 0. ``baseline="ema"`` (default): b ← ρ b + (1 − ρ) mean f after every step
(ρ = ``baseline_decay``). ``baseline="learned"``: an input-dependent b_ψ(x), an MLP fitted to f by
least squares (NVIL, Mnih & Gregor 2014), one fused Adam step (``baseline_lr``) per observed
minibatch, its gradient in closed form;
a learned constant where the problem has no input. Either way the baseline changes only in
``observe``, after the step that used it. The baselines are those of ``control_variates``.
"""

from __future__ import annotations

from torch import Tensor

from gradbench.estimators.base import StochasticForward, register_estimator
from gradbench.estimators.control_variates import LearnedBaseline, MovingAverage
from gradbench.estimators.lr import LikelihoodRatio

BASELINES = ("ema", "learned")


@register_estimator
class LikelihoodRatioBaseline(LikelihoodRatio):
    """REINFORCE with a moving-average or learned, input-dependent baseline."""

    name = "lr-baseline"
    summary = "likelihood ratio with a baseline: (f(z) − b) ∇ log q(z)"

    def __init__(
        self,
        *,
        baseline: str = "ema",
        baseline_decay: float = 0.9,
        baseline_hidden: int = 100,
        baseline_lr: float = 3e-3,
    ) -> None:
        super().__init__()
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
        self.kind = baseline
        self.moving = MovingAverage(baseline_decay)
        self.learned = LearnedBaseline(baseline_hidden, baseline_lr)

    @property
    def average(self) -> Tensor:
        """The moving average b of the ``ema`` baseline."""
        return self.moving.average

    @property
    def tracks_losses(self) -> bool:
        return True

    def bind(self, input_dim: int | None) -> None:
        """For the learned baseline: b_ψ(x) = MLP(x) with one tanh hidden layer, or a constant."""
        if self.kind == "learned":
            self.learned.bind(input_dim)

    def baseline(self, forward: StochasticForward) -> Tensor | float:
        if self.kind == "ema":
            return self.moving.average
        return self.learned.predict(forward)

    def observe(self, forward: StochasticForward) -> None:
        """EMA: b ← ρ b + (1 − ρ) mean f. Learned: one Adam step on mean (f − b_ψ(x))²."""
        super().observe(forward)
        if self.kind == "learned":
            self.learned.fit(forward, forward.data_loss)
        else:
            self.moving.update(forward.data_loss)
