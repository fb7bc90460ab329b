"""Estimators on the shared models against their exact gradients (``StochasticModel.expected_loss``).

Every registered model with an oracle configuration (``oracle_options``) and every estimator that
applies to it gets a case, found from the registries: on a fixed minibatch of digits, float64,
after a few Adam steps on the exact loss of another minibatch (so the posterior is far from its
initialisation and the KL's gradient is not negligible), N gradient draws with fresh noise.
Unbiased estimators must match the exact gradient on every coordinate of every parameter within
a Bonferroni z of the standard error (one family over all coordinates of the model); biased ones
must miss it somewhere. The oracles themselves are checked against Monte Carlo and, for the
quadrature, against twice the nodes.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor
from torch.func import functional_call

from gradbench.catalogue import applicable
from gradbench.data import DataConfig, load_dataset
from gradbench.estimators import ESTIMATORS, estimator_class, make_estimator
from gradbench.gradients import gradient_draws
from gradbench.models import MODELS, DataShape, make_model
from gradbench.models.toy import PROBLEMS
from tests.helpers import ROUNDING, standard_error, z_for

CPU = torch.device("cpu")
BATCH = 6
"""Examples in the fixed minibatch."""
DRAWS = 10_000
"""Gradient draws per case of an unbiased estimator."""
BIASED_DRAWS = 3_000
"""Gradient draws per case of a biased estimator (its bias is many SE at far fewer draws)."""
TRAIN_STEPS = 20
TRAIN_BATCH = 16
N_CLASSES = 2
"""Labels are digit parity: bayes-mlp's oracle integrates one hidden unit and two logits."""
SETTLE_PASSES = 200
"""Forward passes that settle a loss-tracking estimator (a baseline) before the kept draws."""

ORACLE_MODELS = [name for name, cls in MODELS.items() if cls.oracle_options]
EXTRA_VARIANTS = {"lr-baseline": ["lr-baseline[baseline=learned]"]}
"""Variants worth a case of their own wherever their estimator applies."""


def _labels(model: str) -> list[str]:
    labels = []
    for name in applicable(model):
        labels += [name, *EXTRA_VARIANTS.get(name, [])]
    return labels


CASES = [(model, label) for model in ORACLE_MODELS for label in _labels(model)]


@functools.cache
def _digits():
    return load_dataset(DataConfig(dataset="digits"), CPU)


@functools.cache
def setup(model_name: str, batch: int = BATCH):
    """(model, x, y): the model after a few Adam steps on its exact loss, and a fixed minibatch."""
    dataset = _digits()
    torch.manual_seed(0)
    shape = DataShape(dataset.input_dim, N_CLASSES, len(dataset.train))
    model = make_model(model_name, shape, MODELS[model_name].oracle_options).double()
    generator = torch.Generator().manual_seed(1)
    x_train, y_train = dataset.sample_batch("train", TRAIN_BATCH, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad()
        model.expected_loss(x_train.double(), y_train % N_CLASSES).mean().backward()
        optimizer.step()
    x, y = dataset.sample_batch("train", batch, generator)
    return model, x.double(), y % N_CLASSES


def exact_gradient(model, x: Tensor, y: Tensor, **options) -> dict[str, Tensor]:
    """∇ of the minibatch mean of ``expected_loss``: name → tensor (zeros where unused)."""
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(
        model.expected_loss(x, y, **options).mean(), list(params.values()), allow_unused=True
    )
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}


def estimator_draws(
    model, label: str, x: Tensor, y: Tensor, draws: int, seed: int = 7, settle: int = SETTLE_PASSES
):
    """``draws`` gradients of the minibatch mean surrogate, fresh noise each: name → [draws, ...]."""
    torch.manual_seed(seed)
    estimator = make_estimator(label)
    estimator.bind(x.shape[-1])
    estimator.double()
    if estimator.tracks_losses:
        with torch.no_grad():
            for _ in range(settle):
                estimator.observe(model(x, y, estimator))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def surrogate(p: dict[str, Tensor]) -> Tensor:
        return estimator.surrogate(functional_call(model, p, (x, y, estimator))).mean()

    return gradient_draws(surrogate, params, draws)


