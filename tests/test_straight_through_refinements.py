"""ReinMax and Gumbel-Rao (refinements of straight-through) and Flipout (weight noise).

Exact single draws against hand derivations, the conditional Gumbels' law, the theory each
estimator's mean and variance must follow, and a cross-check against the ReinMax authors' package
when it is installed.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from gradbench.estimators import make_estimator
from gradbench.estimators.gumbel_rao import conditional_gumbels
from gradbench.estimators.nodes import BernoulliNode, CategoricalNode, WeightNoiseNode
from gradbench.estimators.reinmax import reinmax_straight_through
from gradbench.measure.toy import toy_draws
from gradbench.models.toy import make_problem
from tests.helpers import (
    FALSE_FAILURE_RATE,
    assert_biased,
    assert_unbiased,
    standard_error,
    variance_standard_error,
    z_for,
)

DTYPE = torch.float64
DRAWS = 20_000
CATEGORICAL_SETTINGS = [
    {"logits": (0.1, -0.5, 2.0), "c": (1.0, 0.0, 3.0)},
    {"logits": (1.0, 0.0, -1.0, 0.5), "c": (-2.0, 1.0, 0.5, 4.0)},
]
BERNOULLI_SETTING = {"theta": 1.5, "target": 0.1}


def draws_for(
    problem: str, label: str, setting: dict, parameter: str, seed: int = 1234
) -> torch.Tensor:
    """``DRAWS`` gradient draws [draws, ...] of one parameter of a toy problem. Compare two
    estimators with different seeds: the same seed can give them the same discrete samples."""
    return toy_draws(make_problem(problem, setting), make_estimator(label), DRAWS, seed)[parameter]


def softmax_jacobian_product(probs: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """(diag(p) − p pᵀ) c over the last dimension."""
    return probs * (upstream - (probs * upstream).sum(-1, keepdim=True))


def uniforms(*shape: int) -> torch.Tensor:
    """U(0, 1) clamped as ``gumbel_like`` clamps it."""
    return torch.rand(*shape, dtype=DTYPE).clamp(1e-20, 1.0 - 1e-7)


# ---------------------------------------------------------------------------- ReinMax


def test_reinmax_single_draw_matches_hand_derivation() -> None:
    """Value D; gradient 2 J(π₁) c − ½ J(π) c, π₁ = (D + softmax(θ/τ))/2, J(p) = diag p − ppᵀ."""
    tau = 0.7
    logits = torch.tensor([[0.3, -1.2, 0.8], [2.0, 0.1, -0.4]], dtype=DTYPE, requires_grad=True)
    upstream = torch.tensor([[1.5, -0.3, 0.2], [-0.7, 2.2, 0.9]], dtype=DTYPE)
    torch.manual_seed(5)
    out = make_estimator("reinmax", {"temperature": tau}).sample(CategoricalNode(logits))
    (out * upstream).sum().backward()
    torch.manual_seed(5)
    theta = logits.detach()
    gumbels = -torch.log(-torch.log(uniforms(2, 3)))
    hard = torch.nn.functional.one_hot((theta.log_softmax(-1) + gumbels).argmax(-1), 3).to(DTYPE)
    torch.testing.assert_close(out.detach(), hard, rtol=0, atol=0)
    midpoint = (hard + (theta / tau).softmax(-1)) / 2
    expected = 2 * softmax_jacobian_product(midpoint, upstream) - 0.5 * softmax_jacobian_product(
        theta.softmax(-1), upstream
    )
    torch.testing.assert_close(logits.grad, expected)


def test_reinmax_bernoulli_single_draw_matches_hand_derivation() -> None:
    """b as the two-class D = (1 − b, b), logits (0, l): ∂/∂l = c (2 q(1 − q) − ½ p(1 − p)),
    q = (b + σ(l/τ))/2, p = σ(l)."""
    tau = 1.3
    logits = torch.tensor([0.4, -2.0, 1.1, 0.0], dtype=DTYPE, requires_grad=True)
    upstream = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=DTYPE)
    torch.manual_seed(8)
    out = make_estimator("reinmax", {"temperature": tau}).sample(BernoulliNode(logits))
    (out * upstream).sum().backward()
    torch.manual_seed(8)
    u = uniforms(4)
    theta = logits.detach()
    hard = (theta + torch.log(u) - torch.log1p(-u) > 0).to(DTYPE)
    torch.testing.assert_close(out.detach(), hard, rtol=0, atol=0)
    q = (hard + torch.sigmoid(theta / tau)) / 2
    p = torch.sigmoid(theta)
    torch.testing.assert_close(logits.grad, upstream * (2 * q * (1 - q) - 0.5 * p * (1 - p)))


@pytest.mark.parametrize("chosen", [0, 1, 2])
def test_reinmax_gradient_is_finite_where_the_tempered_softmax_underflows(chosen: int) -> None:
    """float32 logits 200 apart at τ = 0.5: softmax(θ/τ) underflows to 0 and log π₁ to −∞,
    which must give that class a zero probability and gradient, not NaN."""
    logits = torch.tensor([[100.0, -100.0, 0.0]], requires_grad=True)
    hard = torch.nn.functional.one_hot(torch.tensor([chosen]), 3).float()
    upstream = torch.tensor([[0.3, -2.0, 1.0]])
    out = reinmax_straight_through(logits, hard, 0.5)
    (gradient,) = torch.autograd.grad((out * upstream).sum(), logits)
    midpoint = (hard + (logits.detach() / 0.5).softmax(-1)) / 2
    expected = 2 * softmax_jacobian_product(midpoint, upstream) - 0.5 * softmax_jacobian_product(
        logits.detach().softmax(-1), upstream
    )
    assert torch.isfinite(gradient).all()
    torch.testing.assert_close(gradient, expected)


@pytest.mark.parametrize("tau", [0.5, 1.0, 1.3, 3.0])
def test_reinmax_matches_the_authors_package(tau: float) -> None:
    """The same one-hot sample and upstream gradient give the package's gradient to round-off."""
    package = pytest.importorskip("reinmax")
    torch.manual_seed(0)
    logits = (3 * torch.randn(256, 6, dtype=DTYPE)).requires_grad_(True)
    upstream = torch.randn(256, 6, dtype=DTYPE)
    sample, _ = package.reinmax(logits, tau)
    (expected,) = torch.autograd.grad((sample * upstream).sum(), logits)
    ours = reinmax_straight_through(logits, sample.detach(), tau)
    (gradient,) = torch.autograd.grad((ours * upstream).sum(), logits)
    torch.testing.assert_close(ours.detach(), sample.detach(), rtol=0, atol=0)
    torch.testing.assert_close(gradient, expected)


