"""Variational-dropout classifier with independent weight noise (Kingma, Salimans & Welling 2015).

Each weight has a mean θ and a noise level α: W ~ N(θ, α θ²), i.e. Gaussian dropout noise
ξ ~ N(1, α) on every weight. Every layer is a :class:`WeightNoiseNode`; the estimator decides how
its pre-activations are sampled. The objective per example is
CE(y, f(x; W)) + KL(q(W) ‖ log-uniform) / n_train, with the paper's polynomial KL approximation.

α is capped at ``max_alpha`` (1 in the paper: its KL polynomial is fitted for α ≤ 1, and α = 1
is binary dropout's p = 0.5). The cap is smooth: each weight learns an unconstrained ρ with

    α = max_alpha · sigmoid(ρ),   log α = log max_alpha − softplus(−ρ),
    ∂ log α / ∂ρ = 1 − α / max_alpha,

so the gradient of ρ is never zero below the cap. A hard clamp of log α at the cap (the paper's
wording, and this model's earlier form) has zero gradient above it: hidden layers starting at
α = 1, i.e. on the cap, lost nearly every α gradient after the first Adam step. The cap itself
is the limit ρ → ∞, so an initial α on the cap starts at ``INITIAL_CAP_FRACTION`` of it instead
(hidden layers: α = 0.9, p ≈ 0.47, where ∂ log α / ∂ρ = 0.1).
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.estimators.base import Estimator, StochasticForward
from gradbench.estimators.nodes import WeightNoiseNode
from gradbench.experiments.metrics import ELBO, NLL
from gradbench.models.base import (
    DataShape,
    DeterministicNetwork,
    OracleUnavailable,
    StochasticModel,
    check_hidden_sizes,
    register_model,
)

_C1, _C2, _C3 = 1.16145124, -1.50204118, 0.58629921

INITIAL_CAP_FRACTION = 0.9
"""An initial α is at most this fraction of the cap (the cap itself is only reached as ρ → ∞)."""

ORACLE_OUTER_NODES = 32
"""Gauss–Legendre nodes over the positive part of the hidden pre-activation (oracle)."""
ORACLE_INNER_NODES = 32
"""Gauss–Hermite nodes per output logit given the hidden unit (oracle)."""
ORACLE_MAX_POINTS = 2**16
"""Quadrature points per example above which :meth:`BayesMLP.expected_loss` refuses."""
_TAIL_SDS = 10.0  # the oracle integrates b over γ ± 10 sd (the mass left out is ~1e-23)


def _log_alpha(alpha_logit: Tensor, max_alpha: float) -> Tensor:
    """log α = log max_alpha + log sigmoid(ρ): a smooth cap, derivative 1 − α / max_alpha."""
    return math.log(max_alpha) + F.logsigmoid(alpha_logit)


COMPILED_MIN_WEIGHTS = 2**18
"""Layers with at least this many weights compute their statistics with kernels compiled by
``torch.compile`` (one fused pass forward, one backward); smaller ones, and every call under a
torch.func transform, run the eager operations. The two agree up to round-off (a test
compares)."""

_compile_failed: list[str] = []
"""Why compiling failed once in this process (then every call runs eagerly)."""


def _plain_statistics(
    weight_mean: Tensor, alpha_logit: Tensor, max_alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """σ², KL and s = sigmoid(ρ) as plain operations: what ``torch.compile`` fuses.

    One exponential serves both s and log s: with e = exp(−|ρ|) and u = 1 + e,
    s = 1/u (ρ ≥ 0) or e/u, and log s = min(ρ, 0) − log1p(e), where log1p(e) = e·log(u)/(u − 1)
    (exact to float round-off; Goldberg 1991, theorem 4) costs one logarithm, where separate
    sigmoid and logsigmoid kernels cost a second exponential and a log1p.
    """
    e = torch.exp(-alpha_logit.abs())
    u = 1.0 + e
    log1p_e = torch.where(u == 1.0, e, torch.log(u) * e / (u - 1.0))
    share = torch.where(alpha_logit >= 0, 1.0 / u, e / u)
    log_share = torch.clamp(alpha_logit, max=0.0) - log1p_e
    alpha = share * max_alpha
    count = alpha_logit.shape[-2] * alpha_logit.shape[-1]
    negative = (0.5 * log_share + alpha * (_C1 + alpha * (_C2 + alpha * _C3))).sum()
    kl = -(negative + count * (0.5 * math.log(max_alpha) - (_C1 + _C2 + _C3)))
    return weight_mean * weight_mean * alpha, kl, share


def _plain_gradients(
    grad_variance: Tensor, grad_kl: Tensor, weight_mean: Tensor, share: Tensor, max_alpha: float
) -> tuple[Tensor, Tensor]:
    """∂/∂θ and ∂/∂ρ of the class docstring as plain operations (both outputs used); G·σ² is
    half of ∂/∂θ times θ, so σ² is not read back."""
    alpha = share * max_alpha
    slope = 0.5 + alpha * (_C1 + alpha * (2.0 * _C2 + alpha * (3.0 * _C3)))
    grad_mean = grad_variance * weight_mean * alpha * 2.0
    grad_logit = (0.5 * grad_mean * weight_mean - grad_kl * slope) * (1.0 - share)
    return grad_mean, grad_logit


@functools.cache
def _compiled() -> tuple[Any, Any]:
    return (torch.compile(_plain_statistics, dynamic=False),
            torch.compile(_plain_gradients, dynamic=False))


def _compilable(*tensors: Tensor) -> bool:
    """Whether this call runs compiled: a large layer, plain tensors (no torch.func wrapper), and
    compiling has not failed in this process."""
    return (
        not _compile_failed
        and tensors[0].numel() >= COMPILED_MIN_WEIGHTS
        and not any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)
    )


def _run_compiled(which: int, *args: Any) -> Any:
    """The compiled statistics (0) or gradients (1); None when compiling fails (no C++
    compiler, say), which is remembered with a warning so that the eager path takes over."""
    try:
        return _compiled()[which](*args)
    except Exception as error:  # noqa: BLE001 - any compiler failure: fall back, say why
        _compile_failed.append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
        warnings.warn(f"bayes-mlp: torch.compile failed ({_compile_failed[0]}); computing the "
                      "weight statistics eagerly", RuntimeWarning, stacklevel=3)
        return None


class WeightNoiseStatistics(torch.autograd.Function):
    """(θ, ρ, max_alpha) → (σ², KL) of one layer in a few passes over its weights, with the
    backward written out (one graph node instead of about twenty elementwise ones):

        s = sigmoid(ρ),  α = max_alpha · s,  σ² = α θ²,
        KL = −Σ (0.5 log α + c1 α + c2 α² + c3 α³ − (c1 + c2 + c3))   (Kingma et al. 2015),
        ∂σ²/∂θ = 2 α θ,  ∂σ²/∂ρ = σ² (1 − s),  ∂KL/∂ρ = −(0.5 + c1 α + 2 c2 α² + 3 c3 α³)(1 − s).

    A third output, s, is kept for the backward (not differentiable). Large layers run compiled
    kernels (:data:`COMPILED_MIN_WEIGHTS`), the rest eager operations. Works under torch.func
    transforms (its vmap rule is generated; they run the eager operations).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(  # type: ignore[override]
        weight_mean: Tensor, alpha_logit: Tensor, max_alpha: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        if _compilable(weight_mean, alpha_logit):
            compiled = _run_compiled(0, weight_mean, alpha_logit, max_alpha)
            if compiled is not None:
                return compiled
        # In-place steps on fresh buffers and read-only reductions: every weight-sized
        # temporary would cost a pass over memory of its own.
        share = torch.sigmoid(alpha_logit)
        variance = (weight_mean * share).mul_(weight_mean)
        if max_alpha != 1.0:
            variance.mul_(max_alpha)
        count = alpha_logit.shape[-2] * alpha_logit.shape[-1]
        log_alpha = F.logsigmoid(alpha_logit).sum((-2, -1)) + count * math.log(max_alpha)
        squares = share.square()
        polynomial = (
            _C1 * max_alpha * share.sum((-2, -1))
            + _C2 * max_alpha**2 * squares.sum((-2, -1))
            + _C3 * max_alpha**3 * (squares * share).sum((-2, -1))
        )
        kl = -(0.5 * log_alpha + polynomial - count * (_C1 + _C2 + _C3))
        return variance, kl, share

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        weight_mean, _, max_alpha = inputs
        ctx.save_for_backward(weight_mean, output[2])
        ctx.mark_non_differentiable(output[2])
        ctx.set_materialize_grads(False)  # s has no gradient: no weight-sized zeros for it
        ctx.max_alpha = max_alpha

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_variance: Tensor | None, grad_kl: Tensor | None, _: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, None]:
        weight_mean, share = ctx.saved_tensors
        scale = ctx.max_alpha
        both = grad_variance is not None and grad_kl is not None
        if both and _compilable(grad_variance, grad_kl, weight_mean, share):
            compiled = _run_compiled(1, grad_variance, grad_kl, weight_mean, share, scale)
            if compiled is not None:
                return (*compiled, None)
        grad_mean = grad_logit = None
        if grad_variance is not None:
            # G · 2αθ: 2·max_alpha·G·s, then θ (in place).
            grad_mean = torch.addcmul(share.new_zeros(()), grad_variance, share, value=2.0 * scale)
            grad_mean.mul_(weight_mean)
            # G · σ² = ½ (G · 2αθ) · θ (σ² is not kept), times (1 − s) below.
            grad_logit = torch.addcmul(share.new_zeros(()), grad_mean, weight_mean, value=0.5)
        if grad_kl is not None:
            # 0.5 + c1 α + 2 c2 α² + 3 c3 α³ by Horner's rule in s = α / max_alpha, one fused
            # multiply-add per degree.
            slope = torch.add(share.new_tensor(2.0 * _C2 * scale**2), share,
                              alpha=3.0 * _C3 * scale**3)
            slope = torch.addcmul(share.new_tensor(_C1 * scale), slope, share)
            slope = torch.addcmul(share.new_tensor(0.5), slope, share)
            # Out of place: under vmap grad_kl may be batched where the rest is not.
            weight = -grad_kl[..., None, None]
            grad_logit = slope * weight if grad_logit is None else torch.addcmul(
                grad_logit, slope, weight
            )
        if grad_logit is not None:
            grad_logit = torch.addcmul(grad_logit, grad_logit, share, value=-1.0)  # × (1 − s)
        return grad_mean, grad_logit, None


