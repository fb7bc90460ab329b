"""Estimators against closed-form gradients: unbiasedness, bias where expected, variance facts."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from gradbench.data import DataConfig, load_dataset
from gradbench.estimators import ESTIMATORS, StochasticForward, base_name, make_estimator
from gradbench.estimators.nodes import CategoricalNode, GaussianNode, WeightNoiseNode
from gradbench.measure.toy import toy_draws
from gradbench.measure.training import make_optimizer
from gradbench.models.base import DataShape, get_model_class
from gradbench.models.toy import PROBLEMS, make_problem
from tests.helpers import (
    Z,
    assert_biased,
    assert_unbiased,
    standard_error,
    variance_standard_error,
    z_for,
)

DRAWS = 20_000

# Two or more parameter settings per problem, chosen away from symmetric points.
SETTINGS = {
    "gaussian-quadratic": [
        {"mu": 0.5, "sigma": 1.0, "target": -0.4},
        {"mu": -1.3, "sigma": 0.3, "target": 0.8},
    ],
    "bernoulli-quadratic": [{"theta": 0.0, "target": 0.45}, {"theta": 1.5, "target": 0.1}],
    "categorical-linear": [
        {"logits": (0.1, -0.5, 2.0), "c": (1.0, 0.0, 3.0)},
        {"logits": (1.0, 0.0, -1.0, 0.5), "c": (-2.0, 1.0, 0.5, 4.0)},
    ],
    "weight-noise-regression": [
        {},
        {"mu": (1.0, -2.0, 0.3), "sigma": (0.2, 1.5, 0.7), "n_examples": 30, "data_seed": 3},
    ],
}

UNBIASED_CASES = [
    (problem, name, index)
    for problem in PROBLEMS
    for index in range(len(SETTINGS.get(problem, [{}])))
    for name, cls in ESTIMATORS.items()
    if cls.unbiased and make_estimator(name).applies_to(PROBLEMS[problem].node_kinds, False)
]

# Every registered estimator must be tested on a toy problem or, where none applies, a model.
TESTED_ELSEWHERE = {"target-prop": "test_target_prop_direction_is_exact"}


def draws_for(problem: str, estimator: str, setting: dict, samples: int = DRAWS, **options):
    return toy_draws(
        make_problem(problem, setting), make_estimator(estimator, options), samples, seed=1234
    )


def test_every_estimator_and_every_toy_has_a_statistical_case() -> None:
    """Unbiased estimators against closed forms on every toy they apply to (here), every
    estimator against the exact gradient of a real model where one applies (test_oracle: the
    biased ones must be measurably biased there); every toy problem has unbiased cases."""
    from tests.test_oracle import CASES

    on_toys = {name for _, name, _ in UNBIASED_CASES}
    on_models = {base_name(label) for _, label in CASES}
    assert on_toys | on_models | set(TESTED_ELSEWHERE) == set(ESTIMATORS)
    assert {problem for problem, _, _ in UNBIASED_CASES} == set(PROBLEMS)


@pytest.mark.parametrize(("problem", "estimator", "index"), UNBIASED_CASES)
def test_unbiased_against_closed_form(problem: str, estimator: str, index: int) -> None:
    setting = SETTINGS.get(problem, [{}])[index]
    draws = draws_for(problem, estimator, setting)
    exact = make_problem(problem, setting).exact_gradient()
    for name, value in exact.items():
        assert_unbiased(draws[name], value, what=f"{estimator} on {problem} d/d{name}")


def test_assert_unbiased_rejects_a_biased_estimator() -> None:
    draws = draws_for("gaussian-quadratic", "reparam", SETTINGS["gaussian-quadratic"][0])
    exact = make_problem("gaussian-quadratic", SETTINGS["gaussian-quadratic"][0]).exact_gradient()
    shifted = draws["mu"] + 5 * standard_error(draws["mu"])
    with pytest.raises(AssertionError):
        assert_unbiased(shifted, exact["mu"])


def test_learned_baseline_is_unbiased() -> None:
    setting = SETTINGS["gaussian-quadratic"][1]
    draws = draws_for("gaussian-quadratic", "lr-baseline", setting, baseline="learned")
    for name, value in make_problem("gaussian-quadratic", setting).exact_gradient().items():
        assert_unbiased(draws[name], value, what=f"learned baseline d/d{name}")


def test_learned_baseline_cuts_the_variance_of_lr() -> None:
    setting = SETTINGS["gaussian-quadratic"][0]
    plain = draws_for("gaussian-quadratic", "lr", setting)["mu"][:, 0]
    learned = draws_for("gaussian-quadratic", "lr-baseline", setting, baseline="learned")["mu"][:, 0]
    gap = plain.var() - learned.var()
    assert gap > Z * math.hypot(variance_standard_error(plain), variance_standard_error(learned))


def test_input_dependent_baseline_learns_to_predict_the_loss() -> None:
    """NVIL: b_ψ(x) fitted by least squares lowers E (f − b_ψ(x))² on held-out draws."""
    from gradbench.models import DataShape, make_model

    torch.manual_seed(0)
    model = make_model("gaussian-vae", DataShape(16, 2, 100), {"hidden_sizes": (8,), "latent_dim": 2})
    estimator = make_estimator("lr-baseline", {"baseline": "learned", "baseline_lr": 0.01})
    estimator.bind(16)
    prototypes = (torch.rand(4, 16) > 0.5).float()

    def batch() -> torch.Tensor:  # examples near four prototypes: their losses differ by prototype
        picks = prototypes[torch.randint(0, 4, (64,))]
        return torch.where(torch.rand(64, 16) < 0.05, 1 - picks, picks)

    def squared_errors() -> torch.Tensor:
        with torch.no_grad():
            x = batch()
            forward = model(x, torch.zeros(64, dtype=torch.long), estimator)
            return (forward.data_loss - estimator.baseline(forward)).square()

    before = squared_errors()
    with torch.no_grad():
        for _ in range(1500):
            x = batch()
            estimator.observe(model(x, torch.zeros(64, dtype=torch.long), estimator))
    after = squared_errors()
    se = math.hypot(standard_error(before.unsqueeze(1))[0], standard_error(after.unsqueeze(1))[0])
    assert before.mean() - after.mean() > Z * se, (before.mean(), after.mean())


@pytest.mark.parametrize(
    ("estimator", "problem", "temperature"),
    [
        ("gumbel-softmax", "bernoulli-quadratic", 1.0),
        ("gumbel-softmax", "categorical-linear", 1.0),
        ("st-gumbel", "bernoulli-quadratic", 1.0),
        ("st-gumbel", "categorical-linear", 1.0),
    ],
)
def test_relaxed_estimators_are_biased(estimator: str, problem: str, temperature: float) -> None:
    setting = SETTINGS[problem][0]
    draws = draws_for(problem, estimator, setting, 100_000, temperature=temperature)
    for name, value in make_problem(problem, setting).exact_gradient().items():
        assert_biased(draws[name], value, what=f"{estimator} τ={temperature} on {problem}")


def test_gumbel_softmax_bias_shrinks_with_temperature() -> None:
    setting = SETTINGS["bernoulli-quadratic"][0]
    exact = make_problem("bernoulli-quadratic", setting).exact_gradient()["theta"]
    biases, errors = [], []
    for tau in (1.0, 0.5, 0.25):
        d = draws_for("bernoulli-quadratic", "gumbel-softmax", setting, 200_000, temperature=tau)
        biases.append(float((d["theta"].mean() - exact).abs()))
        errors.append(float(standard_error(d["theta"])))
    for (b_hi, se_hi), (b_lo, se_lo) in zip(zip(biases, errors), zip(biases[1:], errors[1:])):
        assert b_hi - b_lo > z_for(2) * math.hypot(se_hi, se_lo), (biases, errors)


def test_no_noise_misses_the_noise_gradient() -> None:
    """Without noise the σ-gradient Σ x² σ term vanishes: a biased reference, deterministic here."""
    draws = draws_for("weight-noise-regression", "no-noise", {}, 100)
    assert torch.all(draws["sigma"] == 0)
    assert torch.all(draws["mu"] == draws["mu"][0])


def test_reparam_variance_of_mu_is_four_sigma_squared() -> None:
    setting = {"mu": 0.7, "sigma": 1.3, "target": 0.2}
    draws = draws_for("gaussian-quadratic", "reparam", setting)["mu"][:, 0]
    n = draws.shape[0]
    # ∂/∂μ = 2(z − t) is Gaussian, so (n − 1) s² / (4σ²) ~ χ²(n − 1).
    low, high = stats.chi2.ppf([3e-5, 1 - 3e-5], n - 1) / (n - 1) * 4 * 1.3**2
    assert low < float(draws.var()) < high


def test_variance_ordering_lr_above_baseline_above_reparam() -> None:
    setting = SETTINGS["gaussian-quadratic"][0]
    draws = {
        name: draws_for("gaussian-quadratic", name, setting, 100_000)["mu"][:, 0]
        for name in ("lr", "lr-baseline", "reparam")
    }
    variances = {name: d.var() for name, d in draws.items()}
    errors = {name: variance_standard_error(d) for name, d in draws.items()}
    for high, low in (("lr", "lr-baseline"), ("lr-baseline", "reparam")):
        gap = variances[high] - variances[low]
        assert gap > z_for(2) * math.hypot(errors[high], errors[low]), (high, low, variances)


def test_local_reparam_variance_far_below_shared_sample() -> None:
    setting = {"n_examples": 100}
    local = draws_for("weight-noise-regression", "local-reparam", setting)["mu"]
    shared = draws_for("weight-noise-regression", "reparam", setting)["mu"]
    assert torch.all(local.var(0) * 4 < shared.var(0)), (local.var(0), shared.var(0))
    gap = shared.var(0) - local.var(0)
    bound = z_for(gap.numel()) * (variance_standard_error(shared) ** 2 + variance_standard_error(local) ** 2).sqrt()
    assert torch.all(gap > bound)


def test_lr_single_draw_matches_hand_derivation() -> None:
    """Fix the noise: ĝ_μ = f(z)(z − μ)/σ², ĝ_σ = f(z)((z − μ)²/σ³ − 1/σ)."""
    mu, sigma, target = 0.3, 0.8, -0.5
    problem = make_problem("gaussian-quadratic", {"mu": mu, "sigma": sigma, "target": target})
    params = {k: v.requires_grad_(True) for k, v in problem.parameters().items()}
    estimator = make_estimator("lr")
    torch.manual_seed(11)
    forward = problem.forward(params, estimator)
    estimator.surrogate(forward).sum().backward()
    torch.manual_seed(11)
    z = mu + sigma * torch.randn(1, dtype=torch.float64)
    f = (z - target) ** 2
    torch.testing.assert_close(params["mu"].grad, f * (z - mu) / sigma**2)
    torch.testing.assert_close(params["sigma"].grad, f * ((z - mu) ** 2 / sigma**3 - 1 / sigma))


def test_local_reparam_single_draw_matches_hand_derivation() -> None:
    """b = Aμ + √((A⊙A)σ²) ε: ∂b/∂μ = A, ∂b/∂σ = (A⊙A) σ ε / √δ."""
    torch.manual_seed(0)
    inputs = torch.randn(7, 3, dtype=torch.float64)
    mean = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    std = torch.rand(3, 2, dtype=torch.float64).add(0.1).requires_grad_(True)
    node = WeightNoiseNode(inputs, mean, lambda: std.square())
    torch.manual_seed(4)
    out = make_estimator("local-reparam").sample(node)
    out.sum().backward()
    torch.manual_seed(4)
    eps = torch.randn(7, 2, dtype=torch.float64)
    delta = inputs.square() @ std.detach().square()
    torch.testing.assert_close(out, inputs @ mean.detach() + delta.sqrt() * eps)
    torch.testing.assert_close(mean.grad, inputs.sum(0, keepdim=True).T.expand(3, 2))
    expected_std_grad = inputs.square().T @ (eps / delta.sqrt()) * std.detach()
    torch.testing.assert_close(std.grad, expected_std_grad)


def test_target_prop_direction_is_exact() -> None:
    """Encoder update: ∇ ‖π − π̂‖² with π̂ = 2π − π(x') held fixed is J_softmaxᵀ 2(π(x') − π)."""
    torch.manual_seed(2)
    logits = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    inverse_logits = torch.randn(4, 3, 5, dtype=torch.float64)
    node = CategoricalNode(logits, event_dims=1, inverse=lambda _: inverse_logits)
    estimator = make_estimator("target-prop", {"beta_max": 0.0})
    sample = estimator.sample(node)
    assert torch.all(sample.sum(-1) == 1) and not sample.requires_grad
    zeros = torch.zeros(4, dtype=torch.float64)
    forward = StochasticForward(zeros, zeros, [node], [sample], torch.zeros(4, 6))
    estimator.surrogate(forward).sum().backward()
    probs = logits.detach().softmax(-1)
    upstream = 2 * (inverse_logits.softmax(-1) - probs)
    expected = probs * (upstream - (upstream * probs).sum(-1, keepdim=True))
    torch.testing.assert_close(logits.grad, expected)


def _target_prop_posterior_kl(n_classes: int, beta_max: float | None) -> float:
    """Mean KL(q(y|x) ‖ uniform) on the digits' validation split after 10 epochs of target
    propagation at a fixed β (no planned run), a 4 × ``n_classes`` categorical VAE."""
    torch.manual_seed(0)
    data = load_dataset(DataConfig(dataset="digits"))
    shape = DataShape(data.input_dim, data.n_classes, len(data.train))
    model = get_model_class("categorical-vae")(shape, hidden_sizes=(32,), n_vars=4,
                                               n_classes=n_classes)
    estimator = make_estimator("target-prop", {} if beta_max is None else {"beta_max": beta_max})
    optimizer = make_optimizer(model, 1e-2)
    order = torch.Generator().manual_seed(0)
    for _ in range(10):
        for x, y in data.batches("train", 50, order):
            optimizer.zero_grad()
            estimator.surrogate(model(x, y, estimator)).mean().backward()
            optimizer.step()
    with torch.no_grad():
        return float(model.kl_to_uniform(model.encode(data.binarized("valid"))).mean())


@pytest.mark.parametrize(("n_classes", "beta_max", "collapses"), [
    (4, 0.3, False), (4, 0.7, True), (10, 0.15, False), (10, 0.25, True), (10, None, False),
])
def test_target_prop_collapses_to_the_prior_above_beta_2_over_k(
    n_classes: int, beta_max: float | None, collapses: bool
) -> None:
    """Near q = uniform the encoder's logits move by (2/K)(δ − δ') − βδ: for β > 2/K the uniform
    posterior is stable and q(y|x) collapses onto the prior (KL ≈ 0); below, it carries
    information. The default β_max (None) lies below 2/K at the thesis' K = 10."""
    kl = _target_prop_posterior_kl(n_classes, beta_max)
    if collapses:
        assert kl < 0.01
    else:
        assert kl > 0.5


