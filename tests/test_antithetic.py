"""ARM, DisARM and the enumerating reference on Bernoulli latents (float64, fixed seeds).

Unbiasedness against closed forms (the 1-d quadratic toy and a 3-unit problem defined here whose
exact gradient is a sum over its 8 configurations), DisARM's variance at most ARM's, single draws
derived by hand from the noise, and the exact estimator to round-off.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats
from torch import Tensor

from gradbench.estimators import ESTIMATORS, NotApplicable, StochasticForward, make_estimator
from gradbench.estimators.arm import antithetic_pair, uniform_given_pair
from gradbench.estimators.base import Estimator
from gradbench.estimators.exact import EnumerationTooLarge
from gradbench.estimators.nodes import BernoulliNode, CategoricalNode
from gradbench.measure.toy import toy_draws
from gradbench.models import MODELS, DataShape, make_model
from gradbench.models.toy import ToyProblem, make_problem
from tests.helpers import assert_unbiased, variance_standard_error, z_for

DTYPE = torch.float64
Grid = list[list[float]]
"""Values per example and unit of BernoulliTriple, as Python floats."""
DRAWS = 20_000
ANTITHETIC = ["arm", "disarm"]
PEERS = ["rloo", "rebar"]
"""Unbiased Bernoulli estimators other modules may register; their cases skip when absent."""
QUADRATIC = {"theta": 0.7, "target": 0.45}
"""Away from θ = 0, where DisARM on one unit is deterministic (see its own test)."""


class BernoulliTriple(ToyProblem):
    """Two examples of three Bernoulli units each, with the decoder-like weight w differentiated
    too: f_n(b) = (w·b − t_n)² + 2 b_1 b_2 b_3, regularizer 0.1 Σ_i σ(α_ni)².

    The product term couples the units, so that ARM's noise on coordinates where the pair agrees
    matters; the gradient is exact by summing over the 2³ configurations.
    """

    name = "bernoulli-triple"
    summary = "a function of 3 coupled Bernoulli units, two examples"
    node_kinds = frozenset({"bernoulli"})

    def __init__(self) -> None:
        self.logits = ((0.4, -1.1, 0.8), (-0.3, 1.6, 0.1))
        self.weights = (1.5, -0.7, 0.9)
        self.targets = (0.3, 1.2)

    def parameters(self) -> dict[str, Tensor]:
        return {
            "logits": torch.tensor(self.logits, dtype=DTYPE),
            "weights": torch.tensor(self.weights, dtype=DTYPE),
        }

    def data_loss(self, b: Tensor, weights: Tensor) -> Tensor:
        """f(b) for b [..., 2, 3]: [..., 2]."""
        targets = torch.tensor(self.targets, dtype=DTYPE)
        return ((b * weights).sum(-1) - targets).square() + 2.0 * b.prod(-1)

    def regularizer(self, logits: Tensor) -> Tensor:
        return 0.1 * torch.sigmoid(logits).square().sum(-1)

    def forward(self, params: dict[str, Tensor], estimator: Estimator) -> StochasticForward:
        node = BernoulliNode(params["logits"], event_dims=1)
        b = estimator.sample(node)
        return StochasticForward(
            self.data_loss(b, params["weights"]), self.regularizer(params["logits"]), [node], [b]
        )

    def expected_loss(self, params: dict[str, Tensor]) -> Tensor:
        """Σ over the 8 configurations of q(b) (f(b) + regularizer), per example [2]."""
        p = torch.sigmoid(params["logits"])
        total = torch.zeros(2, dtype=DTYPE)
        for bits in itertools.product((0.0, 1.0), repeat=3):
            b = torch.tensor(bits, dtype=DTYPE).expand(2, 3)
            q = torch.where(b > 0, p, 1 - p).prod(-1)
            total = total + q * self.data_loss(b, params["weights"])
        return total + self.regularizer(params["logits"])

    def exact_gradient(self) -> dict[str, Tensor]:
        params = {k: v.requires_grad_(True) for k, v in self.parameters().items()}
        grads = torch.autograd.grad(self.expected_loss(params).mean(), list(params.values()))
        return dict(zip(params, grads))


def _estimator(name: str) -> Estimator:
    if name not in ESTIMATORS:
        pytest.skip(f"estimator {name!r} is not registered")
    return make_estimator(name)


def _draws(problem: ToyProblem, name: str, samples: int = DRAWS) -> dict[str, Tensor]:
    return toy_draws(problem, _estimator(name), samples, seed=2024)


def _assert_variance_not_above(low: Tensor, high: Tensor, what: str) -> None:
    """Var(low) ≤ Var(high) per coordinate, up to a Bonferroni z of the variances' SEs."""
    excess = low.var(0) - high.var(0)
    bound = (variance_standard_error(low) ** 2 + variance_standard_error(high) ** 2).sqrt()
    assert torch.all(excess < z_for(excess.numel()) * bound), (what, excess, bound)