def weight_noise_statistics(
    weight_mean: Tensor, alpha_logit: Tensor, max_alpha: float
) -> tuple[Tensor, Tensor]:
    """σ² [n_in, n_out] and the layer's KL (a scalar): :class:`WeightNoiseStatistics`."""
    variance, kl, _ = WeightNoiseStatistics.apply(weight_mean, alpha_logit, max_alpha)
    return variance, kl


class NoisyLinear(nn.Module):
    """Dense layer with W ~ N(θ, α θ²) per weight and a deterministic bias.

    θ [n_in, n_out] ~ N(0, 2 / n_in) (He et al. 2015 for ReLU inputs); ρ (``alpha_logit``)
    filled with logit(min(initial_alpha / max_alpha, INITIAL_CAP_FRACTION)); bias zero.
    """

    def __init__(self, n_in: int, n_out: int, initial_alpha: float, max_alpha: float) -> None:
        super().__init__()
        fraction = min(initial_alpha / max_alpha, INITIAL_CAP_FRACTION)
        self.weight_mean = nn.Parameter(torch.randn(n_in, n_out) * math.sqrt(2.0 / n_in))
        self.alpha_logit = nn.Parameter(
            torch.full((n_in, n_out), math.log(fraction) - math.log1p(-fraction))
        )
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.max_alpha = max_alpha

    @property
    def log_alpha(self) -> Tensor:
        """log α per weight [n_in, n_out], differentiable in ρ."""
        return _log_alpha(self.alpha_logit, self.max_alpha)

    def statistics(self) -> tuple[Tensor, Tensor]:
        """σ² = α θ² [n_in, n_out] and Σ_weights KL(q ‖ log-uniform), computed together."""
        return weight_noise_statistics(self.weight_mean, self.alpha_logit, self.max_alpha)

    def weight_variance(self) -> Tensor:
        """σ² = α θ² [n_in, n_out]."""
        return self.statistics()[0]

    def node(self, inputs: Tensor, variance: Tensor | None = None) -> WeightNoiseNode:
        """The layer's pre-activations for inputs [B, n_in], with σ² when already computed
        (else on demand)."""
        given = (lambda: variance) if variance is not None else self.weight_variance
        return WeightNoiseNode(inputs, self.weight_mean, given, self.bias)

    def kl(self) -> Tensor:
        """Σ_weights KL(q ‖ log-uniform) ≈ −(0.5 log α + c1 α + c2 α² + c3 α³ − (c1 + c2 + c3)).

        The paper leaves the constant unstated; −(c1 + c2 + c3) makes the KL zero at α = 1.
        """
        return self.statistics()[1]


