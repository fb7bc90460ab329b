"""Toy problems whose exact gradient is known in closed form.

Each problem has differentiated parameters (``parameters()``), a one-draw forward pass that hands
its stochastic node to an estimator, and the exact gradient of the expected loss. They are the
ground truth the estimators are tested against (float64 throughout).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from gradbench.estimators.base import Estimator, StochasticForward
from gradbench.estimators.nodes import BernoulliNode, CategoricalNode, GaussianNode, WeightNoiseNode
from gradbench.options import build_with_options

DTYPE = torch.float64


def _vector(values: tuple[float, ...]) -> Tensor:
    return torch.tensor(values, dtype=DTYPE)


def _positive(name: str, values: tuple[float, ...] | float) -> None:
    items = values if isinstance(values, tuple) else (values,)
    if not items or any(v <= 0 for v in items):
        raise ValueError(f"{name} must be positive, got {values}")


class ToyProblem:
    """Base class: subclasses set the class attributes and implement the three methods."""

    name: ClassVar[str]
    summary: ClassVar[str]
    node_kinds: ClassVar[frozenset[str]]
    has_inverse: ClassVar[bool] = False

    def settings(self) -> dict[str, Any]:
        """Every setting of the problem (differentiated or not), JSON-ready."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in vars(self).items()
            if not k.startswith("_")
        }

    def parameters(self) -> dict[str, Tensor]:
        """The differentiated parameters, name → tensor."""
        raise NotImplementedError

    def forward(self, params: dict[str, Tensor], estimator: Estimator) -> StochasticForward:
        """One draw of the loss at ``params``."""
        raise NotImplementedError

    def exact_gradient(self) -> dict[str, Tensor]:
        """∇ E[loss] in closed form, name → tensor shaped like the parameter."""
        raise NotImplementedError


PROBLEMS: dict[str, type[ToyProblem]] = {}
P = TypeVar("P", bound=type[ToyProblem])


def register_problem(cls: P) -> P:
    """Class decorator: add a toy problem to the registry under ``cls.name``."""
    PROBLEMS[cls.name] = cls
    return cls


