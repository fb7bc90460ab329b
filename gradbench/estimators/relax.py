"""RELAX (Grathwohl, Choi, Wu, Roeder & Duvenaud 2018), Bernoulli and categorical nodes.

ĝ = [f(b) − c_ψ(z̃)] ∇ log p(b) + ∇ c_ψ(z) − ∇ c_ψ(z̃), b = H(z), z̃ ~ p(z | b), with the learned
surrogate c_ψ(·) = η f(σ_λ(·)) + r_ψ(σ_λ(·), x): REBAR's relaxation plus a small network r_ψ
(one tanh hidden layer) on the relaxed sample, and on the model input x where the nodes record
it (``forward.context()``). Unbiased for every ψ. Three decoder evaluations per gradient, as
REBAR, plus r_ψ at the two relaxed rows (one small pass, negligible next to the decoder).

ψ, η and log λ descend a single-sample estimate of ∂ E‖ĝ‖² / ∂(ψ, η, log λ) with the estimator's
own Adam, exactly as REBAR tunes η and λ (see :mod:`gradbench.estimators.rebar`: the double
backprop runs in ``gradient_term`` while the step's graph is alive, the step's backward leaves
the variance gradient in the surrogate's ``.grad`` and ``observe`` applies it). Nothing leaks
either way: ĝ reaches the model only detached, as ⟨stopgrad(ĝ), logits⟩, so the model's loss
sends no gradient into ψ, and the tuning term has zero gradient for every model parameter.

r_ψ is ``learned``, a :class:`LearnedSurrogate` from :mod:`gradbench.estimators.control_variates`;
its input size is the relaxed sample's (and x's) size, which only a forward pass reveals: the
network is built by the first ``observe`` (or by ``load_state_dict`` from a saved one), with
its output layer at zero, so that RELAX starts as REBAR and a RELAX that never observed a step
(a measurement at fixed parameters) is REBAR at its η and λ.
"""

from __future__ import annotations

from torch import Tensor, nn

from gradbench.estimators.base import StochasticForward, register_estimator
from gradbench.estimators.control_variates import LearnedSurrogate
from gradbench.estimators.rebar import Rebar


@register_estimator
class Relax(Rebar):
    """REBAR with a learned surrogate network added to the relaxation, trained for low variance."""

    name = "relax"
    summary = "RELAX: REBAR with a learned surrogate c_ψ = η f(σ_λ(·)) + r_ψ(σ_λ(·), x)"

    def __init__(
        self,
        *,
        eta: float = 1.0,
        temperature: float = 0.5,
        tune: bool = True,
        tune_lr: float = 1e-3,
        hidden: int = 50,
    ) -> None:
        super().__init__(eta=eta, temperature=temperature, tune=tune, tune_lr=tune_lr)
        self.learned = LearnedSurrogate(hidden)

    @property
    def network(self) -> nn.Sequential | None:
        """r_ψ's network, None until built."""
        return self.learned.network

    def tuning_parameters(self) -> list[nn.Parameter]:
        """The parameters ``observe`` tunes: η, log λ and, once built, r_ψ's."""
        return super().tuning_parameters() + list(self.learned.parameters())

    def control_variates(self, forward: StochasticForward, live: bool) -> Tensor:
        """c_ψ(σ_λ(z)), c_ψ(σ_λ(z̃)) = η f + r_ψ at the relaxed rows, [2, batch]; every
        surrogate parameter detached unless tuning is live."""
        controls = super().control_variates(forward, live)
        if self.learned.network is None:
            return controls
        return controls + self.learned(forward, live)

    def observe(self, forward: StochasticForward) -> None:
        """Build r_ψ on the first call and hand its parameters to the tuner (also those of an r_ψ
        that ``load_state_dict`` rebuilt); then REBAR's Adam step, now over ψ too."""
        self.learned.build_for(forward)
        tracked = {id(p) for group in self.tuner.param_groups for p in group["params"]}
        untracked = [p for p in self.learned.parameters() if id(p) not in tracked]
        if untracked:
            self.tuner.add_param_group({"params": untracked})
        super().observe(forward)
