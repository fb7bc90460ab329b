"""Score-function estimators with control variates: RLOO, MuProp and the shared baselines.

Exact single draws: each draw's gradient, computed by the estimator under
``vmap(grad, randomness="different")`` and eagerly, equals the hand-derived formula at the
draw's own z to round-off (the draws come back as auxiliary outputs). Statistical tests use
float64, fixed seeds and tolerances from standard errors (tests/helpers.py).
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import Tensor

from gradbench.estimators import StochasticForward, make_estimator
from gradbench.estimators.base import Estimator
from gradbench.estimators.control_variates import (
    LearnedBaseline,
    MovingAverage,
    leave_one_out,
)
from gradbench.estimators.nodes import (
    BernoulliNode,
    CategoricalNode,
    GaussianNode,
    StochasticNode,
    WeightNoiseNode,
)
from gradbench.measure.toy import toy_draws
from gradbench.models.toy import make_problem
from tests.helpers import assert_unbiased, variance_standard_error, z_for

F64 = torch.float64
COEFFICIENTS = torch.tensor([0.7, -1.2, 2.0], dtype=F64)
"""a in the test loss f(z; θ) = (aᵀz − θ)², nonlinear in z so that MuProp's Taylor term is not f."""
THETA = 0.4
"""The decoder's own parameter θ at which the gradients are drawn."""
DRAWS = 16


def _params(kind: str) -> dict[str, Tensor]:
    """Node parameters of one example (event of 3) and the decoder's own parameter θ."""
    params = {"theta": torch.tensor(THETA, dtype=F64)}
    if kind == "gaussian":
        params |= {
            "mu": torch.tensor([0.3, -0.8, 1.1], dtype=F64),
            "sigma": torch.tensor([0.9, 0.5, 1.4], dtype=F64),
        }
    else:
        params["logits"] = torch.tensor([0.6, -1.1, 0.2], dtype=F64)
    return params


def _node(kind: str, params: dict[str, Tensor]) -> StochasticNode:
    if kind == "gaussian":
        return GaussianNode(params["mu"].unsqueeze(0), params["sigma"].unsqueeze(0))
    if kind == "bernoulli":
        return BernoulliNode(params["logits"].unsqueeze(0), event_dims=1)
    return CategoricalNode(params["logits"].unsqueeze(0))


def _forward(kind: str, params: dict[str, Tensor], estimator: Estimator) -> StochasticForward:
    """f(z; θ) = (aᵀz − θ)² of one example: data_loss [*sample_shape, 1]."""
    node = _node(kind, params)
    z = estimator.sample(node)  # [*sample_shape, 1, 3]
    loss = ((z * COEFFICIENTS).sum(-1) - params["theta"]).square()
    return StochasticForward(loss, torch.zeros(1, dtype=F64), [node], [z])


