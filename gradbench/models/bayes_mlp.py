"""Variational-dropout classifier with independent weight noise (Kingma, Salimans & Welling 2015).

Each weight has a mean θ and a log α: W ~ N(θ, α θ²), i.e. Gaussian dropout noise ξ ~ N(1, α)
on every weight. Every layer is a :class:`WeightNoiseNode`; the estimator decides how its
pre-activations are sampled. The objective per example is
CE(y, f(x; W)) + KL(q(W) ‖ log-uniform) / n_train, with the paper's polynomial KL approximation.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.estimators.base import Estimator, StochasticForward
from gradbench.estimators.nodes import WeightNoiseNode
from gradbench.models.base import DataShape, StochasticModel, check_hidden_sizes, register_model

_C1, _C2, _C3 = 1.16145124, -1.50204118, 0.58629921


def _weight_variance(weight_mean: Tensor, log_alpha: Tensor, max_log_alpha: float) -> Tensor:
    """σ² = α θ², with log α clamped at ``max_log_alpha``."""
    return torch.exp(log_alpha.clamp(max=max_log_alpha)) * weight_mean.square()


class NoisyLinear(nn.Module):
    """Dense layer with W ~ N(θ, α θ²) per weight and a deterministic bias.

    θ [n_in, n_out] ~ N(0, 2 / n_in) (He et al. 2015 for ReLU inputs), log α filled with
    log(initial_alpha), bias zero.
    """

    def __init__(self, n_in: int, n_out: int, initial_alpha: float, max_log_alpha: float) -> None:
        super().__init__()
        self.weight_mean = nn.Parameter(torch.randn(n_in, n_out) * math.sqrt(2.0 / n_in))
        self.log_alpha = nn.Parameter(torch.full((n_in, n_out), math.log(initial_alpha)))
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.max_log_alpha = max_log_alpha

    def node(self, inputs: Tensor) -> WeightNoiseNode:
        """The layer's pre-activations for inputs [B, n_in]; σ² is computed only when asked for."""
        variance = partial(_weight_variance, self.weight_mean, self.log_alpha, self.max_log_alpha)
        return WeightNoiseNode(inputs, self.weight_mean, variance, self.bias)

    def kl(self) -> Tensor:
        """Σ_weights KL(q ‖ log-uniform) ≈ −(0.5 log α + c1 α + c2 α² + c3 α³ − (c1 + c2 + c3)).

        The paper leaves the constant unstated; −(c1 + c2 + c3) makes the KL zero at α = 1.
        """
        log_alpha = self.log_alpha.clamp(max=self.max_log_alpha)
        alpha = log_alpha.exp()
        negative_kl = (
            0.5 * log_alpha + alpha * (_C1 + alpha * (_C2 + alpha * _C3)) - (_C1 + _C2 + _C3)
        )
        return -negative_kl.sum()


@register_model
class BayesMLP(StochasticModel):
    """ReLU MLP classifier whose every dense layer (output layer included) has weight noise.

    Defaults: 3 hidden layers of 1024 units, dropout rates 0.2 (input) and 0.5 (hidden) giving
    initial α = p / (1 − p) = 0.25 for the first layer and 1 for the others; α capped at
    exp(max_log_alpha) = 1 as in the paper.
    """

    name = "bayes-mlp"
    summary = "variational-dropout MLP classifier, per-weight noise (Kingma et al. 2015)"
    node_kinds = frozenset({"weight-noise"})
    has_inverse = False
    reference_estimator = "local-reparam"

    def __init__(
        self,
        shape: DataShape,
        *,
        hidden_sizes: tuple[int, ...] = (1024, 1024, 1024),
        input_dropout: float = 0.2,
        hidden_dropout: float = 0.5,
        max_log_alpha: float = 0.0,
    ) -> None:
        super().__init__()
        check_hidden_sizes(hidden_sizes)
        for option, rate in (("input_dropout", input_dropout), ("hidden_dropout", hidden_dropout)):
            if not 0.0 < rate < 1.0:
                raise ValueError(f"{option} must lie strictly between 0 and 1, got {rate}")
        if not math.isfinite(max_log_alpha):
            raise ValueError(f"max_log_alpha must be finite, got {max_log_alpha}")
        if shape.n_train < 1:
            raise ValueError(f"bayes-mlp needs n_train >= 1 to scale the KL, got {shape.n_train}")
        self.n_train = shape.n_train
        sizes = [shape.input_dim, *hidden_sizes, shape.n_classes]
        rates = [input_dropout] + [hidden_dropout] * len(hidden_sizes)
        self.layers = nn.ModuleList(
            NoisyLinear(n_in, n_out, rate / (1.0 - rate), max_log_alpha)
            for n_in, n_out, rate in zip(sizes[:-1], sizes[1:], rates)
        )

    def kl(self) -> Tensor:
        """Σ over layers of the weight KL (a scalar)."""
        return sum(layer.kl() for layer in self.layers)

    def forward(self, x: Tensor, y: Tensor, estimator: Estimator) -> StochasticForward:
        """data_loss = CE(y, logits) of sampled pre-activations, regularizer = KL / n_train; [B]."""
        nodes, samples = [], []
        h = x
        for index, layer in enumerate(self.layers):
            node = layer.node(h)
            preactivation = estimator.sample(node)
            nodes.append(node)
            samples.append(preactivation)
            h = torch.relu(preactivation) if index < len(self.layers) - 1 else preactivation
        return StochasticForward(
            data_loss=F.cross_entropy(h, y, reduction="none"),
            regularizer=(self.kl() / self.n_train).expand(x.shape[0]),
            nodes=nodes,
            samples=samples,
        )

    def parameter_groups(self) -> dict[str, list[str]]:
        """Each parameter alone (``layers.0.weight_mean``, ``layers.0.log_alpha``,
        ``layers.0.bias``, …), plus bottom / top (first / last layer's θ) and all."""
        names = [name for name, _ in self.named_parameters()]
        groups = {name: [name] for name in names}
        groups["bottom"] = ["layers.0.weight_mean"]
        groups["top"] = [f"layers.{len(self.layers) - 1}.weight_mean"]
        groups["all"] = names
        return groups

    def _logits(self, x: Tensor, noisy: bool) -> Tensor:
        """Logits [..., B, n_classes], with locally reparameterized noise or the mean weights θ."""
        h = x
        for index, layer in enumerate(self.layers):
            node = layer.node(h)
            h = node.local_sample() if noisy else node.mean_preactivation()
            if index < len(self.layers) - 1:
                h = torch.relu(h)
        return h

    def evaluate(self, x: Tensor, y: Tensor, samples: int, iw_samples: int) -> dict[str, Tensor]:
        """Per-example elbo (−CE over ``samples`` noisy passes − KL / n_train), error and nll.

        error and nll use the mean weights θ without noise; ``iw_samples`` is unused.
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        with torch.no_grad():
            mean_logits = self._logits(x, noisy=False)
            noisy_logits = self._logits(x.expand(samples, *x.shape), noisy=True)  # [S, B, C]
            noisy_ce = F.cross_entropy(
                noisy_logits.flatten(0, 1), y.repeat(samples), reduction="none"
            ).view(samples, -1)
            return {
                "elbo": -(noisy_ce.mean(0) + self.kl() / self.n_train),
                "error": (mean_logits.argmax(-1) != y).to(x.dtype),
                "nll": F.cross_entropy(mean_logits, y, reduction="none"),
            }
