"""REBAR and RELAX (float64, fixed seeds): the conditional samples z̃ ~ p(z | b), a single draw
derived by hand, unbiasedness for every η, λ and surrogate, online tuning, and the separation of
the tuning gradient from the model's."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from scipy import stats
from torch import Tensor
from torch.func import functional_call

import tests.test_oracle as oracle
from gradbench.estimators import StochasticForward, make_estimator
from gradbench.estimators.base import Estimator
from gradbench.estimators.nodes import (
    BernoulliNode,
    CategoricalNode,
    gumbel_like,
    logistic_like,
    one_hot_argmax,
)
from gradbench.estimators.nodes import conditional_gumbel, conditional_logistic, uniform_like
from gradbench.gradients import gradient_draws
from gradbench.measure.toy import toy_draws
from gradbench.models import DataShape, make_model
from gradbench.models.toy import ToyProblem, make_problem
from tests.helpers import FALSE_FAILURE_RATE, Z, assert_unbiased, variance_standard_error

DTYPE = torch.float64
DRAWS = 20_000
ESTIMATORS = ["rebar", "relax"]
SETTINGS = {
    "bernoulli-quadratic": [{"theta": 0.0, "target": 0.45}, {"theta": 1.5, "target": 0.1}],
    "categorical-linear": [
        {"logits": (0.1, -0.5, 2.0), "c": (1.0, 0.0, 3.0)},
        {"logits": (1.0, 0.0, -1.0, 0.5), "c": (-2.0, 1.0, 0.5, 4.0)},
    ],
}
CONTROLS = [
    {"eta": 1.0, "temperature": 0.5},
    {"eta": 0.3, "temperature": 2.0},
    {"eta": -0.7, "temperature": 0.1},
]
"""η and λ held fixed (tune off): REBAR and RELAX are unbiased for every one of them."""


def control_id(control: dict[str, float]) -> str:
    return f"eta={control['eta']},lambda={control['temperature']}"


def with_random_surrogate(
    estimator: Estimator, forward_fn: Callable[[Estimator], StochasticForward], seed: int = 5
) -> Estimator:
    """RELAX with its network built (one observe) and set to seeded random weights, so that r_ψ
    is far from its zero start; REBAR unchanged."""
    estimator.double()
    estimator.observe(forward_fn(estimator))
    network = getattr(estimator, "network", None)
    if network is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=DTYPE))
    return estimator


def tune_on(problem: ToyProblem, estimator: Estimator, steps: int) -> None:
    """``steps`` training-like steps at fixed problem parameters: forward, backward, observe."""
    for _ in range(steps):
        params = {k: v.requires_grad_(True) for k, v in problem.parameters().items()}
        forward = problem.forward(params, estimator)
        estimator.surrogate(forward).mean().backward()
        estimator.observe(forward)


# ---------------------------------------------------------------- conditional samples


@pytest.mark.parametrize("alpha", [0.7, -1.8])
def test_bernoulli_conditional_is_the_logistic_given_b(alpha: float) -> None:
    """H(z̃) = b always; z̃ over b ~ p(b) is Logistic(α, 1); given b, z̃ has the law of z."""
    torch.manual_seed(0)
    logits = torch.full((100_000,), alpha, dtype=DTYPE)
    z = logits + logistic_like(logits)
    b = (z > 0).to(DTYPE)
    z_tilde = conditional_logistic(logits, b, uniform_like(logits))
    assert torch.equal((z_tilde > 0).to(DTYPE), b)
    p_values = [stats.kstest(z_tilde.numpy(), stats.logistic(loc=alpha).cdf).pvalue]
    p_values += [stats.ks_2samp(z[b == v].numpy(), z_tilde[b == v].numpy()).pvalue for v in (0, 1)]
    assert min(p_values) > FALSE_FAILURE_RATE / len(p_values), p_values


def test_categorical_conditional_is_the_gumbel_given_b() -> None:
    """argmax z̃ = k* always; z̃_k over k* ~ π is Gumbel(log π_k); given k*, z̃ has the law of z."""
    torch.manual_seed(1)
    log_probs = torch.log_softmax(torch.tensor([0.1, -0.5, 2.0, 1.0], dtype=DTYPE), -1)
    log_probs = log_probs.expand(100_000, 4)
    z = log_probs + gumbel_like(log_probs)
    b = one_hot_argmax(z)
    z_tilde = conditional_gumbel(log_probs, b, uniform_like(log_probs))
    assert torch.equal(one_hot_argmax(z_tilde), b)
    p_values = [
        stats.kstest(z_tilde[:, k].numpy(), stats.gumbel_r(loc=float(log_probs[0, k])).cdf).pvalue
        for k in range(4)
    ]
    for top in range(4):
        given = b[:, top] > 0.5
        p_values += [
            stats.ks_2samp(z[given, k].numpy(), z_tilde[given, k].numpy()).pvalue for k in range(4)
        ]
    assert min(p_values) > FALSE_FAILURE_RATE / len(p_values), p_values


def round_bernoulli(values: Tensor) -> Tensor:
    """H(z) read from σ_λ(z): 1 where the relaxed value exceeds ½."""
    return (values > 0.5).to(values.dtype)


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_sample_rows_are_b_and_two_relaxations_that_round_to_it(name: str, kind: str) -> None:
    torch.manual_seed(2)
    logits = torch.randn(50, 3, 4, dtype=DTYPE, requires_grad=True)
    if kind == "bernoulli":
        node, rounded = BernoulliNode(logits, event_dims=2), round_bernoulli
    else:
        node, rounded = CategoricalNode(logits, event_dims=1), one_hot_argmax
    estimator = make_estimator(name)
    sample = estimator.sample(node)
    assert sample.shape == (3, 50, 3, 4) and estimator.evaluations == 3
    b, relaxed, relaxed_tilde = sample
    assert torch.equal(rounded(relaxed.detach()), b)
    assert torch.equal(rounded(relaxed_tilde.detach()), b)
    discrete, = torch.autograd.grad(b.sum(), logits, retain_graph=True)
    weights = torch.randn(2, 50, 3, 4, dtype=DTYPE)  # a softmax sums to 1: weigh its entries
    pathwise, = torch.autograd.grad((sample[1:] * weights).sum(), logits)
    assert torch.all(discrete == 0) and torch.all(pathwise != 0)


# ---------------------------------------------------------------- one draw by hand


@pytest.mark.parametrize("seed", range(6))
def test_rebar_single_draw_matches_hand_derivation(seed: int) -> None:
    """θ-gradient of one REBAR draw on f(b) = (b − t)², from the noise u (z) and v (z̃):
    ĝ = (f(b) − η f(y₂))(b − p) + η f′(y₁) ∂y₁/∂θ − η f′(y₂) ∂y₂/∂θ with y = σ(z/λ),
    ∂z̃/∂θ = 1 + (∂ũ/∂θ) / (ũ(1 − ũ)), ∂ũ/∂θ = −p(1 − p)(1 − v) (b = 1), −p(1 − p) v (b = 0)."""
    theta, target, eta, lam = 0.3, 0.45, 0.8, 0.7
    problem = make_problem("bernoulli-quadratic", {"theta": theta, "target": target})
    estimator = make_estimator("rebar", {"eta": eta, "temperature": lam, "tune": False}).double()
    params = {k: v.requires_grad_(True) for k, v in problem.parameters().items()}
    torch.manual_seed(seed)
    estimator.surrogate(problem.forward(params, estimator)).sum().backward()
    torch.manual_seed(seed)
    u = torch.rand(1, 1, dtype=DTYPE).clamp(1e-20, 1 - 1e-7)
    v = torch.rand(1, 1, dtype=DTYPE)
    p = torch.sigmoid(torch.tensor(theta, dtype=DTYPE))
    z = theta + torch.log(u) - torch.log(1 - u)
    b = (z > 0).to(DTYPE)
    u_tilde = torch.where(b > 0, (1 - p) + v * p, v * (1 - p))
    du_tilde = torch.where(b > 0, -p * (1 - p) * (1 - v), -p * (1 - p) * v)
    z_tilde = theta + torch.log(u_tilde) - torch.log(1 - u_tilde)
    dz_tilde = 1 + du_tilde / (u_tilde * (1 - u_tilde))
    y1, y2 = torch.sigmoid(z / lam), torch.sigmoid(z_tilde / lam)
    dy1, dy2 = y1 * (1 - y1) / lam, y2 * (1 - y2) / lam * dz_tilde

    def f(y: Tensor) -> Tensor:
        return (y - target) ** 2

    score_term = (f(b) - eta * f(y2)) * (b - p)
    expected = score_term + eta * 2 * (y1 - target) * dy1 - eta * 2 * (y2 - target) * dy2
    torch.testing.assert_close(params["theta"].grad, expected.reshape(1))


# ---------------------------------------------------------------- unbiasedness


@pytest.mark.parametrize("control", CONTROLS, ids=control_id)
@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("problem_name", list(SETTINGS))
@pytest.mark.parametrize("name", ESTIMATORS)
def test_unbiased_for_every_eta_and_temperature(
    name: str, problem_name: str, index: int, control: dict
) -> None:
    """Closed-form gradient within z·SE at fixed η, λ; RELAX with a random surrogate network."""
    problem = make_problem(problem_name, SETTINGS[problem_name][index])
    estimator = make_estimator(name, {**control, "tune": False})
    torch.manual_seed(3)
    with_random_surrogate(estimator, lambda e: problem.forward(problem.parameters(), e))
    draws = toy_draws(problem, estimator, DRAWS, seed=11)
    for key, value in problem.exact_gradient().items():
        assert_unbiased(draws[key], value, what=f"{name} {control} on {problem_name} d/d{key}")


def test_relax_with_a_random_surrogate_matches_the_oracle_on_the_bernoulli_vae() -> None:
    """r_ψ on the relaxed sample and the input x, random weights: still the exact gradient."""
    model, x, y = oracle.setup("bernoulli-vae")
    estimator = make_estimator("relax", {"tune": False})
    estimator.bind(x.shape[-1])
    torch.manual_seed(4)
    with_random_surrogate(estimator, lambda e: model(x, y, e))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def surrogate(p: dict[str, Tensor]) -> Tensor:
        return estimator.surrogate(functional_call(model, p, (x, y, estimator))).mean()

    draws = gradient_draws(surrogate, params, 4_000)
    z, name, largest = oracle.worst(oracle.z_table(draws, oracle.exact_gradient(model, x, y)))
    assert largest < z, f"relax with a random surrogate: d/d{name} off by |z| = {largest:.1f}"


# ---------------------------------------------------------------- tuning


@pytest.mark.parametrize(
    ("name", "setting"),
    [("rebar", {"theta": 0.0, "target": 2.0}), ("relax", {"theta": 0.0, "target": 0.45})],
)
def test_tuning_lowers_the_variance_below_reinforce(name: str, setting: dict) -> None:
    """Started at η = 0 (REINFORCE on the discrete row), 300 tuning steps leave an estimator with
    lower variance than η = 0 and still unbiased. REBAR on (b − 2)², whose relaxation is a good
    control variate; at target 0.45 f dips to ~0 between 0 and 1, so no η, λ beats η = 0 there,
    but RELAX's network learns the missing offset."""
    problem = make_problem("bernoulli-quadratic", setting)
    torch.manual_seed(6)
    tuned = make_estimator(name, {"eta": 0.0, "tune_lr": 0.02}).double()
    tune_on(problem, tuned, 300)
    assert abs(float(tuned.eta.detach())) > 0.01
    tuned_draws = toy_draws(problem, tuned, DRAWS, seed=12)["theta"][:, 0]
    plain = make_estimator(name, {"eta": 0.0, "tune": False})
    plain_draws = toy_draws(problem, plain, DRAWS, seed=13)["theta"][:, 0]
    gap = plain_draws.var() - tuned_draws.var()
    se = math.hypot(variance_standard_error(plain_draws), variance_standard_error(tuned_draws))
    assert gap > Z * se, (float(plain_draws.var()), float(tuned_draws.var()))
    assert_unbiased(tuned_draws, problem.exact_gradient()["theta"][0], what=f"tuned {name}")