def z_table(draws: dict[str, Tensor], exact: dict[str, Tensor]) -> dict[str, Tensor]:
    """(mean − exact) / SE per coordinate, the SE floored at rounding level."""
    scores = {}
    for name, value in exact.items():
        floor = ROUNDING * (value.abs() + draws[name].abs().mean(0) + 1e-30)
        se = (standard_error(draws[name]).square() + floor.square()).sqrt()
        scores[name] = ((draws[name].mean(0) - value) / se).flatten()
    return scores


def worst(scores: dict[str, Tensor]) -> tuple[float, str, float]:
    """(Bonferroni z over all coordinates, the parameter with the largest |z|, that |z|)."""
    z = z_for(sum(s.numel() for s in scores.values()))
    name = max(scores, key=lambda k: float(scores[k].abs().max()))
    return z, name, float(scores[name].abs().max())


@functools.cache
def case_scores(model_name: str, label: str) -> dict[str, Tensor]:
    model, x, y = setup(model_name)
    draws = DRAWS if estimator_class(label).unbiased else BIASED_DRAWS
    return z_table(estimator_draws(model, label, x, y, draws), exact_gradient(model, x, y))


def _case_id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_estimator_against_the_exact_gradient(case: tuple[str, str]) -> None:
    model_name, label = case
    scores = case_scores(model_name, label)
    z, name, largest = worst(scores)
    if estimator_class(label).unbiased:
        assert largest < z, f"{label} on {model_name}: d/d{name} off by |z| = {largest:.1f} > {z:.2f}"
    else:
        assert largest > z, f"{label} on {model_name}: no significant bias (max |z| = {largest:.1f})"


def test_score_term_has_its_full_weight() -> None:
    """Power for the score term: a learned per-example baseline settled on a fixed minibatch of
    32 leaves so little variance that scaling the LR term by 0.95 is > 8 SE on the categorical
    VAE's encoder (checked by breaking lr.py on purpose), while the unbroken estimator passes."""
    model, x, y = setup("categorical-vae", 32)
    label = "lr-baseline[baseline=learned]"
    draws = estimator_draws(model, label, x, y, 6_000, settle=1_000)
    z, name, largest = worst(z_table(draws, exact_gradient(model, x, y)))
    assert largest < z, f"{label} on categorical-vae (M=32): d/d{name} off by |z| = {largest:.1f}"


def test_every_estimator_gets_a_case_on_a_model_or_a_toy() -> None:
    on_models = {estimator_class(label).name for _, label in CASES}
    on_toys = {
        name
        for name in ESTIMATORS
        for cls in PROBLEMS.values()
        if make_estimator(name).applies_to(cls.node_kinds, cls.has_inverse)
    }
    assert on_models | on_toys == set(ESTIMATORS), set(ESTIMATORS) - on_models - on_toys
    assert {"categorical-vae", "gaussian-vae"} <= set(ORACLE_MODELS)


def test_the_cases_cover_every_parameter_and_the_gradients_are_not_trivial() -> None:
    """The exact gradient is non-zero in every parameter tensor, the encoder's KL part included."""
    for model_name in ORACLE_MODELS:
        model, x, y = setup(model_name)
        exact = exact_gradient(model, x, y)
        assert set(exact) == {k for k, _ in model.named_parameters()}
        for name, value in exact.items():
            assert float(value.abs().max()) > 1e-6, (model_name, name)


# ---------------------------------------------------------------------------- the oracles


def test_categorical_enumeration_matches_monte_carlo_and_bounds_the_likelihood() -> None:
    model, x, y = setup("categorical-vae")
    with torch.no_grad():
        exact = model.expected_loss(x, y)
        logits = model.encode(x)
        probs = logits.softmax(-1)
        torch.manual_seed(3)
        draws = 50_000
        codes = torch.distributions.Categorical(probs=probs).sample((draws,))  # [R, B, V]
        latents = torch.nn.functional.one_hot(codes, model.n_classes).double()
        decoder_logits = model.decode(latents)
        data_loss = torch.nn.functional.binary_cross_entropy_with_logits(
            decoder_logits, x.expand_as(decoder_logits), reduction="none"
        ).sum(-1)
        sampled = data_loss + model.kl_to_uniform(logits)
        z = (sampled.mean(0) - exact) / standard_error(sampled)
        assert float(z.abs().max()) < z_for(BATCH), z
        # −E_q[loss] is the ELBO, a lower bound of log p(x), exactly enumerated too.
        assert torch.all(-exact <= model.exact_log_likelihood(x) + 1e-12)