def _classification_loss(network: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of ``network``'s logits per example [B]."""
    return F.cross_entropy(network(x), y, reduction="none")


def _gauss_legendre(count: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Nodes and weights of ``count``-point Gauss–Legendre quadrature on [−1, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(count)
    return like.new_tensor(nodes), like.new_tensor(weights)


def _gauss_hermite_normal(count: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Nodes and weights with Σ w f(t) ≈ E f(ε), ε ~ N(0, 1) (Gauss–Hermite, rescaled)."""
    nodes, weights = np.polynomial.hermite.hermgauss(count)
    return like.new_tensor(nodes * math.sqrt(2.0)), like.new_tensor(weights / math.sqrt(math.pi))


@register_model
class BayesMLP(StochasticModel):
    """ReLU MLP classifier whose every dense layer (output layer included) has weight noise.

    Defaults: 3 hidden layers of 1024 units, dropout rates 0.2 (input) and 0.5 (hidden) giving
    α = p / (1 − p) = 0.25 for the first layer and 1 for the others, α capped smoothly at
    ``max_alpha`` = 1 as in the paper; an initial α on the cap starts at 0.9 of it (see the
    module docstring).

    Exact oracle (:meth:`expected_loss`): ``oracle_options`` = one hidden unit; any
    ``input_dim``, ``n_classes`` = 2 (DataShape(input_dim, 2, n_train)).
    """

    name = "bayes-mlp"
    summary = "variational-dropout MLP classifier, per-weight noise (Kingma et al. 2015)"
    node_kinds = frozenset({"weight-noise"})
    has_inverse = False
    reference_estimator = "local-reparam"
    oracle_options: ClassVar[dict[str, Any]] = {"hidden_sizes": (1,)}

    task = "classifier"
    profile_options: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"hidden_sizes": (32, 32)},
        "quick": {"hidden_sizes": (256, 256, 256)},
    }
    headline_groups = ("top", "bottom")
    """The output and input layers' mean weights, Kingma et al.'s Table 1 rows."""

    def __init__(
        self,
        shape: DataShape,
        *,
        hidden_sizes: tuple[int, ...] = (1024, 1024, 1024),
        input_dropout: float = 0.2,
        hidden_dropout: float = 0.5,
        max_alpha: float = 1.0,
    ) -> None:
        super().__init__()
        check_hidden_sizes(hidden_sizes)
        for option, rate in (("input_dropout", input_dropout), ("hidden_dropout", hidden_dropout)):
            if not 0.0 < rate < 1.0:
                raise ValueError(f"{option} must lie strictly between 0 and 1, got {rate}")
        if not (math.isfinite(max_alpha) and 0.0 < max_alpha <= 1.0):
            raise ValueError(
                f"max_alpha must lie in (0, 1] (the KL approximation is fitted for α ≤ 1), "
                f"got {max_alpha}"
            )
        if shape.n_train < 1:
            raise ValueError(f"bayes-mlp needs n_train >= 1 to scale the KL, got {shape.n_train}")
        self.n_train = shape.n_train
        sizes = [shape.input_dim, *hidden_sizes, shape.n_classes]
        rates = [input_dropout] + [hidden_dropout] * len(hidden_sizes)
        self.layers = nn.ModuleList(
            NoisyLinear(n_in, n_out, rate / (1.0 - rate), max_alpha)
            for n_in, n_out, rate in zip(sizes[:-1], sizes[1:], rates)
        )

    def kl(self) -> Tensor:
        """Σ over layers of the weight KL (a scalar)."""
        return sum(layer.kl() for layer in self.layers)

    def forward(self, x: Tensor, y: Tensor, estimator: Estimator) -> StochasticForward:
        """data_loss = CE(y, logits) of sampled pre-activations, regularizer = KL / n_train; [B]."""
        nodes, samples, kl = [], [], 0.0
        h = x
        for index, layer in enumerate(self.layers):
            variance, layer_kl = layer.statistics()
            kl = kl + layer_kl
            node = layer.node(h, variance)
            preactivation = estimator.sample(node)
            nodes.append(node)
            samples.append(preactivation)
            h = torch.relu(preactivation) if index < len(self.layers) - 1 else preactivation
        return StochasticForward(
            data_loss=F.cross_entropy(h, y, reduction="none"),
            regularizer=(kl / self.n_train).expand(x.shape[0]),
            nodes=nodes,
            samples=samples,
        )

    def deterministic_network(self) -> DeterministicNetwork:
        """The same layer sizes as ``nn.Linear`` layers with ReLU between them and the
        cross-entropy loss: the network without weight noise and without the KL."""
        sizes = [self.layers[0].weight_mean.shape[0],
                 *(layer.weight_mean.shape[1] for layer in self.layers)]
        modules: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes):
            modules += [nn.Linear(n_in, n_out), nn.ReLU()]
        device = self.layers[0].weight_mean.device
        network = nn.Sequential(*modules[:-1]).to(device, self.layers[0].weight_mean.dtype)
        return DeterministicNetwork(network, _classification_loss)

    def parameter_groups(self) -> dict[str, list[str]]:
        """Each parameter alone (``layers.0.weight_mean``, ``layers.0.alpha_logit``,
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
                ELBO: -(noisy_ce.mean(0) + self.kl() / self.n_train),
                "error": (mean_logits.argmax(-1) != y).to(x.dtype),
                NLL: F.cross_entropy(mean_logits, y, reduction="none"),
            }

    def expected_loss(
        self,
        x: Tensor,
        y: Tensor,
        outer_nodes: int = ORACLE_OUTER_NODES,
        inner_nodes: int = ORACLE_INNER_NODES,
        max_points: int = ORACLE_MAX_POINTS,
    ) -> Tensor:
        """E_W[CE(y, f(x; W))] + KL / n_train per example [B], by quadrature (one hidden unit).

        One example's loss depends on the weights only through its pre-activations. The hidden
        one is b ~ N(γ, δ), γ = x θ₁ + c₁, δ = (x ⊙ x) σ₁²; given h = relu(b) the logits are
        independent l_k ~ N(c₂ₖ + h θ₂ₖ, h² α₂ₖ θ₂ₖ²). So E CE = Φ(−γ/√δ) CE(c₂) (every b ≤ 0
        gives h = 0) + ∫₀^∞ N(b; γ, δ) E_ε[CE(c₂ + b θ₂ ⊙ (1 + √α₂ ⊙ ε))] db: Gauss–Legendre over
        b ∈ [max(0, γ − 10√δ), γ + 10√δ] (the relu's kink is at an end, so the integrand is
        smooth) and a Gauss–Hermite product grid over the K logits' ε. Differentiable in θ, ρ and
        the biases of both layers. ValueError unless hidden_sizes = (1,) and
        outer_nodes · inner_nodes^K ≤ ``max_points``: K = 2 classes with the default nodes
        (32 · 32² points; doubling both moves the gradient by ~1e-7 at the initialisation).
        """
        first, last = self.layers[0], self.layers[-1]
        if len(self.layers) != 2 or first.weight_mean.shape[1] != 1:
            widths = tuple(layer.weight_mean.shape[1] for layer in self.layers[:-1])
            raise OracleUnavailable(
                f"bayes-mlp's exact oracle needs hidden_sizes=(1,), got {widths}"
            )
        n_classes = last.weight_mean.shape[1]
        points = outer_nodes * inner_nodes**n_classes
        if points > max_points:
            raise OracleUnavailable(
                f"bayes-mlp's exact oracle needs {outer_nodes}·{inner_nodes}^{n_classes} = "
                f"{points} quadrature points per example (> {max_points}); "
                "use 2 classes or fewer nodes"
            )
        gamma = (x @ first.weight_mean + first.bias).squeeze(-1)  # [B]
        variance = (x.square() @ first.weight_variance()).squeeze(-1)
        sd = variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt()  # [B]
        bias = last.bias  # [K]
        labels = y.unsqueeze(-1)
        dead_loss = torch.logsumexp(bias, -1) - bias[y]  # [B]: h = 0, logits = bias
        dead_mass = torch.special.ndtr(-gamma / sd)
        low = (gamma - _TAIL_SDS * sd).clamp_min(0.0)
        high = (gamma + _TAIL_SDS * sd).clamp_min(0.0)
        t, w = _gauss_legendre(outer_nodes, gamma)
        half = (0.5 * (high - low)).unsqueeze(-1)
        b = 0.5 * (high + low).unsqueeze(-1) + half * t  # [B, outer]
        density = torch.exp(-0.5 * ((b - gamma.unsqueeze(-1)) / sd.unsqueeze(-1)) ** 2) / (
            sd.unsqueeze(-1) * math.sqrt(2.0 * math.pi)
        )
        outer_weight = w * half * density  # [B, outer]
        e, v = _gauss_hermite_normal(inner_nodes, gamma)
        grid = torch.cartesian_prod(*[e] * n_classes).reshape(-1, n_classes)  # [P, K]
        grid_weight = torch.cartesian_prod(*[v] * n_classes).reshape(-1, n_classes).prod(-1)
        # θ₂ + √α θ₂ ε has the law of W₂ (ε is symmetric) and, unlike |σ₂|, is smooth in θ₂.
        mean_w, log_alpha = last.weight_mean[0], last.log_alpha[0]  # [K]
        noisy_w = mean_w + (0.5 * log_alpha).exp() * mean_w * grid  # [P, K]
        logits = bias + b[..., None, None] * noisy_w  # [B, outer, P, K]
        chosen = logits.gather(-1, labels[:, None, None, :].expand(*logits.shape[:-1], 1))
        ce = torch.logsumexp(logits, -1) - chosen.squeeze(-1)  # [B, outer, P]
        live_loss = (outer_weight * (ce @ grid_weight)).sum(-1)  # [B]
        return dead_mass * dead_loss + live_loss + self.kl() / self.n_train