@pytest.mark.parametrize(
    ("problem", "setting"),
    [("categorical-linear", s) for s in CATEGORICAL_SETTINGS]
    + [("bernoulli-quadratic", BERNOULLI_SETTING)],
)
def test_reinmax_at_unit_temperature_is_exact_for_linear_f(problem: str, setting: dict) -> None:
    """At τ = 1, E[J(π₁)] = ¾ J(π), so E[2 J(π₁) − ½ J(π)] = J(π): no bias when f is linear
    in D (any f of a Bernoulli is). The default τ = 1.3 is biased there."""
    ((parameter, exact),) = make_problem(problem, setting).exact_gradient().items()
    unit = draws_for(problem, "reinmax[temperature=1]", setting, parameter)
    assert_unbiased(unit, exact, f"reinmax τ=1 on {problem}")
    assert_biased(draws_for(problem, "reinmax", setting, parameter), exact, "reinmax τ=1.3")


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="temperature must be positive"):
        make_estimator("reinmax[temperature=0]")
    with pytest.raises(ValueError, match="samples must be at least 1"):
        make_estimator("gumbel-rao[samples=0]")
    assert make_estimator("gumbel-rao[samples=3]").samples == 3
    assert make_estimator("gumbel-rao").evaluations == 1


# ---------------------------------------------------------------------------- Gumbel-Rao


