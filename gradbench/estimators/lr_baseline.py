"""Likelihood ratio with a baseline (control variate).

ĝ = (f(z) − b) ∇_φ log q_φ(z); unbiased while b does not depend on the current z, since
E[∇ log q] = 0. ``baseline="ema"`` (default): b ← ρ b + (1 − ρ) mean f after every step
(ρ = ``baseline_decay``). ``baseline="learned"``: an input-dependent b_ψ(x), an MLP fitted to f by
least squares (NVIL, Mnih & Gregor 2014), one Adam step (``baseline_lr``) per observed minibatch;
a learned constant where the problem has no input. Either way the baseline changes only in
``observe``, after the step that used it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradbench.estimators.base import StochasticForward, register_estimator
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
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must lie in [0, 1), got {baseline_decay}")
        if baseline_hidden < 1:
            raise ValueError(f"baseline_hidden must be positive, got {baseline_hidden}")
        if not baseline_lr > 0:
            raise ValueError(f"baseline_lr must be positive, got {baseline_lr}")
        self.kind = baseline
        self.decay = baseline_decay
        self.hidden = baseline_hidden
        self.learning_rate = baseline_lr
        self.register_buffer("average", torch.zeros(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.network: nn.Module | None = None
        self.fitter: torch.optim.Optimizer | None = None

    @property
    def tracks_losses(self) -> bool:
        return True

    def bind(self, input_dim: int | None) -> None:
        """For the learned baseline: b_ψ(x) = MLP(x) with one tanh hidden layer, or a constant."""
        if self.kind != "learned":
            return
        if input_dim is None:
            self.network = _Constant()
        else:
            self.network = nn.Sequential(
                nn.Linear(input_dim, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1)
            )
        self.fitter = torch.optim.Adam(self.network.parameters(), lr=self.learning_rate)

    def baseline(self, forward: StochasticForward) -> Tensor | float:
        if self.kind == "ema":
            return self.average
        return self._learned(forward).detach()

    def observe(self, forward: StochasticForward) -> None:
        """EMA: b ← ρ b + (1 − ρ) mean f. Learned: one Adam step on mean (f − b_ψ(x))²."""
        super().observe(forward)
        target = forward.data_loss.detach()
        if self.kind == "learned":
            if self.fitter is None:
                raise RuntimeError("the learned baseline needs estimator.bind(input_dim) first")
            with torch.enable_grad():
                self.fitter.zero_grad(set_to_none=True)
                (target - self._learned(forward)).square().mean().backward()
                self.fitter.step()
        elif bool(self.initialised):
            self.average.mul_(self.decay).add_((1.0 - self.decay) * target.mean())
        else:
            self.average.copy_(target.mean())
            self.initialised.fill_(True)

    def _learned(self, forward: StochasticForward) -> Tensor:
        if self.network is None:
            raise RuntimeError("the learned baseline needs estimator.bind(input_dim) first")
        if isinstance(self.network, _Constant):
            return self.network(forward.data_loss)
        context = forward.context()
        if context is None:
            raise ValueError("an input-dependent baseline needs the model input as node context")
        return self.network(context.detach()).squeeze(-1)


class _Constant(nn.Module):
    """A learned scalar baseline, for problems without an input to condition on."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()))

    def forward(self, like: Tensor) -> Tensor:
        return self.value.expand_as(like)
