"""Control variates that compose with score-function estimators.

A score-function estimator stays unbiased when it subtracts a control variate b from the loss
it multiplies with the score, ĝ = (f(z) − b) ∇ log q(z) (+ ∇ E_q[b] when b depends on z), as
long as b does not depend on the z it multiplies: E[∇ log q] = 0. Here:

- :class:`MovingAverage`: b = an exponential moving average of past losses.
- :class:`LearnedBaseline`: b_ψ(x), an input-dependent baseline fitted to f by least squares
  (NVIL, Mnih & Gregor 2014).
- :func:`leave_one_out`: for K draws per example, b_k = the mean of the other K − 1 losses
  (Kool, van Hoof & Welling 2019).
- :class:`FirstOrderTaylor`: MuProp's h(z) = f(μ̄) + f′(μ̄)ᵀ(z − μ̄) around the mean-field point
  μ̄ = E_q[z] (Gu, Levine, Sutskever & Mnih 2016), and the term that restores ∇ E_q[h].
- :class:`RelaxedControlVariate`: REBAR's c(z) = η f(σ_λ(z)), the loss at the continuous
  relaxation σ_λ(z) = σ(z/λ) (softmax(z/λ) for a categorical) of the discrete b = H(z), with η
  and log λ learnable (Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017).
- :class:`LearnedSurrogate`: RELAX's r_ψ, added to it for c_ψ(z) = η f(σ_λ(z)) + r_ψ(σ_λ(z), x),
  a small network on the relaxed sample and the model input (Grathwohl, Choi, Wu, Roeder &
  Duvenaud 2018).

The last two are evaluated at z ~ p(z) and at z̃ ~ p(z | b) and corrected by ∇ c(z) − ∇ c(z̃),
which :mod:`gradbench.estimators.rebar` and :mod:`gradbench.estimators.relax` form; there η, λ
and ψ are tuned for low variance, so these modules take a ``live`` flag: False enters every
parameter detached.

Stateful baselines change only in their update methods, which estimators call from ``observe``,
after the step that used them: a baseline must never see its own draw (b updated with the current
f before subtracting it gives ρ(f − m) and scales the estimator's mean by ρ). This module is
infrastructure and registers no estimator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gradbench.estimators.base import StochasticForward
from gradbench.estimators.nodes import (
    BernoulliNode,
    CategoricalNode,
    GaussianNode,
    StochasticNode,
)


class MovingAverage(nn.Module):
    """b ← ρ b + (1 − ρ) mean(f), started at the first mean observed; ``average`` is b."""

    def __init__(self, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline_decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("average", torch.zeros(()))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def update(self, values: Tensor) -> None:
        """Fold the mean of ``values`` (any shape, detached here) into the average."""
        mean = values.detach().mean()
        if bool(self.initialised):
            self.average.mul_(self.decay).add_((1.0 - self.decay) * mean)
        else:
            self.average.copy_(mean)
            self.initialised.fill_(True)


class LearnedBaseline(nn.Module):
    """NVIL's input-dependent baseline b_ψ(x) (Mnih & Gregor 2014): an MLP with one tanh hidden
    layer of ``hidden`` units on the model input (node context), b_ψ(x) = w₂ᵀ tanh(W₁x + c₁) + c₂,
    or a learned constant where the problem has no input; fitted by one fused Adam step
    (``learning_rate``) on L(ψ) = mean (f − b_ψ(x))² per :meth:`fit`.

    The fit's gradient is written out in closed form rather than traced by autograd (the
    baseline is small, so autograd's bookkeeping cost as much as its arithmetic): with
    r = ∂L/∂b = 2 (b − f) / N summed over draws, ∂L/∂w₂ = Σ_i r_i h_i, ∂L/∂c₂ = Σ_i r_i and, with
    δ_i = r_i w₂ ⊙ (1 − h_i²), ∂L/∂W₁ = Σ_i δ_i x_iᵀ, ∂L/∂c₁ = Σ_i δ_i (h_i = tanh(W₁x_i + c₁)).
    The step's prediction (:meth:`predict`) keeps h and b for the fit that follows on the same
    input with ψ unchanged, so ψ's forward runs once per training step."""

    def __init__(self, hidden: int, learning_rate: float) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"baseline_hidden must be positive, got {hidden}")
        if not learning_rate > 0:
            raise ValueError(f"baseline_lr must be positive, got {learning_rate}")
        self.hidden = hidden
        self.learning_rate = learning_rate
        self.network: nn.Module | None = None
        self.fitter: torch.optim.Optimizer | None = None
        self._kept: _KeptForward | None = None

    def bind(self, input_dim: int | None) -> None:
        """Build ψ for inputs of ``input_dim`` features (None: a constant) and its optimizer."""
        if input_dim is None:
            self.network = _Constant()
        else:
            self.network = nn.Sequential(
                nn.Linear(input_dim, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1)
            )
        self.fitter = torch.optim.Adam(self.network.parameters(), lr=self.learning_rate, fused=True)

    def forward(self, forward: StochasticForward) -> Tensor:
        """b_ψ(x) [batch], differentiable in ψ only (the input is detached)."""
        if self.network is None:
            raise RuntimeError("the learned baseline needs estimator.bind(input_dim) first")
        if isinstance(self.network, _Constant):
            return self.network(forward.regularizer)
        return self.network(self._input(forward)).squeeze(-1)

    def predict(self, forward: StochasticForward) -> Tensor:
        """b_ψ(x) [batch] without a graph, kept (with the hidden layer) for the next :meth:`fit`
        on the same input while ψ is unchanged; nothing is kept under ``torch.func`` transforms."""
        if not isinstance(self.network, nn.Sequential):
            with torch.no_grad():
                return self(forward)
        with torch.no_grad():
            inputs = self._input(forward)
            hidden, prediction = self._hidden_and_prediction(inputs)
        if not torch._C._are_functorch_transforms_active():
            self._kept = _KeptForward(forward.context(), self._versions(), hidden, prediction)
        return prediction

    def _hidden_and_prediction(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """h = tanh(W₁x + c₁) [batch, hidden] and b = w₂ᵀh + c₂ [batch]."""
        first, _, last = self.network
        hidden = torch.tanh(torch.addmm(first.bias, inputs, first.weight.t()))
        return hidden, torch.addmm(last.bias, hidden, last.weight.t()).squeeze(-1)

    def _versions(self) -> tuple[int, ...]:
        """ψ's in-place version counters: any change of ψ (a fit, a load) moves them."""
        return tuple(p._version for p in self.network.parameters())

    def _input(self, forward: StochasticForward) -> Tensor:
        """The model input x [batch, input_dim] (detached); ValueError when no node records it."""
        context = forward.context()
        if context is None:
            raise ValueError("an input-dependent baseline needs the model input as node context")
        return context.detach()

    def fit(self, forward: StochasticForward, target: Tensor) -> None:
        """One Adam step on mean (target − b_ψ(x))², target [*draws, batch] broadcasting against
        b [batch], with the gradient in closed form (class docstring)."""
        if self.network is None or self.fitter is None:
            raise RuntimeError("the learned baseline needs estimator.bind(input_dim) first")
        with torch.no_grad():
            if isinstance(self.network, _Constant):
                prediction = self.network.value.expand(forward.batch_shape)
                slope = _squared_error_slope(prediction, target)
                self.network.value.grad = slope.sum()
            else:
                first, _, last = self.network
                inputs = self._input(forward)
                kept, self._kept = self._kept, None
                fresh = kept is not None and kept.context is forward.context()
                if fresh and kept.versions == self._versions():
                    hidden, prediction = kept.hidden, kept.prediction
                else:
                    hidden, prediction = self._hidden_and_prediction(inputs)
                slope = _squared_error_slope(prediction, target)
                back = slope.unsqueeze(-1) * last.weight * (1.0 - hidden.square())
                last.weight.grad = slope.unsqueeze(0) @ hidden
                last.bias.grad = slope.sum().reshape(1)
                first.weight.grad = back.t() @ inputs
                first.bias.grad = back.sum(0)
        self.fitter.step()


@dataclass(frozen=True)
class _KeptForward:
    """ψ's forward at one input, kept from :meth:`LearnedBaseline.predict` for the fit."""

    context: Tensor  # the node context x [batch, input_dim] it ran on (identity is the key)
    versions: tuple[int, ...]  # ψ's version counters when it ran
    hidden: Tensor  # h [batch, hidden]
    prediction: Tensor  # b [batch]


def _squared_error_slope(prediction: Tensor, target: Tensor) -> Tensor:
    """∂/∂b of mean (target − b)² [batch] for b = ``prediction`` [batch] and ``target``
    [*draws, batch]: 2 Σ_draws (b − target) / (draws × batch), computed at the promoted dtype of
    the two and returned at the prediction's (as autograd hands it back). ValueError when the
    target does not end with the prediction's shape."""
    if target.shape[target.dim() - prediction.dim():] != prediction.shape:
        raise ValueError(
            f"a baseline target of shape {tuple(target.shape)} does not end with the batch "
            f"shape {tuple(prediction.shape)}"
        )
    residual = prediction - target
    draws = tuple(range(residual.dim() - prediction.dim()))
    total = residual.sum(draws) if draws else residual
    return (total * (2.0 / residual.numel())).to(prediction.dtype)


class _Constant(nn.Module):
    """A learned scalar baseline, for problems without an input to condition on."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()))

    def forward(self, like: Tensor) -> Tensor:
        return self.value.expand_as(like)


def leave_one_out(values: Tensor) -> Tensor:
    """b_k = (Σ_j f_j − f_k) / (K − 1), the mean of the other draws, for ``values`` [K, ...]
    (detached). ValueError for fewer than two draws."""
    draws = values.shape[0] if values.dim() else 0
    if draws < 2:
        raise ValueError(f"a leave-one-out baseline needs at least 2 draws, got {draws}")
    values = values.detach()
    return (values.sum(0, keepdim=True) - values) / (draws - 1)


def mean_field(node: StochasticNode) -> Tensor:
    """μ̄ = E_q[z] [*batch, *event], differentiable in the node's parameters: the mean for a
    Gaussian, σ(logits) for a Bernoulli, the class probabilities (of the one-hot) for a
    categorical. TypeError for other nodes."""
    if isinstance(node, GaussianNode):
        return node.mean
    if isinstance(node, BernoulliNode):
        return torch.sigmoid(node.logits)
    if isinstance(node, CategoricalNode):
        return node.log_probs().exp()
    raise TypeError(f"no mean-field point for {node.kind} nodes")


def _sum_event(values: Tensor, batch_dims: int) -> Tensor:
    """``values`` [*batch, *event] summed over every dimension after the first ``batch_dims``."""
    return values.flatten(batch_dims).sum(-1) if values.dim() > batch_dims else values


@dataclass(frozen=True)
class FirstOrderTaylor:
    """MuProp's control variate h(z) = f(μ̄) + Σ_n f′_n(μ̄)ᵀ(z_n − μ̄_n), one term per node n.

    ``value_at_center`` f(μ̄) [batch] and ``slopes`` f′_n(μ̄) [batch, *event_n] carry no gradient:
    the expansion point is held fixed, so h is a control variate that does not depend on φ.
    ``centers`` μ̄_n(φ) [batch, *event_n] keep their gradient, for :meth:`expectation_term`.
    """

    value_at_center: Tensor
    slopes: tuple[Tensor, ...]
    centers: tuple[Tensor, ...]

    @classmethod
    def from_row(cls, data_loss: Tensor, samples: Sequence[Tensor], row: int) -> FirstOrderTaylor:
        """The expansion around row ``row`` of a forward pass: ``data_loss`` [S, batch] holds f
        at each row of the ``samples`` [S, batch, *event], the model having decoded row ``row``
        at μ̄. f′(μ̄) is ∂ Σ_batch f(μ̄) / ∂ μ̄ by reverse mode through the decoder (one gradient
        evaluation; per example because examples do not interact). torch.autograd.grad on the
        forward's own tensors also runs inside ``torch.func.grad``/``vmap``. A sample that
        carries no gradient (its node's parameters are not differentiated) gets a zero slope,
        which changes no gradient: its score and ∇ μ̄ vanish too."""
        value_at_center = data_loss[row].detach()
        tracked = [i for i, s in enumerate(samples) if s.requires_grad]
        slopes = [torch.zeros_like(s[row]) for s in samples]
        if tracked and data_loss.requires_grad:
            grads = torch.autograd.grad(
                data_loss[row].sum(),
                [samples[i] for i in tracked],
                retain_graph=True,
                allow_unused=True,
            )
            for i, grad in zip(tracked, grads):
                if grad is not None:
                    slopes[i] = grad[row].detach()
        return cls(value_at_center, tuple(slopes), tuple(s[row] for s in samples))

    def __call__(self, samples: Sequence[Tensor]) -> Tensor:
        """h(z) [batch] at one draw per node (``samples`` [batch, *event_n]), no gradient."""
        batch_dims = self.value_at_center.dim()
        linear = [
            _sum_event(slope * (z.detach() - center.detach()), batch_dims)
            for slope, z, center in zip(self.slopes, samples, self.centers)
        ]
        return self.value_at_center + sum(linear, torch.zeros_like(self.value_at_center))

    def expectation_term(self) -> Tensor:
        """Σ_n stopgrad(f′_n(μ̄))ᵀ μ̄_n(φ) [batch]: its gradient f′(μ̄)ᵀ ∇_φ μ̄ is ∇_φ E_q[h], since
        E_q[h] = f(μ̄_fixed) + f′(μ̄_fixed)ᵀ(E_q[z] − μ̄_fixed)."""
        batch_dims = self.value_at_center.dim()
        terms = [_sum_event(s * c, batch_dims) for s, c in zip(self.slopes, self.centers)]
        return sum(terms, torch.zeros_like(self.value_at_center))


class RelaxedControlVariate(nn.Module):
    """REBAR's control variate c(z) = η f(σ_λ(z)): the relaxation σ_λ and the scale η, held as
    the parameters ``eta`` and ``log_temperature`` (log λ) so that both can be tuned.

    :meth:`relax` maps logistic or Gumbel variables z to σ_λ(z); the model evaluates f there, and
    :meth:`forward` scales those losses by η. ``live`` False enters η and λ detached.
    """

    def __init__(self, eta: float, temperature: float) -> None:
        super().__init__()
        if not math.isfinite(eta):
            raise ValueError(f"eta must be a finite number, got {eta}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be positive and finite, got {temperature}")
        self.eta = nn.Parameter(torch.tensor(float(eta)))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    def relax(self, node: StochasticNode, values: Sequence[Tensor], live: bool) -> list[Tensor]:
        """σ_λ(z) for each z in ``values`` (shaped like ``node``'s logits, with any leading
        dimensions): softmax(z/λ) over the last dimension for a categorical node, σ(z/λ)
        elementwise otherwise. Differentiable in z, and in λ when ``live``."""
        log_temperature = self.log_temperature if live else self.log_temperature.detach()
        temperature = log_temperature.exp()
        if isinstance(node, CategoricalNode):
            return [torch.softmax(z / temperature, dim=-1) for z in values]
        return [torch.sigmoid(z / temperature) for z in values]

    def forward(self, relaxed_losses: Tensor, live: bool) -> Tensor:
        """η f(σ_λ(·)), shaped like ``relaxed_losses``, the losses f the model returned at the
        relaxed samples; differentiable in η when ``live``."""
        eta = self.eta if live else self.eta.detach()
        return eta * relaxed_losses


class LearnedSurrogate(nn.Module):
    """RELAX's r_ψ(σ_λ(z), x) = Linear(features, hidden) → tanh → Linear(hidden, 1) on the relaxed
    rows of every node's sample (rows 1 and 2 of REBAR's sample axis), flattened per example,
    joined with the model input x where the nodes record it (``forward.context()``).

    Its input size is known only from a forward pass, so ``network`` stays None until
    :meth:`build_for` (or ``load_state_dict`` from a saved one, rebuilt at the saved size). The
    output layer starts at zero: r_ψ = 0 until ψ is tuned.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden}")
        self.hidden = hidden
        self.network: nn.Sequential | None = None
        self.register_load_state_dict_pre_hook(self._build_for_state)

    def build_for(self, forward: StochasticForward) -> None:
        """Build r_ψ for the inputs of ``forward`` at its dtype and device, unless built."""
        if self.network is None:
            like = forward.data_loss
            self._build(_relaxed_inputs(forward).shape[-1], self.hidden, like.dtype, like.device)

    def forward(self, forward: StochasticForward, live: bool) -> Tensor:
        """r_ψ at the two relaxed rows, [2, batch]; every ψ detached unless ``live``."""
        if self.network is None:
            raise RuntimeError("the learned surrogate needs build_for(forward) first")
        parameters = dict(self.network.named_parameters())
        if not live:
            parameters = {k: v.detach() for k, v in parameters.items()}
        inputs = _relaxed_inputs(forward)
        return torch.func.functional_call(self.network, parameters, (inputs,)).squeeze(-1)

    def _build(self, features: int, hidden: int, dtype: torch.dtype, device: torch.device) -> None:
        """r_ψ with ``features`` inputs and ``hidden`` tanh units, its output layer at zero."""
        output = nn.Linear(hidden, 1)
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)
        self.network = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), output).to(
            dtype=dtype, device=device
        )

    def _build_for_state(
        self, module: nn.Module, state: dict[str, Any], prefix: str, *_: Any
    ) -> None:
        """Load hook: a saved r_ψ is rebuilt at its saved size before its weights are copied."""
        weight = state.get(f"{prefix}network.0.weight")
        if self.network is None and weight is not None:
            self._build(weight.shape[1], weight.shape[0], weight.dtype, weight.device)


def _relaxed_inputs(forward: StochasticForward) -> Tensor:
    """The relaxed rows 1 and 2 of every node's sample, flattened per example, and the model
    input: [2, batch, features]."""
    batch = forward.batch_shape
    parts = [sample[1:].flatten(1 + len(batch)) for sample in forward.samples]
    context = forward.context()
    if context is not None:
        parts.append(context.detach().reshape(*batch, -1).expand(2, *batch, -1))
    return torch.cat(parts, dim=-1)