def make_problem(name: str, options: dict[str, Any] | None = None) -> ToyProblem:
    """Build a registered toy problem; unknown names or parameters raise ValueError naming valid ones."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; valid: {', '.join(PROBLEMS)}")
    return build_with_options(PROBLEMS[name], options or {}, what=f"problem {name!r}")


@register_problem
class GaussianQuadratic(ToyProblem):
    """f(z) = (z − target)², z ~ N(mu, sigma²): ∂/∂mu = 2(mu − target), ∂/∂sigma = 2 sigma."""

    name = "gaussian-quadratic"
    summary = "(z − target)², z ~ N(mu, sigma²); gradient w.r.t. mu, sigma"
    node_kinds = frozenset({"gaussian"})

    def __init__(self, *, mu: float = 0.5, sigma: float = 1.0, target: float = -0.4) -> None:
        _positive("sigma", sigma)
        self.mu, self.sigma, self.target = mu, sigma, target

    def parameters(self) -> dict[str, Tensor]:
        return {"mu": _vector((self.mu,)), "sigma": _vector((self.sigma,))}

    def forward(self, params: dict[str, Tensor], estimator: Estimator) -> StochasticForward:
        node = GaussianNode(params["mu"].unsqueeze(0), params["sigma"].unsqueeze(0), event_dims=1)
        z = estimator.sample(node)  # [*sample_shape, 1, 1]
        loss = (z - self.target).square().sum(-1)  # [*sample_shape, 1]
        return StochasticForward(loss, torch.zeros(1, dtype=DTYPE), [node], [z])

    def exact_gradient(self) -> dict[str, Tensor]:
        return {"mu": _vector((2 * (self.mu - self.target),)), "sigma": _vector((2 * self.sigma,))}


@register_problem
class BernoulliQuadratic(ToyProblem):
    """f(b) = (b − target)², b ~ Bernoulli(σ(theta)): ∂/∂theta = p(1 − p)(1 − 2 target)."""

    name = "bernoulli-quadratic"
    summary = "(b − target)², b ~ Bernoulli(sigmoid(theta)); gradient w.r.t. theta"
    node_kinds = frozenset({"bernoulli"})

    def __init__(self, *, theta: float = 0.0, target: float = 0.45) -> None:
        self.theta, self.target = theta, target

    def parameters(self) -> dict[str, Tensor]:
        return {"theta": _vector((self.theta,))}

    def forward(self, params: dict[str, Tensor], estimator: Estimator) -> StochasticForward:
        node = BernoulliNode(params["theta"].unsqueeze(0), event_dims=1)
        b = estimator.sample(node)  # [*sample_shape, 1, 1]
        loss = (b - self.target).square().sum(-1)  # [*sample_shape, 1]
        return StochasticForward(loss, torch.zeros(1, dtype=DTYPE), [node], [b])

    def exact_gradient(self) -> dict[str, Tensor]:
        p = torch.sigmoid(_vector((self.theta,)))
        return {"theta": p * (1 - p) * (1 - 2 * self.target)}


@register_problem
class CategoricalLinear(ToyProblem):
    """f(z) = Σ_k c_k z_k, z ~ OneHot(softmax(logits)): ∂/∂logits_j = π_j (c_j − Σ_k π_k c_k)."""

    name = "categorical-linear"
    summary = "Σ c_k z_k, z ~ OneHotCategorical(softmax(logits)); gradient w.r.t. logits"
    node_kinds = frozenset({"categorical"})

    def __init__(
        self, *, logits: tuple[float, ...] = (0.1, -0.5, 2.0), c: tuple[float, ...] = (1.0, 0.0, 3.0)
    ) -> None:
        if len(logits) < 2 or len(logits) != len(c):
            raise ValueError(
                f"logits and c must have the same length >= 2, got {len(logits)} and {len(c)}"
            )
        self.logits, self.c = logits, c

    def parameters(self) -> dict[str, Tensor]:
        return {"logits": _vector(self.logits)}

    def forward(self, params: dict[str, Tensor], estimator: Estimator) -> StochasticForward:
        node = CategoricalNode(params["logits"].unsqueeze(0), event_dims=0)  # [1, classes]
        z = estimator.sample(node)  # [*sample_shape, 1, classes]
        loss = (z * _vector(self.c)).sum(-1)  # [*sample_shape, 1]
        return StochasticForward(loss, torch.zeros(1, dtype=DTYPE), [node], [z])

    def exact_gradient(self) -> dict[str, Tensor]:
        pi = torch.softmax(_vector(self.logits), dim=0)
        c = _vector(self.c)
        return {"logits": pi * (c - (pi * c).sum())}


@register_problem
class WeightNoiseRegression(ToyProblem):
    """Mean over a seeded batch of (x·w − y)², w_i ~ N(mu_i, sigma_i²).

    E = mean_m[(x_m·μ − y_m)² + Σ_i x_mi² σ_i²]: ∂/∂μ = mean 2(x·μ − y) x, ∂/∂σ_i = mean 2 x_i² σ_i.
    Inputs x ~ N(0, I) and targets y = x·w* + 0.1 ε are drawn from ``data_seed``.
    """

    name = "weight-noise-regression"
    summary = "batch mean of (x·w − y)², w ~ N(mu, sigma²) per weight; gradient w.r.t. mu, sigma"
    node_kinds = frozenset({"weight-noise"})

    def __init__(
        self,
        *,
        mu: tuple[float, ...] = (0.5, -0.3, 0.2, 0.8, -0.6),
        sigma: tuple[float, ...] = (0.5,),
        n_examples: int = 100,
        data_seed: int = 0,
    ) -> None:
        _positive("sigma", sigma)
        if len(sigma) not in (1, len(mu)):
            raise ValueError(f"sigma needs 1 or {len(mu)} values (one per mu), got {len(sigma)}")
        if n_examples < 1:
            raise ValueError(f"n_examples must be positive, got {n_examples}")
        self.mu, self.sigma, self.n_examples, self.data_seed = mu, sigma, n_examples, data_seed
        generator = torch.Generator().manual_seed(data_seed)
        n_features = len(mu)
        self._inputs = torch.randn(n_examples, n_features, generator=generator, dtype=DTYPE)
        true_weights = torch.randn(n_features, generator=generator, dtype=DTYPE)
        noise = torch.randn(n_examples, generator=generator, dtype=DTYPE)
        self._targets = self._inputs @ true_weights + 0.1 * noise

    def parameters(self) -> dict[str, Tensor]:
        return {"mu": _vector(self.mu), "sigma": _vector(self.sigma).expand(len(self.mu)).clone()}

    def forward(self, params: dict[str, Tensor], estimator: Estimator) -> StochasticForward:
        sigma = params["sigma"]
        node = WeightNoiseNode(
            inputs=self._inputs,
            weight_mean=params["mu"].unsqueeze(-1),  # [features, 1]
            weight_variance=lambda: sigma.square().unsqueeze(-1),
        )
        prediction = estimator.sample(node).squeeze(-1)  # [examples]
        loss = (prediction - self._targets).square()
        return StochasticForward(loss, torch.zeros_like(loss), [node], [prediction])

    def exact_gradient(self) -> dict[str, Tensor]:
        mu, sigma = self.parameters().values()
        residual = self._inputs @ mu - self._targets
        return {
            "mu": (2 * residual.unsqueeze(-1) * self._inputs).mean(0),
            "sigma": (2 * self._inputs.square() * sigma).mean(0),
        }