def test_gumbel_rao_single_draw_matches_hand_derivation() -> None:
    """Value D = one-hot argmax(log π + g); gradient (1/K) Σ_j J(y_j) c / τ, y_j = softmax(z̃_j/τ),
    z̃_{k*} = −log(−log v_{k*}), z̃_k = −log(−log v_k / π_k − log v_{k*}) for k ≠ k*."""
    tau, samples = 0.7, 4
    logits = torch.tensor([[0.3, -1.2, 0.8], [2.0, 0.1, -0.4]], dtype=DTYPE, requires_grad=True)
    upstream = torch.tensor([[1.5, -0.3, 0.2], [-0.7, 2.2, 0.9]], dtype=DTYPE)
    estimator = make_estimator("gumbel-rao", {"temperature": tau, "samples": samples})
    torch.manual_seed(6)
    out = estimator.sample(CategoricalNode(logits))
    (out * upstream).sum().backward()
    torch.manual_seed(6)
    probs = logits.detach().softmax(-1)
    gumbels = -torch.log(-torch.log(uniforms(2, 3)))
    top = (logits.detach().log_softmax(-1) + gumbels).argmax(-1)
    torch.testing.assert_close(out.detach(), torch.nn.functional.one_hot(top, 3).to(DTYPE))
    v = uniforms(samples, 2, 3)
    expected = torch.zeros(2, 3, dtype=DTYPE)
    for j in range(samples):
        for n in range(2):
            star = int(top[n])
            z = torch.empty(3, dtype=DTYPE)
            for k in range(3):
                if k == star:
                    z[k] = -math.log(-math.log(v[j, n, k]))
                else:
                    z[k] = -math.log(-math.log(v[j, n, k]) / probs[n, k] - math.log(v[j, n, star]))
            assert int(z.argmax()) == star
            y = (z / tau).softmax(-1)
            expected[n] += softmax_jacobian_product(y, upstream[n]) / tau / samples
    torch.testing.assert_close(logits.grad, expected)


def test_conditional_gumbels_have_the_law_of_log_pi_plus_gumbel() -> None:
    """argmax z̃ = k* always; over D ~ Cat(π), z̃_k − log π_k ~ Gumbel(0, 1) for every class
    (Kolmogorov–Smirnov, mean γ and variance π²/6 within their standard errors)."""
    torch.manual_seed(3)
    log_pi = torch.tensor([0.3, -1.0, 1.2, 0.0], dtype=DTYPE).log_softmax(-1)
    node = CategoricalNode(log_pi.expand(50_000, 4))
    hard = node.sample()
    draws = conditional_gumbels(node.log_probs(), hard, 2)  # [2, draws, classes]
    assert draws.shape == (2, 50_000, 4)
    assert torch.equal(draws.argmax(-1), hard.argmax(-1).expand(2, -1))
    standardised = (draws[0] - log_pi).T  # [classes, draws]
    z = z_for(2 * 4)
    for k, values in enumerate(standardised):
        assert stats.kstest(values.numpy(), stats.gumbel_r.cdf).pvalue > FALSE_FAILURE_RATE / 4, k
        mean_gap = float(values.mean()) - 0.5772156649015329
        assert abs(mean_gap) < z * float(standard_error(values)), (k, mean_gap)
        var_gap = float(values.var()) - math.pi**2 / 6
        assert abs(var_gap) < z * float(variance_standard_error(values)), (k, var_gap)


@pytest.mark.parametrize("setting", CATEGORICAL_SETTINGS)
def test_gumbel_rao_has_the_mean_of_st_gumbel_and_its_bias(setting: dict) -> None:
    """A conditional expectation of the straight-through estimator: the same mean at the same τ,
    hence the same (measurable) bias."""
    rao = draws_for("categorical-linear", "gumbel-rao[temperature=0.5]", setting, "logits")
    straight = draws_for("categorical-linear", "st-gumbel[temperature=0.5]", setting, "logits", 99)
    gap = (rao.mean(0) - straight.mean(0)).abs()
    bound = z_for(gap.numel()) * torch.hypot(standard_error(rao), standard_error(straight))
    assert torch.all(gap < bound), (gap, bound)
    exact = make_problem("categorical-linear", setting).exact_gradient()["logits"]
    assert_biased(rao, exact, "gumbel-rao τ=0.5")


def test_gumbel_rao_variance_falls_with_samples_below_st_gumbel() -> None:
    """Var[ĝ] = Var E[ĝ_ST | D] + E Var[ĝ_ST | D] / K: falls as K rises; K = 1 is ST-GS itself."""
    setting = CATEGORICAL_SETTINGS[0]
    labels = ["st-gumbel[temperature=0.5]"] + [
        f"gumbel-rao[temperature=0.5,samples={k}]" for k in (1, 3, 10)
    ]
    draws = [
        draws_for("categorical-linear", label, setting, "logits", seed)
        for seed, label in enumerate(labels)
    ]
    variances = [d.var(0) for d in draws]
    errors = [variance_standard_error(d) for d in draws]
    z = z_for(4 * variances[0].numel())
    same = (variances[0] - variances[1]).abs()
    assert torch.all(same < z * torch.hypot(errors[0], errors[1])), (variances[0], variances[1])
    for high, low in ((1, 2), (2, 3), (0, 3)):
        gap = variances[high] - variances[low]
        bound = z * torch.hypot(errors[high], errors[low])
        assert torch.all(gap > bound), (labels[high], labels[low], variances[high], variances[low])


