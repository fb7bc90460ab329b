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

r_ψ's input size is the relaxed sample's (and x's) size, which only a forward pass reveals:
the network is built by the first ``observe`` (or by ``load_state_dict`` from a saved one), with
its output layer at zero, so that RELAX starts as REBAR and a RELAX that never observed a step
(a measurement at fixed parameters) is REBAR at its η and λ.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gradbench.estimators.base import StochasticForward, register_estimator
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
        if hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden}")
        self.hidden = hidden
        self.network: nn.Sequential | None = None
        self.register_load_state_dict_pre_hook(self._build_for_state)

    def control_variates(self, forward: StochasticForward, live: bool) -> Tensor:
        """c_ψ(σ_λ(z)), c_ψ(σ_λ(z̃)) = η f + r_ψ at the relaxed rows, [2, batch]; every
        surrogate parameter detached unless tuning is live."""
        controls = super().control_variates(forward, live)
        if self.network is None:
            return controls
        parameters = dict(self.network.named_parameters())
        if not live:
            parameters = {k: v.detach() for k, v in parameters.items()}
        inputs = self._inputs(forward)
        surrogate = torch.func.functional_call(self.network, parameters, (inputs,))
        return controls + surrogate.squeeze(-1)

    def observe(self, forward: StochasticForward) -> None:
        """Build r_ψ on the first call; then REBAR's Adam step, now over ψ too."""
        if self.network is None:
            like = forward.data_loss
            self._build(self._inputs(forward).shape[-1], self.hidden, like.dtype, like.device)
        super().observe(forward)

    def _inputs(self, forward: StochasticForward) -> Tensor:
        """The relaxed rows of every node, flattened per example, and the model input:
        [2, batch, features]."""
        batch = forward.batch_shape
        parts = [sample[1:].flatten(1 + len(batch)) for sample in forward.samples]
        context = forward.context()
        if context is not None:
            parts.append(context.detach().reshape(*batch, -1).expand(2, *batch, -1))
        return torch.cat(parts, dim=-1)

    def _build(self, features: int, hidden: int, dtype: torch.dtype, device: torch.device) -> None:
        """r_ψ = Linear(features, hidden) → tanh → Linear(hidden, 1), its output layer at zero,
        tuned with η and log λ."""
        output = nn.Linear(hidden, 1)
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)
        self.network = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), output).to(
            dtype=dtype, device=device
        )
        self.tuner.add_param_group({"params": list(self.network.parameters())})

    def _build_for_state(
        self, module: nn.Module, state: dict[str, Any], prefix: str, *_: Any
    ) -> None:
        """Load hook: a saved r_ψ is rebuilt at its saved size before its weights are copied."""
        weight = state.get(f"{prefix}network.0.weight")
        if self.network is None and weight is not None:
            self._build(weight.shape[1], weight.shape[0], weight.dtype, weight.device)