def test_target_prop_beta_rises_over_its_fraction_of_the_run() -> None:
    estimator = make_estimator("target-prop", {"beta_max": 2.0, "beta_warmup_fraction": 0.5})
    assert estimator.beta == 2.0  # no planned run (a toy): the full weight
    estimator.plan(total_steps=8, steps_per_epoch=2)
    forward = StochasticForward(torch.zeros(1), torch.zeros(1))
    betas = []
    for _ in range(6):
        betas.append(estimator.beta)
        estimator.observe(forward)
    assert betas == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert estimator.schedule() == {"beta": 2.0}


@pytest.mark.parametrize("epochs", [10, 50])
def test_temperature_reaches_its_target_per_epoch_at_the_fraction(epochs: int) -> None:
    """τ_e = τ₀ (τ/τ₀)^(e / (f E)): constant within an epoch, τ reached at epoch f·E."""
    estimator = make_estimator(
        "gumbel-softmax[temperature=0.1]", {"initial_temperature": 1.0, "anneal_fraction": 0.5}
    )
    assert estimator.label == "gumbel-softmax[temperature=0.1]"
    assert estimator.temperature == 0.1  # no planned run: the target temperature
    steps_per_epoch = 3
    estimator.plan(epochs * steps_per_epoch, steps_per_epoch)
    forward = StochasticForward(torch.zeros(1), torch.zeros(1))
    for step in range(epochs * steps_per_epoch):
        epoch = step // steps_per_epoch
        expected = max(0.1, math.exp(math.log(0.1) * epoch / (0.5 * epochs)))
        assert estimator.temperature == pytest.approx(expected)
        estimator.observe(forward)
    assert estimator.schedule_at(epochs // 2 * steps_per_epoch) == {"temperature": pytest.approx(0.1)}
    assert estimator.schedule_at(0) == {"temperature": 1.0}


def test_ema_baseline_tracks_mean_loss() -> None:
    estimator = make_estimator("lr-baseline", {"baseline_decay": 0.5})
    for value in (4.0, 2.0, 2.0):
        estimator.observe(StochasticForward(torch.full((3,), value), torch.zeros(3)))
    assert float(estimator.average) == pytest.approx(0.5 * (0.5 * 4.0 + 0.5 * 2.0) + 0.5 * 2.0)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_contract_same_seed_same_numbers_and_value_is_loss(name: str) -> None:
    estimator = make_estimator(name)
    cases = [p for p, cls in PROBLEMS.items() if estimator.applies_to(cls.node_kinds, False)]
    for problem_name in cases:
        problem = make_problem(problem_name)
        first = toy_draws(problem, make_estimator(name), 50, seed=9)
        second = toy_draws(problem, make_estimator(name), 50, seed=9)
        for key in first:
            assert torch.isfinite(first[key]).all()
            torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
        torch.manual_seed(0)
        forward = problem.forward(problem.parameters(), estimator)
        torch.testing.assert_close(estimator.surrogate(forward), estimator.value(forward).detach())


def test_unknown_names_and_options_list_valid_choices() -> None:
    with pytest.raises(ValueError, match="valid: " + ", ".join(ESTIMATORS)):
        make_estimator("reinforce")
    with pytest.raises(ValueError, match="valid: temperature, initial_temperature, anneal_fraction"):
        make_estimator("gumbel-softmax", {"tau": "0.5"})
    with pytest.raises(ValueError, match="valid: temperature, initial_temperature, anneal_fraction"):
        make_estimator("gumbel-softmax[tau=0.5]")
    with pytest.raises(ValueError, match="malformed"):
        make_estimator("gumbel-softmax[temperature]")
    with pytest.raises(ValueError, match="temperature must be positive"):
        make_estimator("gumbel-softmax[temperature=-1]")
    with pytest.raises(ValueError, match="baseline"):
        make_estimator("lr-baseline", {"baseline": "magic"})
    with pytest.raises(TypeError, match="does not support gaussian"):
        make_estimator("gumbel-softmax").sample(GaussianNode(torch.zeros(1), torch.ones(1)))


WEIGHT_NOISE = ("reparam", "reparam-per-example", "local-reparam")
WEIGHT_NOISE_DRAWS = 50_000
"""Enough for a variance's relative SE near 0.6 %: 5 % less noise sd in one estimator (about 7 %
less bias variance here) is then beyond the Bonferroni bound."""


@pytest.fixture(scope="module")
def weight_noise_draws() -> dict[str, dict[str, torch.Tensor]]:
    """50,000 gradients of a small bayes-mlp (12-10-3, float64) on one fixed minibatch of 16
    for each weight-noise estimator: estimator → parameter name → [draws, ...]."""
    from gradbench.gradients import gradient_draws
    from gradbench.models import DataShape, make_model

    torch.manual_seed(0)
    model = make_model("bayes-mlp", DataShape(12, 3, 500), {"hidden_sizes": (10,)}).double()
    x = torch.randn(16, 12, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    params = {k: v.detach() for k, v in model.named_parameters()}
    draws = {}
    for name in WEIGHT_NOISE:
        estimator = make_estimator(name)

        def surrogate(p: dict[str, torch.Tensor]) -> torch.Tensor:
            forward = torch.func.functional_call(model, p, (x, y, estimator))
            return estimator.surrogate(forward).mean()

        torch.manual_seed(1)
        draws[name] = gradient_draws(surrogate, params, WEIGHT_NOISE_DRAWS)
    return draws


def test_weight_noise_estimators_share_the_bayes_mlp_minibatch_gradient(
    weight_noise_draws: dict[str, dict[str, torch.Tensor]],
) -> None:
    """reparam, reparam-per-example and local-reparam: same expectation on a fixed minibatch."""
    means = {n: {k: d.mean(0) for k, d in g.items()} for n, g in weight_noise_draws.items()}
    errors = {
        n: {k: standard_error(d) for k, d in g.items()} for n, g in weight_noise_draws.items()
    }
    keys = list(means["reparam"])
    z = z_for(2 * sum(means["reparam"][k].numel() for k in keys))
    for a, b in (("reparam", "reparam-per-example"), ("reparam-per-example", "local-reparam")):
        for key in keys:
            gap = (means[a][key] - means[b][key]).abs()
            bound = z * (errors[a][key] ** 2 + errors[b][key] ** 2).sqrt()
            assert torch.all((gap < bound) | (gap < 1e-12)), (a, b, key, float((gap / bound).max()))


def test_local_reparam_and_separate_samples_share_the_output_bias_law(
    weight_noise_draws: dict[str, dict[str, torch.Tensor]],
) -> None:
    """Kingma et al. (2015): local reparameterization samples each example's pre-activations
    from the law separate weight samples give them, so a gradient that depends on the weights
    only through them, the output layer's bias (∂ℓ/∂c = ∂ℓ/∂b_L), has one law under both: equal
    variances. θ's gradient also carries the noise path σ = √α |θ|, per weight for separate
    samples (a_i g_j √α ε_ij), per unit for local ones, which the paper's Table 1 shows lower."""
    variance = {n: {k: d.var(0) for k, d in g.items()} for n, g in weight_noise_draws.items()}
    error = {
        n: {k: variance_standard_error(d) for k, d in g.items()}
        for n, g in weight_noise_draws.items()
    }
    local, separate, single = (variance[n] for n in
                               ("local-reparam", "reparam-per-example", "reparam"))
    bias = "layers.1.bias"
    count = separate[bias].numel()
    gap = (separate[bias] - local[bias]).abs()
    bound = z_for(count) * (
        error["reparam-per-example"][bias] ** 2 + error["local-reparam"][bias] ** 2
    ).sqrt()
    assert torch.all(gap < bound), (separate[bias], local[bias], bound)
    below = separate[bias] - single[bias]
    bound = z_for(count) * (
        error["reparam-per-example"][bias] ** 2 + error["reparam"][bias] ** 2
    ).sqrt()
    assert torch.all(below < -bound), ("a shared sample adds the examples' covariance", below)
    for key in ("layers.0.weight_mean", "layers.1.weight_mean"):
        gap = separate[key].mean() - local[key].mean()
        bound = Z * math.hypot(error["reparam-per-example"][key].mean(),
                               error["local-reparam"][key].mean())
        assert gap > bound, (key, separate[key].mean(), local[key].mean())


def test_reparam_per_example_chunks_recompute_the_same_draws(monkeypatch) -> None:
    """Above its memory bound reparam-per-example draws the minibatch in checkpointed chunks:
    at weight counts that are multiples of 16 the loss and every gradient equal the one-chunk
    computation's at the same seed (the backward recomputes each chunk's noise exactly)."""
    from gradbench.estimators import reparam_per_example
    from gradbench.models import DataShape, make_model

    torch.manual_seed(0)
    model = make_model("bayes-mlp", DataShape(16, 16, 500), {"hidden_sizes": (32,)})
    x, y = torch.randn(10, 16), torch.randint(0, 16, (10,))
    estimator = make_estimator("reparam-per-example")

    def loss_and_gradients() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(5)
        loss = estimator.surrogate(model(x, y, estimator)).mean()
        return loss.detach(), torch.autograd.grad(loss, list(model.parameters()))

    whole = loss_and_gradients()
    # 3 chunks of 4, 4 and 2 examples for the 16×32 and 32×16 layers
    monkeypatch.setattr(reparam_per_example, "CHUNK_BYTES", 3 * 16 * 32 * 4 * 4)
    chunked = loss_and_gradients()
    assert torch.equal(whole[0], chunked[0])
    for a, b in zip(whole[1], chunked[1]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_reparam_per_example_backward_is_autograd_through_the_weight_samples() -> None:
    """The per-example product's hand-written backward is the derivative of a_m (μ + σ ⊙ ε_m)
    (gradcheck in float64), and under vmap (randomness drawn outside) it gives each draw's
    gradients of the materialised-weights formula."""
    from gradbench.estimators.reparam_per_example import PerExampleProduct

    torch.manual_seed(0)
    inputs = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    mean = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    std = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(4, 5, 3, dtype=torch.float64)

    def product(a: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return PerExampleProduct.apply(a, m, s, noise)[0]

    assert torch.autograd.gradcheck(product, (inputs, mean, std))

    def loss(params: tuple[torch.Tensor, ...], eps: torch.Tensor, hand: bool) -> torch.Tensor:
        a, m, s = params
        if hand:
            out = PerExampleProduct.apply(a, m, s, eps)[0]
        else:
            out = torch.bmm(a.unsqueeze(1), m + s * eps).squeeze(1)
        return (out.sin() * torch.arange(3.0, dtype=out.dtype)).sum()

    draws = torch.randn(6, 4, 5, 3, dtype=torch.float64)
    params = (inputs.detach(), mean.detach(), std.detach())
    per_draw = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, None))
    for ours, autograd in zip(per_draw(params, draws, True), per_draw(params, draws, False)):
        assert ours.shape[0] == 6 and torch.allclose(ours, autograd, rtol=1e-12, atol=1e-12)