def test_categorical_enumeration_by_hand_for_one_variable() -> None:
    """n_vars = 1: E = Σ_k π_k (−log p(x|e_k)) + Σ_k π_k log(K π_k)."""
    torch.manual_seed(5)
    model = make_model(
        "categorical-vae", DataShape(5, 2, 10), {"hidden_sizes": (3,), "n_vars": 1, "n_classes": 4}
    ).double()
    x = (torch.rand(3, 5, dtype=torch.float64) > 0.5).double()
    pi = model.encode(x).softmax(-1)[:, 0]  # [B, K]
    loss = torch.zeros(3, dtype=torch.float64)
    for k in range(4):
        latent = torch.nn.functional.one_hot(torch.tensor([[k]]), 4).double().expand(3, 1, 4)
        logits = model.decode(latent)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        loss += pi[:, k] * (nll.sum(-1) + torch.log(4 * pi[:, k]))
    torch.testing.assert_close(model.expected_loss(x, None), loss)


def test_gaussian_quadrature_converges_and_matches_monte_carlo() -> None:
    model, x, y = setup("gaussian-vae")
    base = model.expected_loss(x, y)
    doubled = model.expected_loss(x, y, nodes=2 * 40)
    torch.testing.assert_close(base, doubled, rtol=1e-10, atol=1e-10)
    grads = [exact_gradient(model, x, y, nodes=nodes) for nodes in (40, 80)]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-8, atol=1e-10)
    with torch.no_grad():
        mean, log_var = model.encode(x)
        torch.manual_seed(4)
        z = mean + (0.5 * log_var).exp() * torch.randn(100_000, *mean.shape, dtype=torch.float64)
        logits = model.decode(z)
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)
        from gradbench.models.gaussian_vae import gaussian_kl

        sampled = nll + gaussian_kl(mean, log_var)
    score = (sampled.mean(0) - base.detach()) / standard_error(sampled)
    assert float(score.abs().max()) < z_for(BATCH), score


def test_gaussian_quadrature_with_chunks_equals_one_pass(monkeypatch) -> None:
    """A grid decoded in checkpointed chunks gives the same value and gradient."""
    from gradbench.models import gaussian_vae

    model, x, y = setup("gaussian-vae")
    whole = exact_gradient(model, x, y)
    value = model.expected_loss(x, y)
    monkeypatch.setattr(gaussian_vae, "_QUADRATURE_ELEMENTS", 7 * x.numel())
    torch.testing.assert_close(model.expected_loss(x, y), value)
    chunked = exact_gradient(model, x, y)
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name])


def test_gaussian_quadrature_is_exact_for_a_linear_decoder_mean_of_a_quadratic() -> None:
    """The rule integrates polynomials: E[t_1² t_2²] = 1, E[t_1⁴] = 3 under N(0, I)."""
    from gradbench.models.gaussian_vae import hermite_grid

    points, weights = hermite_grid(2, 5, torch.float64, CPU)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-14)
    assert float((weights * points[:, 0] ** 2 * points[:, 1] ** 2).sum()) == pytest.approx(1.0)
    assert float((weights * points[:, 0] ** 4).sum()) == pytest.approx(3.0)


def test_oracles_refuse_configurations_too_large() -> None:
    shape = DataShape(8, 2, 10)
    with pytest.raises(ValueError, match="configurations"):
        make_model("categorical-vae", shape, {"hidden_sizes": (4,), "n_vars": 30}).expected_loss(
            torch.zeros(2, 8), None
        )
    with pytest.raises(ValueError, match="latent_dim"):
        make_model("gaussian-vae", shape, {"hidden_sizes": (4,), "latent_dim": 4}).expected_loss(
            torch.zeros(2, 8), None
        )