def _draws(
    kind: str, estimator: Estimator, draws: int = DRAWS, seed: int = 0
) -> tuple[dict[str, Tensor], Tensor]:
    """Gradients [draws + 1, ...] and samples [draws + 1, *sample_shape, 3]: ``draws`` under
    vmap(grad), then one eager backward pass."""
    params = _params(kind)

    def surrogate(p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        forward = _forward(kind, p, estimator)
        return estimator.surrogate(forward).mean(), forward.samples[0][..., 0, :].detach()

    torch.manual_seed(seed)
    batched = torch.func.vmap(
        lambda _: torch.func.grad(surrogate, has_aux=True)(params), randomness="different"
    )
    grads, samples = batched(torch.zeros(draws))
    eager = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    value, sample = surrogate(eager)
    value.backward()
    return (
        {k: torch.cat([grads[k], eager[k].grad.unsqueeze(0)]) for k in params},
        torch.cat([samples, sample.unsqueeze(0)]),
    )


def _score(kind: str, z: Tensor) -> dict[str, Tensor]:
    """∇ log q(z) by hand for z [..., 3]."""
    p = _params(kind)
    if kind == "gaussian":
        mu, sigma = p["mu"], p["sigma"]
        return {"mu": (z - mu) / sigma**2, "sigma": (z - mu) ** 2 / sigma**3 - 1 / sigma}
    if kind == "bernoulli":
        return {"logits": z - torch.sigmoid(p["logits"])}
    return {"logits": z - p["logits"].softmax(-1)}


def _mean_field(kind: str) -> Tensor:
    p = _params(kind)
    if kind == "gaussian":
        return p["mu"]
    return torch.sigmoid(p["logits"]) if kind == "bernoulli" else p["logits"].softmax(-1)


def _mean_field_vjp(kind: str, vector: Tensor) -> dict[str, Tensor]:
    """(∂μ̄/∂φ)ᵀ v by hand: identity for a Gaussian mean, σ′ for Bernoulli logits, the softmax
    Jacobian π ⊙ (v − πᵀv) for categorical logits."""
    p = _params(kind)
    if kind == "gaussian":
        return {"mu": vector, "sigma": torch.zeros_like(vector)}
    if kind == "bernoulli":
        probs = torch.sigmoid(p["logits"])
        return {"logits": vector * probs * (1 - probs)}
    probs = p["logits"].softmax(-1)
    return {"logits": probs * (vector - (vector * probs).sum(-1, keepdim=True))}


def _f(z: Tensor) -> Tensor:
    return ((z * COEFFICIENTS).sum(-1) - THETA).square()


def _f_slope(u: Tensor) -> Tensor:
    """f′(u) = 2 (aᵀu − θ) a."""
    return 2 * ((u * COEFFICIENTS).sum(-1, keepdim=True) - THETA) * COEFFICIENTS


def _df_dtheta(z: Tensor) -> Tensor:
    return -2 * ((z * COEFFICIENTS).sum(-1) - THETA)


KINDS = ["gaussian", "bernoulli", "categorical"]


# ------------------------------------------------------------------------------ baselines


def test_leave_one_out_is_the_mean_of_the_others() -> None:
    values = torch.tensor([[1.0, 4.0], [2.0, -2.0], [6.0, 1.0]], dtype=F64)
    expected = torch.tensor([[4.0, -0.5], [3.5, 2.5], [1.5, 1.0]], dtype=F64)
    torch.testing.assert_close(leave_one_out(values), expected)
    with pytest.raises(ValueError, match="at least 2 draws"):
        leave_one_out(values[:1])


def test_moving_average_starts_at_the_first_mean_and_validates_its_decay() -> None:
    average = MovingAverage(0.75)
    average.update(torch.tensor([2.0, 4.0]))
    average.update(torch.tensor([7.0]))
    assert float(average.average) == pytest.approx(0.75 * 3.0 + 0.25 * 7.0)
    with pytest.raises(ValueError, match="baseline_decay"):
        MovingAverage(1.0)


def test_lr_baseline_uses_the_average_from_before_its_own_draw() -> None:
    """ĝ_μ = (f(z) − b)(z − μ)/σ² with the b of before the step; observe then folds f(z) in."""
    problem = make_problem("gaussian-quadratic", {"mu": 0.2, "sigma": 0.7, "target": 1.0})
    estimator = make_estimator("lr-baseline", {"baseline_decay": 0.5})
    earlier = torch.full((1,), 3.0, dtype=F64)
    estimator.observe(StochasticForward(earlier, torch.zeros(1, dtype=F64)))
    params = {k: v.requires_grad_(True) for k, v in problem.parameters().items()}
    torch.manual_seed(3)
    forward = problem.forward(params, estimator)
    estimator.surrogate(forward).sum().backward()
    z = forward.samples[0][0, 0]
    f = (z - 1.0) ** 2
    torch.testing.assert_close(params["mu"].grad[0], (f - 3.0) * (z - 0.2) / 0.7**2)
    estimator.observe(forward)
    assert float(estimator.average) == pytest.approx(0.5 * 3.0 + 0.5 * float(f))


def _baseline_forward(inputs: Tensor | None, draws: tuple[int, ...]) -> StochasticForward:
    """A forward pass of ``draws`` draws on a batch whose node records ``inputs`` as context
    (None: no input, a batch of 6); only the baseline's input and the batch shape matter."""
    batch = 6 if inputs is None else inputs.shape[0]
    node = BernoulliNode(torch.zeros(batch, 2), event_dims=1, context=inputs)
    return StochasticForward(torch.zeros(*draws, batch), torch.zeros(batch), [node], [])


@pytest.mark.parametrize("target_dtype", [torch.float32, F64], ids=["f32-target", "f64-target"])
@pytest.mark.parametrize("draws", [(), (3,)], ids=["one-draw", "three-draws"])
@pytest.mark.parametrize("features", [5, None], ids=["mlp", "constant"])
def test_learned_baseline_fit_is_autograd_with_plain_adam(
    draws: tuple[int, ...], features: int | None, target_dtype: torch.dtype
) -> None:
    """NVIL's fit (closed-form gradient, fused Adam) takes the steps autograd and a plain
    torch.optim.Adam take on mean (f − b_ψ(x))²: the same prediction before each step, the same
    gradient and the same parameters after it, to float32 round-off, over several steps; a
    float64 loss (the toy problems') fits the float32 ψ as autograd does."""
    torch.manual_seed(0)
    baseline = LearnedBaseline(hidden=4, learning_rate=0.05)
    baseline.bind(features)
    assert baseline.network is not None
    reference = copy.deepcopy(baseline.network)
    adam = torch.optim.Adam(reference.parameters(), lr=0.05)
    for _ in range(6):
        inputs = None if features is None else torch.randn(6, features)
        forward = _baseline_forward(inputs, draws)
        target = (3.0 * torch.randn(*draws, 6) + 2.0).to(target_dtype)
        expected = reference(forward.regularizer) if inputs is None else reference(inputs).squeeze(-1)
        torch.testing.assert_close(baseline(forward), expected)
        torch.testing.assert_close(baseline.predict(forward), expected)
        adam.zero_grad(set_to_none=True)
        (target - expected).square().mean().backward()
        adam.step()
        baseline.fit(forward, target)
        for fitted, plain in zip(baseline.network.parameters(), reference.parameters()):
            torch.testing.assert_close(fitted.grad, plain.grad, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(fitted, plain, rtol=1e-5, atol=1e-6)


def _fit_once(baseline: LearnedBaseline, forward: StochasticForward, target: Tensor) -> list[Tensor]:
    """ψ after one fit of ``baseline`` on (forward, target), and after the same step taken by
    autograd and a plain Adam on a copy of ψ from before it (its own state: the first step)."""
    assert baseline.network is not None
    reference = copy.deepcopy(baseline.network)
    adam = torch.optim.Adam(reference.parameters(), lr=baseline.learning_rate)
    inputs = forward.context()
    assert inputs is not None
    (target - reference(inputs).squeeze(-1)).square().mean().backward()
    adam.step()
    baseline.fit(forward, target)
    return [*baseline.network.parameters(), *reference.parameters()]


def test_learned_baseline_fits_at_the_current_input_and_parameters() -> None:
    """The forward ``predict`` keeps serves only the fit on the same input with ψ unchanged: a
    fit on another minibatch, or after ψ changed in place, computes its own."""
    torch.manual_seed(1)
    target = 3.0 * torch.randn(6) + 2.0
    for change in ("input", "parameters"):
        baseline = LearnedBaseline(hidden=4, learning_rate=0.05)
        baseline.bind(5)
        assert baseline.network is not None
        seen = _baseline_forward(torch.randn(6, 5), ())
        baseline.predict(seen)
        fitted = seen
        if change == "input":
            fitted = _baseline_forward(torch.randn(6, 5), ())
        else:
            with torch.no_grad():
                baseline.network[0].weight.mul_(-1.5)
        parameters = _fit_once(baseline, fitted, target)
        for ours, plain in zip(parameters[:4], parameters[4:]):
            torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)


def test_learned_baseline_rejects_a_target_of_another_batch() -> None:
    baseline = LearnedBaseline(hidden=4, learning_rate=0.05)
    baseline.bind(5)
    with pytest.raises(ValueError, match="does not end with the batch shape"):
        baseline.fit(_baseline_forward(torch.randn(6, 5), ()), torch.zeros(7))


# ------------------------------------------------------------------------------ RLOO


@pytest.mark.parametrize("kind", KINDS)
def test_rloo_draws_match_hand_derivation(kind: str) -> None:
    """ĝ_φ = 1/(K−1) Σ_k (f_k − f̄) ∇ log q(z_k); ĝ_θ = mean_k ∂f(z_k)/∂θ."""
    estimator = make_estimator("rloo[samples=3]")
    grads, z = _draws(kind, estimator)  # z [N, K, 3]
    assert z.shape == (DRAWS + 1, 3, 3)
    f = _f(z)  # [N, K]
    weights = (f - f.mean(1, keepdim=True)).unsqueeze(-1) / 2
    for name, score in _score(kind, z).items():
        torch.testing.assert_close(grads[name], (weights * score).sum(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads["theta"], _df_dtheta(z).mean(1), rtol=1e-12, atol=1e-12)


def test_rloo_draws_the_nodes_noise() -> None:
    """The K draws are the node's own: z_k = μ + σ ε_k with ε from the seeded stream."""
    params = _params("gaussian")
    torch.manual_seed(5)
    forward = _forward("gaussian", params, make_estimator("rloo"))
    torch.manual_seed(5)
    noise = torch.randn(4, 1, 3, dtype=F64)
    torch.testing.assert_close(forward.samples[0], params["mu"] + params["sigma"] * noise)
    assert forward.data_loss.shape == (4, 1)


def test_rloo_validates_its_options_and_node_kinds() -> None:
    assert make_estimator("rloo[samples=6]").evaluations == 6
    with pytest.raises(ValueError, match="samples must be an int >= 2"):
        make_estimator("rloo[samples=1]")
    with pytest.raises(TypeError, match="does not support weight-noise"):
        make_estimator("rloo").sample(
            WeightNoiseNode(torch.ones(2, 3), torch.zeros(3, 1), lambda: torch.ones(3, 1))
        )


@pytest.mark.parametrize("name", ["rloo", "muprop"])
def test_a_loss_without_the_sample_dimension_raises(name: str) -> None:
    """A model that averages the draws away, or whose losses do not line up with its node's
    batch, raises instead of broadcasting against the [K, batch] log q."""
    estimator = make_estimator(name)
    logits = torch.zeros(2, 3, dtype=F64, requires_grad=True)
    node = CategoricalNode(logits)
    z = estimator.sample(node)  # [K, 2, 3]
    regularizer = torch.zeros(2, dtype=F64)
    collapsed = StochasticForward(z.sum(-1).mean(0), regularizer, [node], [z])
    with pytest.raises(ValueError, match="sample dimension"):
        estimator.surrogate(collapsed)
    misaligned = StochasticForward(z[:, :1].sum(-1), regularizer[:1], [node], [z])  # [K, 1]
    with pytest.raises(ValueError, match="does not match the data loss"):
        estimator.surrogate(misaligned)


Outcome = tuple[float, float, Tensor]
"""(probability, f, ∇ log q) of one point of a finite support."""


def _exact_variances(outcomes: list[Outcome], draws: int) -> tuple[Tensor, Tensor, Tensor]:
    """By enumeration over a finite support of (probability, f, score) outcomes: the exact
    gradient, Var of RLOO with ``draws`` draws and Var of LR averaged over ``draws`` draws."""
    gradient = sum(p * f * s for p, f, s in outcomes)
    lr_variance = (sum(p * (f * s) ** 2 for p, f, s in outcomes) - gradient**2) / draws
    second = torch.zeros_like(gradient)
    for joint in itertools.product(outcomes, repeat=draws):
        probability = math.prod(p for p, _, _ in joint)
        mean = sum(f for _, f, _ in joint) / draws
        estimate = sum((f - mean) * s for _, f, s in joint) / (draws - 1)
        second = second + probability * estimate**2
    return gradient, second - gradient**2, lr_variance


def _outcomes(problem: str, setting: dict) -> list[Outcome]:
    if problem == "categorical-linear":
        logits = torch.tensor(setting["logits"], dtype=F64)
        probs = logits.softmax(0)
        eye = torch.eye(len(probs), dtype=F64)
        return [(float(probs[k]), setting["c"][k], eye[k] - probs) for k in range(len(probs))]
    p = float(torch.sigmoid(torch.tensor(setting["theta"], dtype=F64)))
    return [
        (q, (b - setting["target"]) ** 2, torch.tensor([b - p], dtype=F64))
        for b, q in ((1.0, p), (0.0, 1 - p))
    ]


@pytest.mark.parametrize(
    ("problem", "setting"),
    [
        ("categorical-linear", {"logits": (0.1, -0.5, 2.0), "c": (11.0, 10.0, 13.0)}),
        ("bernoulli-quadratic", {"theta": 0.5, "target": -1.5}),
    ],
)
def test_rloo_variance_below_lr_at_matched_evaluations(problem: str, setting: dict) -> None:
    """Where f's mean is large against its spread, LR averaged over K draws pays (E f)² Var(s)/K
    while RLOO is shift-invariant. The enumerated variances say so; the measured ones agree with
    them and order the same way, within standard errors."""
    samples, draws = 4, 20_000
    name = next(iter(make_problem(problem, setting).parameters()))
    gradient, rloo_exact, lr_exact = _exact_variances(_outcomes(problem, setting), samples)
    torch.testing.assert_close(gradient, make_problem(problem, setting).exact_gradient()[name])
    assert torch.all(lr_exact > 2 * rloo_exact), (lr_exact, rloo_exact)
    toy = make_problem(problem, setting)
    rloo = toy_draws(toy, make_estimator("rloo"), draws, seed=21)[name]
    lr = toy_draws(toy, make_estimator("lr"), samples * draws, seed=22)[name]
    lr = lr.reshape(draws, samples, -1).mean(1)  # LR averaged over K draws: K evaluations too
    z = z_for(3 * rloo_exact.numel())
    rloo_se, lr_se = variance_standard_error(rloo), variance_standard_error(lr)
    assert torch.all((rloo.var(0) - rloo_exact).abs() < z * rloo_se), (rloo.var(0), rloo_exact)
    assert torch.all((lr.var(0) - lr_exact).abs() < z * lr_se), (lr.var(0), lr_exact)
    assert torch.all(lr.var(0) - rloo.var(0) > z * (rloo_se**2 + lr_se**2).sqrt())


# ------------------------------------------------------------------------------ MuProp


def _muprop_expected(kind: str, z: Tensor, baseline: float) -> dict[str, Tensor]:
    """(f(z) − f(μ̄) − f′(μ̄)ᵀ(z − μ̄) − b) ∇ log q(z) + (∂μ̄/∂φ)ᵀ f′(μ̄); ∂f(z)/∂θ for θ."""
    center = _mean_field(kind)
    slope = _f_slope(center)
    residual = _f(z) - _f(center) - ((z - center) * slope).sum(-1) - baseline  # [N]
    expected = {
        name: residual.unsqueeze(-1) * score + _mean_field_vjp(kind, slope)[name]
        for name, score in _score(kind, z).items()
    }
    return expected | {"theta": _df_dtheta(z)}


@pytest.mark.parametrize("kind", KINDS)
def test_muprop_draws_match_hand_derivation(kind: str) -> None:
    """Row 0 is the draw, row 1 the mean-field point; only the draw's θ-gradient is taken."""
    estimator = make_estimator("muprop")
    grads, rows = _draws(kind, estimator)  # rows [N, 2, 3]
    torch.testing.assert_close(rows[:, 1], _mean_field(kind).expand(DRAWS + 1, 3))
    for name, value in _muprop_expected(kind, rows[:, 0], 0.0).items():
        torch.testing.assert_close(grads[name], value, rtol=1e-12, atol=1e-12)


def test_muprop_moving_average_is_from_before_the_draw() -> None:
    """With baseline=ema the residual loses b, the average of f(z) − f(μ̄) over earlier steps;
    observe folds this step in only afterwards."""
    estimator = make_estimator("muprop[baseline=ema,baseline_decay=0.5]")
    assert estimator.tracks_losses
    params = _params("bernoulli")
    torch.manual_seed(8)
    earlier = [_forward("bernoulli", params, estimator) for _ in range(3)]
    for forward in earlier:
        estimator.observe(forward)
    baseline = float(estimator.moving.average)
    grads, rows = _draws("bernoulli", estimator, seed=9)
    for name, value in _muprop_expected("bernoulli", rows[:, 0], baseline).items():
        torch.testing.assert_close(grads[name], value, rtol=1e-12, atol=1e-12)
    forward = _forward("bernoulli", params, estimator)
    estimator.observe(forward)
    gap = float(forward.data_loss[0, 0] - forward.data_loss[1, 0])
    assert float(estimator.moving.average) == pytest.approx(0.5 * baseline + 0.5 * gap)


def test_muprop_is_exact_for_a_linear_loss() -> None:
    """h = f when f is linear in z: every draw is the exact gradient (zero variance)."""
    for setting in ({}, {"logits": (1.0, 0.0, -1.0, 0.5), "c": (-2.0, 1.0, 0.5, 4.0)}):
        problem = make_problem("categorical-linear", setting)
        draws = toy_draws(problem, make_estimator("muprop"), 200, seed=4)["logits"]
        exact = problem.exact_gradient()["logits"]
        torch.testing.assert_close(draws, exact.expand_as(draws), rtol=1e-12, atol=1e-14)


def test_muprop_with_its_baseline_is_unbiased() -> None:
    setting = {"theta": 1.5, "target": 0.1}
    problem = make_problem("bernoulli-quadratic", setting)
    draws = toy_draws(problem, make_estimator("muprop[baseline=ema]"), 20_000, seed=6)
    assert_unbiased(draws["theta"], problem.exact_gradient()["theta"], "muprop[baseline=ema]")


def test_muprop_reports_the_loss_at_the_draw_and_validates_options() -> None:
    estimator = make_estimator("muprop")
    assert estimator.evaluations == 2 and not estimator.tracks_losses
    torch.manual_seed(1)
    forward = _forward("categorical", _params("categorical"), estimator)
    torch.testing.assert_close(estimator.surrogate(forward), forward.loss[0])
    with pytest.raises(ValueError, match="unknown baseline 'magic'"):
        make_estimator("muprop[baseline=magic]")
    with pytest.raises(ValueError, match="baseline_decay"):
        make_estimator("muprop[baseline_decay=1.5]")