@pytest.mark.parametrize("name", ANTITHETIC + PEERS)
def test_unbiased_on_the_bernoulli_quadratic(name: str) -> None:
    problem = make_problem("bernoulli-quadratic", QUADRATIC)
    draws = _draws(problem, name)
    assert_unbiased(draws["theta"], problem.exact_gradient()["theta"], what=name)


@pytest.mark.parametrize("name", ANTITHETIC + PEERS)
def test_unbiased_on_three_coupled_units(name: str) -> None:
    problem = BernoulliTriple()
    draws = _draws(problem, name)
    for key, exact in problem.exact_gradient().items():
        assert_unbiased(draws[key], exact, what=f"{name} d/d{key}")


def test_disarm_variance_at_most_arm_on_the_quadratic() -> None:
    problem = make_problem("bernoulli-quadratic", QUADRATIC)
    arm, disarm = _draws(problem, "arm")["theta"], _draws(problem, "disarm")["theta"]
    _assert_variance_not_above(disarm, arm, "quadratic")


def test_disarm_variance_far_below_arm_on_three_units() -> None:
    """On the logits DisARM is ARM averaged over u given the pair: lower variance, and
    significantly so here; both share the pathwise gradient of the weights."""
    problem = BernoulliTriple()
    arm, disarm = _draws(problem, "arm"), _draws(problem, "disarm")
    _assert_variance_not_above(disarm["logits"], arm["logits"], "logits")
    gap = arm["logits"].var(0) - disarm["logits"].var(0)
    bound = (
        variance_standard_error(arm["logits"]) ** 2 + variance_standard_error(disarm["logits"]) ** 2
    ).sqrt()
    assert torch.all(gap > z_for(gap.numel()) * bound), (gap, bound)


def test_disarm_on_one_unit_at_zero_logit_is_deterministic() -> None:
    """θ = 0: the pair always differs and ĝ = ½ (f(1) − f(0)) ½ = p(1 − p) f'(b): no variance."""
    problem = make_problem("bernoulli-quadratic", {"theta": 0.0, "target": 0.45})
    draws = _draws(problem, "disarm", 1000)["theta"]
    expected = problem.exact_gradient()["theta"].expand_as(draws)
    torch.testing.assert_close(draws, expected, rtol=1e-13, atol=1e-16)


def test_the_pair_and_the_redrawn_noise() -> None:
    """b and b̃ are Bernoulli(σ(α)) from one u; u redrawn given the pair reproduces the pair and
    is again U(0, 1), so (u, b, b̃) keeps its joint law."""
    torch.manual_seed(3)
    logits = torch.tensor([-2.0, -0.4, 0.0, 0.9, 3.0], dtype=DTYPE).expand(40_000, 5)
    uniform = torch.rand_like(logits)
    pair = antithetic_pair(logits, uniform)
    torch.testing.assert_close(pair[0], (uniform < torch.sigmoid(logits)).to(DTYPE))
    torch.testing.assert_close(pair[1], (1 - uniform < torch.sigmoid(logits)).to(DTYPE))
    redrawn = uniform_given_pair(logits, pair)
    assert torch.equal(antithetic_pair(logits, redrawn), pair)
    for column in range(5):
        p_value = stats.kstest(redrawn[:, column].numpy(), "uniform").pvalue
        assert p_value > 1e-4 / 5, (column, p_value)


def _interval(p: float, b: float, b_tilde: float) -> tuple[float, float]:
    """Where u lies given b = 1[u < p] and b̃ = 1[u > 1 − p], case by case."""
    if b and not b_tilde:
        return 0.0, min(p, 1 - p)
    if b_tilde and not b:
        return max(p, 1 - p), 1.0
    if b and b_tilde:
        return 1 - p, p
    return p, 1 - p