SQUARED_PROBLEM = make_problem("bernoulli-quadratic", {"theta": 0.4, "target": 1.5})


def one_draw(estimator: Estimator) -> tuple[Tensor, Tensor]:
    """(surrogate, θ) for one draw of fixed noise on ``SQUARED_PROBLEM``, θ differentiable."""
    params = {k: v.requires_grad_(True) for k, v in SQUARED_PROBLEM.parameters().items()}
    torch.manual_seed(8)
    return estimator.surrogate(SQUARED_PROBLEM.forward(params, estimator)).sum(), params["theta"]


def squared_gradient(estimator: Estimator) -> Tensor:
    """ĝ² for that draw: the surrogate's θ-gradient (a batch of one, no regularizer), squared."""
    value, theta = one_draw(estimator)
    return torch.autograd.grad(value, theta)[0].square().sum()


@pytest.mark.parametrize("name", ESTIMATORS)
def test_tuning_gradient_is_the_variance_gradient(name: str) -> None:
    """The step's backward leaves ∂ĝ²/∂(η, log λ, ψ) in the tuning parameters' .grad (batch of
    one: ĝ is the θ-gradient of the surrogate), equal to central finite differences of ĝ² with
    the same noise."""
    estimator = make_estimator(name, {"eta": 0.6, "temperature": 0.8})
    torch.manual_seed(7)
    with_random_surrogate(
        estimator, lambda e: SQUARED_PROBLEM.forward(SQUARED_PROBLEM.parameters(), e)
    )
    one_draw(estimator)[0].backward()
    tuning = estimator.tuning_parameters()
    delivered = [p.grad.clone() for p in tuning]
    estimator.tuner.zero_grad(set_to_none=True)
    step = 1e-6
    for parameter, grad in zip(tuning, delivered):
        flat, expected = parameter.view(-1), grad.view(-1)
        for i in range(flat.numel()):
            differences = []
            for delta in (step, -2 * step, step):
                with torch.no_grad():
                    flat[i] += delta
                differences.append(squared_gradient(estimator))
            finite_difference = (differences[0] - differences[1]) / (2 * step)
            torch.testing.assert_close(expected[i], finite_difference, rtol=1e-5, atol=1e-9)