# ---------------------------------------------------------------------------- Flipout


def test_flipout_single_draw_matches_hand_derivation() -> None:
    """b = Aμ + bias + ((A ⊙ s)(σ ⊙ ε)) ⊙ r: ∂/∂μ = Aᵀc, ∂/∂σ = ε ⊙ ((A ⊙ s)ᵀ(c ⊙ r)),
    ∂/∂bias = Σ_n c_n."""
    torch.manual_seed(0)
    inputs = torch.randn(5, 3, dtype=DTYPE)
    mean = torch.randn(3, 2, dtype=DTYPE, requires_grad=True)
    std = torch.rand(3, 2, dtype=DTYPE).add(0.1).requires_grad_(True)
    bias = torch.randn(2, dtype=DTYPE, requires_grad=True)
    upstream = torch.randn(5, 2, dtype=DTYPE)
    node = WeightNoiseNode(inputs, mean, lambda: std.square(), bias)
    torch.manual_seed(4)
    out = make_estimator("flipout").sample(node)
    (out * upstream).sum().backward()
    torch.manual_seed(4)
    eps = torch.randn(3, 2, dtype=DTYPE)
    input_signs = torch.where(torch.rand(5, 3, dtype=DTYPE) < 0.5, -1.0, 1.0).to(DTYPE)
    output_signs = torch.where(torch.rand(5, 2, dtype=DTYPE) < 0.5, -1.0, 1.0).to(DTYPE)
    flipped = inputs * input_signs
    expected = inputs @ mean.detach() + bias.detach()
    expected = expected + (flipped @ (std.detach() * eps)) * output_signs
    torch.testing.assert_close(out.detach(), expected)
    torch.testing.assert_close(mean.grad, inputs.T @ upstream)
    torch.testing.assert_close(std.grad, eps * (flipped.T @ (upstream * output_signs)))
    torch.testing.assert_close(bias.grad, upstream.sum(0))


def _preactivation_draws(label: str, node: WeightNoiseNode, draws: int) -> torch.Tensor:
    estimator = make_estimator(label)
    return torch.func.vmap(lambda _: estimator.sample(node), randomness="different")(
        torch.zeros(draws)
    )


def test_flipout_per_example_marginal_matches_reparam_per_example() -> None:
    """Each example's pre-activations have the mean and variance of a separate weight sample."""
    torch.manual_seed(1)
    inputs = torch.randn(4, 3, dtype=DTYPE)
    mean = torch.randn(3, 2, dtype=DTYPE)
    variance = torch.rand(3, 2, dtype=DTYPE).add(0.2)
    node = WeightNoiseNode(inputs, mean, lambda: variance, torch.tensor([0.5, -1.0], dtype=DTYPE))
    torch.manual_seed(2)
    flip = _preactivation_draws("flipout", node, DRAWS)  # [draws, batch, n_out]
    separate = _preactivation_draws("reparam-per-example", node, DRAWS)
    z = z_for(2 * flip[0].numel())
    mean_gap = (flip.mean(0) - separate.mean(0)).abs()
    assert torch.all(mean_gap < z * torch.hypot(standard_error(flip), standard_error(separate)))
    var_gap = (flip.var(0) - separate.var(0)).abs()
    var_se = torch.hypot(variance_standard_error(flip), variance_standard_error(separate))
    assert torch.all(var_gap < z * var_se), (flip.var(0), separate.var(0))


def test_flipout_variance_far_below_shared_sample() -> None:
    """The sign flips decorrelate the examples: the minibatch μ-gradient's variance falls far
    below that of one weight sample shared by the minibatch."""
    setting = {"n_examples": 100}
    flip = draws_for("weight-noise-regression", "flipout", setting, "mu")
    shared = draws_for("weight-noise-regression", "reparam", setting, "mu", 99)
    assert torch.all(flip.var(0) * 4 < shared.var(0)), (flip.var(0), shared.var(0))
    gap = shared.var(0) - flip.var(0)
    bound = z_for(gap.numel()) * torch.hypot(
        variance_standard_error(shared), variance_standard_error(flip)
    )
    assert torch.all(gap > bound)
