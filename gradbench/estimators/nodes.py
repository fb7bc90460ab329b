"""Stochastic nodes: what a model hands to an estimator.

A node describes one random quantity of a model's forward pass: its distribution (parameters that
carry gradients) and, where an estimator needs more of the model's structure, that structure
(the layer input of a weight-noise layer, the encoder as approximate inverse, the model input for
an input-dependent baseline). Estimators draw samples from nodes; models never look at which
estimator is in use.

Shapes follow torch.distributions: a node has a ``batch_shape`` (independent examples) and an
``event_shape`` (one latent vector); ``sample(sample_shape)`` returns ``sample_shape + batch_shape
+ event_shape`` and ``log_prob`` of such a value ``sample_shape + batch_shape``. An estimator that
draws K values per example (leave-one-out, antithetic pairs, enumeration) asks for
``sample_shape = (K,)``; the model's forward pass carries the leading sample dimensions through
and returns per-sample losses. A value whose trailing shape is not the node's batch and event
shape raises instead of broadcasting.

Sampling uses only elementwise random primitives (``rand_like``/``randn_like``) so that every
node can be sampled inside ``torch.func.vmap(..., randomness="different")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

_TINY = 1e-20


def _check_value(value: Tensor, batch_shape: torch.Size, event_shape: torch.Size, what: str) -> None:
    """Raise ValueError unless ``value`` is ``sample_shape + batch_shape + event_shape``."""
    trailing = batch_shape + event_shape
    if value.dim() < len(trailing) or value.shape[value.dim() - len(trailing):] != trailing:
        raise ValueError(
            f"{what} value of shape {tuple(value.shape)} does not end with the node's batch "
            f"and event shape {tuple(batch_shape)} + {tuple(event_shape)}"
        )


def expand_to(values: Tensor, sample_shape: tuple[int, ...]) -> Tensor:
    """``values`` with leading ``sample_shape`` dimensions (a view, no copy)."""
    return values.expand(*sample_shape, *values.shape)


def _sum_trailing(values: Tensor, dims: int) -> Tensor:
    """Sum the last ``dims`` dimensions of ``values`` (the event dimensions)."""
    return values.sum(dim=tuple(range(-dims, 0))) if dims > 0 else values


def one_hot_argmax(scores: Tensor) -> Tensor:
    """One-hot vector of the argmax over the last dimension, written to work under vmap."""
    index = scores.argmax(dim=-1, keepdim=True)
    classes = torch.arange(scores.shape[-1], device=scores.device)
    return (index == classes).to(scores.dtype)


def gumbel_like(values: Tensor) -> Tensor:
    """Standard Gumbel noise g = -log(-log u), u ~ U(0, 1), of the shape of ``values``."""
    uniform = torch.rand_like(values).clamp(_TINY, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


def logistic_like(values: Tensor) -> Tensor:
    """Standard logistic noise log u - log(1 - u): the difference of two Gumbel variables."""
    uniform = torch.rand_like(values).clamp(_TINY, 1.0 - 1e-7)
    return torch.log(uniform) - torch.log1p(-uniform)


def configuration_digits(variables: int, base: int, device: torch.device | None = None) -> Tensor:
    """Every configuration of ``variables`` discrete variables of ``base`` values, [base^V, V]:
    configuration c sets variable v to the digit ⌊c / base^v⌋ mod base (the order every
    enumeration in gradbench uses: the exact estimator and the models' oracles)."""
    codes = torch.arange(base**variables, device=device)
    places = base ** torch.arange(variables, device=device)
    return codes[:, None] // places % base


def uniform_like(values: Tensor) -> Tensor:
    """U(0, 1) noise of the shape of ``values``, kept inside [tiny, 1 − eps] so that log v and
    log(1 − v) are finite."""
    info = torch.finfo(values.dtype)
    return torch.rand_like(values).clamp(info.tiny, 1.0 - info.eps)


def conditional_logistic(logits: Tensor, b: Tensor, v: Tensor) -> Tensor:
    """z̃ ~ p(z | b) for z = α + logistic noise, b = 1[z > 0], θ = σ(α); v ~ U(0, 1).

    b = 1: ũ = (1 − θ) + v θ; b = 0: ũ = v (1 − θ); z̃ = α + log ũ − log(1 − ũ), written in
    log space: for b = 1, log(1 − ũ) = log θ + log(1 − v); for b = 0, log ũ = log v + log(1 − θ).
    Differentiable in α given b and v.
    """
    log_theta = torch.nn.functional.logsigmoid(logits)
    log_one_minus_theta = torch.nn.functional.logsigmoid(-logits)
    log_v, log_one_minus_v = torch.log(v), torch.log1p(-v)
    log_u = torch.where(
        b > 0.5,
        torch.logaddexp(log_one_minus_theta, log_v + log_theta),
        log_v + log_one_minus_theta,
    )
    log_one_minus_u = torch.where(
        b > 0.5,
        log_theta + log_one_minus_v,
        torch.logaddexp(log_theta, log_one_minus_v + log_one_minus_theta),
    )
    return logits + log_u - log_one_minus_u


def conditional_gumbel(log_probs: Tensor, b: Tensor, v: Tensor) -> Tensor:
    """z̃ ~ p(z | b) for z = log π + Gumbel noise, b = one-hot(argmax z) over the last dimension;
    v ~ U(0, 1) of the same shape.

    z̃_{k*} = −log(−log v_{k*}); z̃_k = −log(−log v_k / π_k − log v_{k*}) for k ≠ k*: the maximum
    is a standard Gumbel, the others Gumbels of location log π_k truncated below it.
    """
    exponential = -torch.log(v)  # [..., K], Exp(1)
    log_top = torch.log((b * exponential).sum(-1, keepdim=True))  # log(−log v_{k*})
    others = -torch.logaddexp(torch.log(exponential) - log_probs, log_top)
    return torch.where(b > 0.5, -log_top, others)


@dataclass
class GaussianNode:
    """z ~ N(mean, std²), factorized; the last ``event_dims`` dimensions form one latent vector.

    ``context`` is the model input the latent is inferred from (for input-dependent baselines).
    """

    kind: ClassVar[str] = "gaussian"
    mean: Tensor
    std: Tensor
    event_dims: int = 1
    context: Tensor | None = None

    @property
    def batch_shape(self) -> torch.Size:
        return self.mean.shape[: self.mean.dim() - self.event_dims]

    @property
    def event_shape(self) -> torch.Size:
        return self.mean.shape[self.mean.dim() - self.event_dims :]

    def noise(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """ε ~ N(0, I) of shape ``sample_shape + batch_shape + event_shape``."""
        return torch.randn_like(expand_to(self.mean, sample_shape))

    def reparameterize(self, noise: Tensor) -> Tensor:
        """z = mean + std ⊙ ε, differentiable in mean and std (ε may have leading sample dims)."""
        _check_value(noise, self.batch_shape, self.event_shape, "Gaussian noise")
        return self.mean + self.std * noise

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """A reparameterised sample of shape ``sample_shape + batch_shape + event_shape``."""
        return self.reparameterize(self.noise(sample_shape))

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """An exact sample with no gradient path to the node's parameters."""
        return self.rsample(sample_shape).detach()

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(z), summed over event dimensions: shape ``sample_shape + batch_shape``."""
        _check_value(value, self.batch_shape, self.event_shape, "Gaussian")
        scaled = (value - self.mean) / self.std
        log_density = -0.5 * scaled**2 - torch.log(self.std) - 0.5 * torch.log(
            torch.tensor(2.0 * torch.pi, dtype=self.mean.dtype, device=self.mean.device)
        )
        return _sum_trailing(log_density, self.event_dims)


@dataclass
class CategoricalNode:
    """z ~ OneHotCategorical(softmax(logits)) over the last dimension.

    ``logits`` has shape [..., classes]; the ``event_dims`` dimensions before the class dimension
    are independent variables of one latent (30 of them in the categorical VAE).
    ``inverse`` maps a reconstruction x' back to logits π(x'): the encoder used as the decoder's
    approximate inverse (difference target propagation). ``context`` is the model input.
    """

    kind: ClassVar[str] = "categorical"
    logits: Tensor
    event_dims: int = 0
    inverse: Callable[[Tensor], Tensor] | None = None
    context: Tensor | None = None

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[: self.logits.dim() - self.event_dims - 1]

    @property
    def event_shape(self) -> torch.Size:
        return self.logits.shape[self.logits.dim() - self.event_dims - 1 :]

    def log_probs(self) -> Tensor:
        """Normalised log π, shape of ``logits``."""
        return torch.log_softmax(self.logits, dim=-1)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """Gumbel-max: one-hot(argmax(log π + g)), an exact categorical sample with no gradient
        path, of shape ``sample_shape + batch_shape + event_shape``."""
        scores = expand_to(self.log_probs().detach(), sample_shape)
        return one_hot_argmax(scores + gumbel_like(scores))

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(z) of a one-hot value, summed over the variables: ``sample_shape + batch_shape``."""
        _check_value(value, self.batch_shape, self.event_shape, "categorical")
        return _sum_trailing((value * self.log_probs()).sum(-1), self.event_dims)


@dataclass
class BernoulliNode:
    """b ~ Bernoulli(sigmoid(logits)), factorized; the last ``event_dims`` dimensions form one latent."""

    kind: ClassVar[str] = "bernoulli"
    logits: Tensor
    event_dims: int = 0
    context: Tensor | None = None

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[: self.logits.dim() - self.event_dims]

    @property
    def event_shape(self) -> torch.Size:
        return self.logits.shape[self.logits.dim() - self.event_dims :]

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """b = 1[logit + logistic noise > 0], an exact Bernoulli sample with no gradient path,
        of shape ``sample_shape + batch_shape + event_shape``."""
        logits = expand_to(self.logits.detach(), sample_shape)
        return (logits + logistic_like(logits) > 0).to(logits.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(b) = b log σ(l) + (1 − b) log σ(−l), summed over event dimensions:
        ``sample_shape + batch_shape``."""
        _check_value(value, self.batch_shape, self.event_shape, "Bernoulli")
        log_p = value * torch.nn.functional.logsigmoid(self.logits) + (
            1.0 - value
        ) * torch.nn.functional.logsigmoid(-self.logits)
        return _sum_trailing(log_p, self.event_dims)


@dataclass
class WeightNoiseNode:
    """Pre-activations B = A W + bias of a layer with factorized Gaussian weights W ~ N(μ, σ²).

    Shapes: ``inputs`` A [batch, n_in], ``weight_mean`` μ [n_in, n_out], ``bias`` [n_out] or
    None. ``weight_variance`` computes σ² [n_in, n_out] on demand, so that an estimator that
    ignores the noise does not pay for it. The estimator decides how W is sampled (Kingma,
    Salimans & Welling 2015): once per minibatch, once per example, or through the
    pre-activations directly.
    """

    kind: ClassVar[str] = "weight-noise"
    inputs: Tensor
    weight_mean: Tensor
    weight_variance: Callable[[], Tensor]
    bias: Tensor | None = None

    @property
    def batch_shape(self) -> torch.Size:
        return self.inputs.shape[:-1]

    @property
    def event_shape(self) -> torch.Size:
        return self.weight_mean.shape[-1:]

    def mean_preactivation(self) -> Tensor:
        """γ = A μ + bias: the pre-activation under the mean weights, [batch, n_out]."""
        if self.bias is None:
            return self.inputs @ self.weight_mean
        if self.inputs.dim() == 2:  # one fused kernel for the bias
            return torch.addmm(self.bias, self.inputs, self.weight_mean)
        return self.inputs @ self.weight_mean + self.bias

    def local_sample(self) -> Tensor:
        """b = γ + √δ ⊙ ε, δ = (A ⊙ A) σ², ε ~ N(0, I) [batch, n_out]: the pre-activations'
        exact per-example marginal, independent across examples (local reparameterization)."""
        mean = self.mean_preactivation()
        variance = self.inputs.square() @ self.weight_variance()
        # δ is exactly 0 for an example whose layer input is all zeros (dead ReLUs); the floor
        # keeps √δ's derivative finite there without changing any sample.
        std = variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt()
        return torch.addcmul(mean, std, torch.randn_like(mean))


StochasticNode = GaussianNode | CategoricalNode | BernoulliNode | WeightNoiseNode