def test_relax_surrogate_and_model_gradients_do_not_mix() -> None:
    """Same noise, tuning on and off: the model's gradient is identical (the tuning term gives it
    nothing), and with tuning off the model's loss leaves no gradient in η, λ or ψ."""
    torch.manual_seed(9)
    model = make_model(
        "categorical-vae", DataShape(12, 2, 50), {"hidden_sizes": (8,), "n_vars": 3, "n_classes": 3}
    ).double()
    x = (torch.rand(5, 12, dtype=DTYPE) > 0.5).to(DTYPE)
    y = torch.zeros(5, dtype=torch.long)
    tuned = make_estimator("relax")
    tuned.bind(12)
    with_random_surrogate(tuned, lambda e: model(x, y, e))
    fixed = make_estimator("relax", {"tune": False})
    fixed.bind(12)
    fixed.double().load_state_dict(tuned.state_dict())
    model_grads = []
    for estimator in (tuned, fixed):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(10)
        estimator.surrogate(model(x, y, estimator)).mean().backward()
        model_grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert all(p.grad is not None for p in tuned.tuning_parameters())
    assert all(p.grad is None for p in fixed.tuning_parameters())
    for key in model_grads[0]:
        torch.testing.assert_close(model_grads[0][key], model_grads[1][key], rtol=1e-12, atol=1e-14)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    surrogate_before = [p.detach().clone() for p in tuned.tuning_parameters()]
    tuned.observe(model(x, y, tuned))
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())
    assert all(p.grad is None for p in tuned.tuning_parameters())
    after = [p.detach() for p in tuned.tuning_parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(surrogate_before, after))


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("rebar[temperature=0]", "temperature must be positive"),
        ("rebar[tune_lr=-1]", "tune_lr must be positive"),
        ("rebar[eta=nan]", "bad value .nan. for eta: expected a finite number"),
        ("relax[hidden=0]", "hidden must be a positive int"),
    ],
)
def test_invalid_options_are_refused(label: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_estimator(label)