def _single_draw(name: str, seed: int) -> tuple[dict[str, Tensor], Grid, Grid]:
    """One gradient of the mean surrogate on BernoulliTriple, and the two uniform draws the
    estimator makes after seeding (u in sample, then ARM's redraw in gradient_term)."""
    problem = BernoulliTriple()
    params = {k: v.requires_grad_(True) for k, v in problem.parameters().items()}
    estimator = make_estimator(name)
    torch.manual_seed(seed)
    estimator.surrogate(problem.forward(params, estimator)).mean().backward()
    torch.manual_seed(seed)
    first = torch.rand(2, 3, dtype=DTYPE).tolist()
    second = torch.rand(2, 3, dtype=DTYPE).tolist()
    return {k: v.grad for k, v in params.items()}, first, second


def _hand_gradient(redraws: Grid | None, u: Grid) -> dict[str, Tensor]:
    """ARM's (given the redrawn u') or DisARM's (``redraws`` None) gradient on BernoulliTriple,
    written out per coordinate with Python floats."""
    problem = BernoulliTriple()
    logits, weights, targets = problem.logits, problem.weights, problem.targets

    def f(n: int, b: list[float]) -> float:
        return (sum(w * x for w, x in zip(weights, b)) - targets[n]) ** 2 + 2.0 * math.prod(b)

    grad_logits = [[0.0] * 3 for _ in range(2)]
    grad_weights = [0.0] * 3
    for n in range(2):
        p = [1 / (1 + math.exp(-a)) for a in logits[n]]
        b = [float(u[n][i] < p[i]) for i in range(3)]
        b_tilde = [float(u[n][i] > 1 - p[i]) for i in range(3)]
        for i in range(3):
            if redraws is None:
                sign = -1.0 if b_tilde[i] else 1.0
                differs = float(b[i] != b_tilde[i])
                g = 0.5 * (f(n, b) - f(n, b_tilde)) * sign * differs * max(p[i], 1 - p[i])
            else:
                low, high = _interval(p[i], b[i], b_tilde[i])
                g = (f(n, b_tilde) - f(n, b)) * (low + redraws[n][i] * (high - low) - 0.5)
            regularizer = 0.1 * 2 * p[i] * p[i] * (1 - p[i])
            grad_logits[n][i] = (g + regularizer) / 2
        for value in (b, b_tilde):
            residual = sum(w * x for w, x in zip(weights, value)) - targets[n]
            for j in range(3):
                grad_weights[j] += 2 * residual * value[j] / 2 / 2  # mean of the pair, of the batch
    return {
        "logits": torch.tensor(grad_logits, dtype=DTYPE),
        "weights": torch.tensor(grad_weights, dtype=DTYPE),
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_arm_single_draw_matches_hand_derivation(seed: int) -> None:
    grads, u, redraws = _single_draw("arm", seed)
    for key, value in _hand_gradient(redraws, u).items():
        torch.testing.assert_close(grads[key], value, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_disarm_single_draw_matches_hand_derivation(seed: int) -> None:
    grads, u, _ = _single_draw("disarm", seed)
    for key, value in _hand_gradient(None, u).items():
        torch.testing.assert_close(grads[key], value, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------- exact


def _exact_once(problem: ToyProblem, estimator: Estimator) -> tuple[Tensor, dict[str, Tensor]]:
    """The mean surrogate's value and gradient from one call."""
    params = {k: v.requires_grad_(True) for k, v in problem.parameters().items()}
    value = estimator.surrogate(problem.forward(params, estimator)).mean()
    value.backward()
    return value.detach(), {k: v.grad for k, v in params.items()}


@pytest.mark.parametrize(
    ("problem", "configurations"),
    [
        (make_problem("bernoulli-quadratic", QUADRATIC), 2),
        (make_problem("bernoulli-quadratic", {"theta": -1.3, "target": 0.1}), 2),
        (make_problem("categorical-linear"), 3),
        (
            make_problem(
                "categorical-linear", {"logits": (1.0, 0.0, -1.0, 0.5), "c": (-2.0, 1.0, 0.5, 4.0)}
            ),
            4,
        ),
        (BernoulliTriple(), 8),
    ],
    ids=["quadratic", "quadratic-2", "linear", "linear-4", "triple"],
)
def test_exact_is_the_closed_form(problem: ToyProblem, configurations: int) -> None:
    estimator = make_estimator("exact")
    with pytest.raises(RuntimeError, match="known once"):
        estimator.evaluations
    _, grads = _exact_once(problem, estimator)
    assert estimator.evaluations == configurations
    assert estimator.sample_shape == (configurations,)
    for key, value in problem.exact_gradient().items():
        torch.testing.assert_close(grads[key], value, rtol=1e-12, atol=1e-15)


def test_exact_value_is_the_expected_loss() -> None:
    problem = BernoulliTriple()
    value, _ = _exact_once(problem, make_estimator("exact"))
    expected = problem.expected_loss(problem.parameters()).mean()
    torch.testing.assert_close(value, expected, rtol=1e-13, atol=0)
    quadratic = make_problem("bernoulli-quadratic", QUADRATIC)
    value, _ = _exact_once(quadratic, make_estimator("exact"))
    p = 1 / (1 + math.exp(-QUADRATIC["theta"]))
    target = QUADRATIC["target"]
    assert float(value) == pytest.approx(p * (1 - target) ** 2 + (1 - p) * target**2, rel=1e-13)


@pytest.mark.parametrize("model_name", ["categorical-vae", "bernoulli-vae"])
def test_exact_on_a_model_is_its_enumerated_oracle(model_name: str) -> None:
    """Value and gradient equal the model's own ``expected_loss`` (another enumeration)."""
    if model_name not in MODELS:
        pytest.skip(f"model {model_name!r} is not registered")
    torch.manual_seed(0)
    cls = MODELS[model_name]
    model = make_model(model_name, DataShape(10, 2, 100), cls.oracle_options).double()
    x = (torch.rand(5, 10, dtype=DTYPE) > 0.5).to(DTYPE)
    y = torch.zeros(5, dtype=torch.long)
    estimator = make_estimator("exact")
    value = estimator.surrogate(model(x, y, estimator))
    reference = model.expected_loss(x, y)
    torch.testing.assert_close(value, reference, rtol=1e-12, atol=1e-12)
    params = list(model.parameters())
    ours = torch.autograd.grad(value.mean(), params)
    theirs = torch.autograd.grad(reference.mean(), params)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_exact_refuses_more_configurations_than_its_limit() -> None:
    small = make_estimator("exact[max_configurations=4]")
    message = "has 8 configurations, more than max_configurations=4$"
    with pytest.raises(EnumerationTooLarge, match=message):
        small.sample(BernoulliNode(torch.zeros(2, 3, dtype=DTYPE), event_dims=1))
    thesis = CategoricalNode(torch.zeros(1, 30, 10, dtype=DTYPE), event_dims=1)
    with pytest.raises(NotApplicable, match=f"has {10**30} configurations, .*=16384"):
        make_estimator("exact").sample(thesis)
    assert issubclass(EnumerationTooLarge, ValueError)
    assert make_estimator("exact[max_configurations=8]").sample(
        BernoulliNode(torch.zeros(2, 3, dtype=DTYPE), event_dims=1)
    ).shape == (8, 2, 3)
    with pytest.raises(ValueError, match="max_configurations must be positive"):
        make_estimator("exact[max_configurations=0]")


def test_exact_support_is_every_configuration_once() -> None:
    categorical = CategoricalNode(torch.zeros(4, 2, 3, dtype=DTYPE), event_dims=1)
    support = make_estimator("exact").sample(categorical)  # [9, 4, 2, 3]
    assert support.shape == (9, 4, 2, 3)
    assert torch.all(support.sum(-1) == 1)
    codes = {tuple(row.argmax(-1).tolist()) for row in support[:, 0]}
    assert codes == set(itertools.product(range(3), repeat=2))
    bernoulli = BernoulliNode(torch.zeros(3, 2, 2, dtype=DTYPE), event_dims=2)
    support = make_estimator("exact").sample(bernoulli)  # [16, 3, 2, 2]
    assert {tuple(row.flatten().tolist()) for row in support[:, 2]} == set(
        itertools.product((0.0, 1.0), repeat=4)
    )
