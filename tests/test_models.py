"""Tests of the shared models: the forward contract, sizes, options, KL terms, bounds, evaluation.

Models are driven by ``_Exact``, a minimal estimator written here (exact samples, pathwise where
the node allows), so these tests do not depend on the real estimator modules.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import gradbench
from gradbench.estimators.nodes import CategoricalNode, GaussianNode, WeightNoiseNode
from gradbench.models import bayes_mlp, categorical_vae, gaussian_vae
from gradbench.models.bayes_mlp import weight_noise_statistics
from gradbench.models.base import (
    MODELS,
    TASKS,
    DataShape,
    StochasticModel,
    bernoulli_log_likelihood,
    make_model,
    register_model,
)
from gradbench.models.toy import PROBLEMS
from gradbench.profiles import PROFILES

SHAPE = DataShape(input_dim=12, n_classes=4, n_train=500)
SMALL_OPTIONS = {
    name: dict(MODELS[name].profile_options["smoke"])
    for name in ("gaussian-vae", "categorical-vae", "bayes-mlp")
}
"""The models' own smoke-profile sizes (their ``profile_options``)."""
Z_SCORE = 4.0


class _Exact:
    """Minimal estimator: reparameterized Gaussians, Gumbel-max categoricals, local weight noise."""

    def sample(self, node: object) -> Tensor:
        if isinstance(node, GaussianNode):
            return node.reparameterize(node.noise())
        if isinstance(node, CategoricalNode):
            return node.sample()
        if isinstance(node, WeightNoiseNode):
            variance = node.inputs.square() @ node.weight_variance()
            mean = node.mean_preactivation()
            return mean + variance.sqrt() * torch.randn_like(mean)
        raise TypeError(f"unsupported node {node!r}")


def _small(name: str, seed: int = 0) -> StochasticModel:
    torch.manual_seed(seed)
    return make_model(name, SHAPE, SMALL_OPTIONS[name])


def _batch(
    shape: DataShape, batch: int, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    x = torch.bernoulli(torch.full((batch, shape.input_dim), 0.5, dtype=dtype))
    y = torch.randint(shape.n_classes, (batch,))
    return x, y


def _assert_close_in_se(estimate: Tensor, exact: Tensor, se: Tensor) -> None:
    """|estimate − exact| < Z_SCORE · se elementwise (a randomized test at a ~1e-4 failure rate)."""
    z = ((estimate - exact).abs() / se).max().item()
    assert z < Z_SCORE, f"estimate off by {z:.2f} standard errors"


def test_models_registered_with_declared_capabilities() -> None:
    assert MODELS["gaussian-vae"] is gaussian_vae.GaussianVAE
    assert MODELS["categorical-vae"] is categorical_vae.CategoricalVAE
    assert MODELS["bayes-mlp"] is bayes_mlp.BayesMLP
    assert gaussian_vae.GaussianVAE.node_kinds == frozenset({"gaussian"})
    assert categorical_vae.CategoricalVAE.node_kinds == frozenset({"categorical"})
    assert bayes_mlp.BayesMLP.node_kinds == frozenset({"weight-noise"})
    assert categorical_vae.CategoricalVAE.has_inverse
    assert not gaussian_vae.GaussianVAE.has_inverse and not bayes_mlp.BayesMLP.has_inverse
    assert gaussian_vae.GaussianVAE.reference_estimator == "reparam"
    assert categorical_vae.CategoricalVAE.reference_estimator == "gumbel-softmax"
    assert bayes_mlp.BayesMLP.reference_estimator == "local-reparam"


@pytest.mark.parametrize("name", list(SMALL_OPTIONS))
def test_forward_shapes_and_finite_losses(name: str) -> None:
    model = _small(name)
    x, y = _batch(SHAPE, 5)
    forward = model(x, y, _Exact())
    assert forward.data_loss.shape == (5,) and forward.regularizer.shape == (5,)
    assert torch.isfinite(forward.loss).all()
    assert len(forward.nodes) == len(forward.samples) >= 1
    if name == "bayes-mlp":
        assert forward.reconstruction is None
        assert [s.shape for s in forward.samples] == [(5, 32), (5, 32), (5, SHAPE.n_classes)]
        assert (forward.data_loss > 0).all()
    else:
        assert forward.reconstruction.shape == x.shape
        assert ((forward.reconstruction > 0) & (forward.reconstruction < 1)).all()
        assert (forward.regularizer >= 0).all() and (forward.data_loss > 0).all()
        assert forward.context() is x


@pytest.mark.parametrize("name", list(SMALL_OPTIONS))
def test_gradients_reach_every_parameter(name: str) -> None:
    model = _small(name)
    x, y = _batch(SHAPE, 8)
    model(x, y, _Exact()).loss.mean().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", list(SMALL_OPTIONS))
def test_same_seed_gives_identical_initial_parameters(name: str) -> None:
    first, second, other = _small(name, seed=3), _small(name, seed=3), _small(name, seed=4)
    for (n1, p1), (n2, p2), (_, p3) in zip(
        first.named_parameters(), second.named_parameters(), other.named_parameters()
    ):
        assert n1 == n2 and torch.equal(p1, p2)
    assert not all(torch.equal(p1, p3) for p1, p3 in zip(first.parameters(), other.parameters()))


@pytest.mark.parametrize("name", list(SMALL_OPTIONS))
def test_parameter_groups_name_real_parameters(name: str) -> None:
    model = _small(name)
    names = [n for n, _ in model.named_parameters()]
    groups = model.parameter_groups()
    for group, members in groups.items():
        assert members and set(members) <= set(names), group
    assert groups["all"] == names
    for param_name in names:
        assert groups[param_name] == [param_name]
    if name == "bayes-mlp":
        assert groups["bottom"] == ["layers.0.weight_mean"]
        assert groups["top"] == ["layers.2.weight_mean"]
    else:
        assert groups["bottom"] == ["encoder.0.weight"]
        assert groups["top"] == [f"decoder.{len(model.decoder) - 1}.weight"]
        assert sorted(groups["encoder"] + groups["decoder"]) == sorted(names)


def test_sizes_come_from_data_shape_and_options() -> None:
    shape = DataShape(input_dim=64, n_classes=7, n_train=100)
    vae = make_model("gaussian-vae", shape, {"hidden_sizes": "32,16", "latent_dim": "5"})
    sizes = {n: tuple(p.shape) for n, p in vae.named_parameters() if n.endswith("weight")}
    assert sizes == {
        "encoder.0.weight": (32, 64), "encoder.1.weight": (16, 32), "encoder.2.weight": (10, 16),
        "decoder.0.weight": (16, 5), "decoder.1.weight": (32, 16), "decoder.2.weight": (64, 32),
    }
    cat_options = {"hidden_sizes": "20", "n_vars": "4", "n_classes": "3"}
    cat = make_model("categorical-vae", shape, cat_options)
    assert cat.encoder[0].weight.shape == (20, 64) and cat.encoder[1].weight.shape == (12, 20)
    assert cat.decoder[0].weight.shape == (20, 12) and cat.decoder[1].weight.shape == (64, 20)
    mlp = make_model("bayes-mlp", shape, {"hidden_sizes": (30,)})
    assert [tuple(layer.weight_mean.shape) for layer in mlp.layers] == [(64, 30), (30, 7)]
    assert [tuple(layer.alpha_logit.shape) for layer in mlp.layers] == [(64, 30), (30, 7)]
    default = make_model("gaussian-vae", DataShape(784, 10, 50_000))
    assert default.encoder[0].weight.shape == (500, 784) and default.latent_dim == 20


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("gaussian-vae", {"depth": "2"}, "valid: hidden_sizes, latent_dim, init_std"),
        ("categorical-vae", {"temperature": "1"}, "valid: hidden_sizes, n_vars, n_classes"),
        ("bayes-mlp", {"dropout": "0.5"}, "valid: hidden_sizes, input_dropout, hidden_dropout"),
        ("gaussian-vae", {"hidden_sizes": "0"}, "hidden_sizes"),
        ("gaussian-vae", {"latent_dim": "0"}, "latent_dim"),
        ("gaussian-vae", {"init_std": "-1"}, "init_std"),
        ("categorical-vae", {"n_classes": "1"}, "n_classes"),
        ("categorical-vae", {"n_vars": "0"}, "n_vars"),
        ("bayes-mlp", {"hidden_sizes": ""}, "hidden_sizes"),
        ("bayes-mlp", {"input_dropout": "1.0"}, "input_dropout"),
        ("bayes-mlp", {"hidden_dropout": "0"}, "hidden_dropout"),
        ("bayes-mlp", {"latent_dim": "3"}, "valid:"),
        ("bayes-mlp", {"hidden_sizes": "a,b"}, "hidden_sizes"),
        ("bayes-mlp", {"max_alpha": "1.5"}, r"max_alpha must lie in \(0, 1\]"),
        ("bayes-mlp", {"max_alpha": "0"}, "max_alpha"),
        ("bayes-mlp", {"max_alpha": "nan"}, "max_alpha"),
    ],
)
def test_bad_options_raise_value_error(name: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_model(name, SHAPE, options)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid: .*gaussian-vae"):
        make_model("gaussian-vea", SHAPE)


def test_bayes_mlp_init_is_he_normal() -> None:
    torch.manual_seed(0)
    model = make_model("bayes-mlp", DataShape(784, 10, 100), {"hidden_sizes": "512"})
    weight = model.layers[0].weight_mean.detach().double()
    assert abs(weight.std().item() / math.sqrt(2.0 / 784) - 1.0) < 0.01
    assert all((layer.bias == 0).all() for layer in model.layers)


def test_gaussian_vae_init_is_normal_with_init_std() -> None:
    torch.manual_seed(0)
    model = make_model("gaussian-vae", DataShape(784, 10, 100))
    weight = model.encoder[0].weight.detach().double()
    assert abs(weight.std().item() - 0.01) < 1e-4 and abs(weight.mean().item()) < 1e-4
    assert all((layer.bias == 0).all() for layer in [*model.encoder, *model.decoder])


def test_gaussian_kl_matches_monte_carlo() -> None:
    torch.manual_seed(0)
    options = {**SMALL_OPTIONS["gaussian-vae"], "init_std": 0.3}  # a KL well away from 0
    model = make_model("gaussian-vae", SHAPE, options).double()
    x, y = _batch(SHAPE, 4, torch.float64)
    forward = model(x, y, _Exact())
    node = forward.nodes[0]
    draws = 20_000
    z = node.reparameterize(torch.randn(draws, *node.mean.shape, dtype=torch.float64))
    log_prior = -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)
    kl_draws = (node.log_prob(z) - log_prior).detach()  # [draws, B]
    se = kl_draws.std(0) / math.sqrt(draws)
    assert (forward.regularizer > 0.05).all()
    _assert_close_in_se(kl_draws.mean(0), forward.regularizer.detach(), se)


def test_categorical_vae_is_softplus_mlp_on_flattened_one_hots() -> None:
    model = _small("categorical-vae")
    V, K = model.n_vars, model.n_classes
    x, y = _batch(SHAPE, 5)
    (enc0, enc1), (dec0, dec1) = model.encoder, model.decoder
    logits = enc1(F.softplus(enc0(x))).view(5, V, K)
    forward = model(x, y, _Exact())
    node, latent = forward.nodes[0], forward.samples[0]
    assert torch.allclose(node.logits, logits) and node.event_dims == 1
    assert latent.shape == (5, V, K) and torch.equal(latent.sum(-1), torch.ones(5, V))
    reconstruction = torch.sigmoid(dec1(F.softplus(dec0(latent.flatten(1)))))
    assert torch.allclose(forward.reconstruction, reconstruction)
    inverse_logits = enc1(F.softplus(enc0(reconstruction))).view(5, V, K)
    assert torch.allclose(node.inverse(reconstruction), inverse_logits)


def test_categorical_kl_matches_monte_carlo() -> None:
    model = _small("categorical-vae").double()
    with torch.no_grad():
        model.encoder[-1].weight.mul_(5.0)
    x, y = _batch(SHAPE, 4, torch.float64)
    forward = model(x, y, _Exact())
    node = forward.nodes[0]
    draws = 20_000
    latent = node.sample((draws,))
    log_prior = -model.n_vars * math.log(model.n_classes)
    kl_draws = (node.log_prob(latent) - log_prior).detach()  # [draws, B]
    se = kl_draws.std(0) / math.sqrt(draws)
    assert (forward.regularizer > 0.05).all()
    _assert_close_in_se(kl_draws.mean(0), forward.regularizer.detach(), se)


def _tiny_categorical() -> tuple[categorical_vae.CategoricalVAE, Tensor]:
    """input_dim 6, 2 variables × 3 classes; sharpened layers so that q(y|x) ≠ p(y|x) clearly."""
    torch.manual_seed(1)
    shape = DataShape(input_dim=6, n_classes=2, n_train=10)
    options = {"hidden_sizes": "8", "n_vars": "2", "n_classes": "3"}
    model = make_model("categorical-vae", shape, options)
    model = model.double()
    with torch.no_grad():
        model.encoder[-1].weight.mul_(4.0)
        model.decoder[-1].weight.mul_(4.0)
    every_x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6)), dtype=torch.float64)
    return model, every_x


def _enumerated_bounds(model: categorical_vae.CategoricalVAE, x: Tensor) -> tuple[Tensor, Tensor]:
    """ELBO = Σ_y q(y|x) log [p(x|y) p(y) / q(y|x)] and log p(x) = log Σ_y p(x|y) p(y), each [B],
    summed over the 9 latents of the tiny model."""
    with torch.no_grad():
        log_q = torch.log_softmax(model.encode(x), dim=-1)  # [B, 2, 3]
        elbo, log_joint = torch.zeros(x.shape[0], dtype=x.dtype), []
        for first, second in itertools.product(range(3), repeat=2):
            latent = torch.zeros(2, 3, dtype=x.dtype)
            latent[0, first] = latent[1, second] = 1.0
            logits = model.decode(latent).expand_as(x)
            log_px_y = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
            q = (log_q[:, 0, first] + log_q[:, 1, second]).exp()
            elbo += q * (log_px_y - torch.log(q * 9.0))
            log_joint.append(log_px_y - math.log(9.0))
        return elbo, torch.logsumexp(torch.stack(log_joint), dim=0)


def test_categorical_exact_likelihood_enumerates_every_latent() -> None:
    model, every_x = _tiny_categorical()
    log_px = model.exact_log_likelihood(every_x)
    assert torch.allclose(log_px, _enumerated_bounds(model, every_x)[1], rtol=0, atol=1e-12)
    assert abs(torch.logsumexp(log_px, dim=0).item()) < 1e-10


def test_categorical_exact_likelihood_refuses_large_latents() -> None:
    options = {"hidden_sizes": "4", "n_vars": "6", "n_classes": "10"}
    model = make_model("categorical-vae", SHAPE, options)
    with pytest.raises(ValueError, match="configurations"):
        model.exact_log_likelihood(torch.zeros(1, SHAPE.input_dim))


def test_categorical_bounds_order_elbo_iw_log_likelihood() -> None:
    model, every_x = _tiny_categorical()
    exact_elbo, log_px = _enumerated_bounds(model, every_x)
    assert (exact_elbo <= log_px + 1e-12).all()
    assert (log_px - exact_elbo).mean() > 0.5
    repeats = 400
    x = every_x.repeat(repeats, 1)  # [repeats * 64, 6]: independent estimates per input
    y = torch.zeros(x.shape[0], dtype=torch.long)
    torch.manual_seed(2)
    metrics = model.evaluate(x, y, samples=1, iw_samples=1)
    elbo, iw_one = (metrics[k].view(repeats, -1) for k in ("elbo", "iw_bound"))
    _assert_close_in_se(elbo.mean(0), exact_elbo, elbo.std(0) / math.sqrt(repeats))
    kl = model.kl_to_uniform(model.encode(every_x)).detach()
    assert torch.allclose(elbo, metrics["reconstruction_ll"].view(repeats, -1) - kl)
    # one importance sample: E[iw_bound] is the ELBO; pooled over inputs to detect small offsets
    pooled_se = iw_one.var(0).mean().sqrt() / math.sqrt(iw_one.numel())
    _assert_close_in_se(iw_one.mean(), exact_elbo.mean(), pooled_se)
    iw = model.evaluate(x, y, samples=1, iw_samples=20)["iw_bound"].view(repeats, -1)
    iw_se = iw.std(0) / math.sqrt(repeats)
    assert ((iw.mean(0) - exact_elbo) / iw_se).min() > -Z_SCORE
    assert ((iw.mean(0) - log_px) / iw_se).max() < Z_SCORE
    assert (iw.mean(0) - exact_elbo).mean() > 0.5 * (log_px - exact_elbo).mean()


def test_gaussian_bounds_order_elbo_iw_log_likelihood() -> None:
    """One latent dimension, so log p(x) = log ∫ p(x|z) N(z; 0, 1) dz by quadrature on a grid."""
    torch.manual_seed(0)
    options = {"hidden_sizes": "16", "latent_dim": "1", "init_std": "0.5"}
    model = make_model("gaussian-vae", SHAPE, options).double()
    x, y = _batch(SHAPE, 6, torch.float64)
    grid = torch.linspace(-10.0, 10.0, 20_001, dtype=torch.float64)[:, None]  # [G, 1]
    with torch.no_grad():
        log_px_z = bernoulli_log_likelihood(model.decode(grid)[:, None, :], x)
        log_joint = log_px_z - 0.5 * (grid.square() + math.log(2 * math.pi))  # [G, B]
        log_px = torch.logsumexp(log_joint, dim=0) + math.log(20.0 / 20_000)
    repeats = 2000
    x_rep, y_rep = x.repeat(repeats, 1), y.repeat(repeats)
    torch.manual_seed(5)
    forward_elbo = -model(x_rep, y_rep, _Exact()).loss.detach().view(repeats, -1)
    metrics = model.evaluate(x_rep, y_rep, samples=1, iw_samples=1)
    assert set(metrics) == {"elbo", "reconstruction_ll", "iw_bound"}
    assert all(v.shape == (x_rep.shape[0],) for v in metrics.values())
    elbo, iw_one = (metrics[k].view(repeats, -1) for k in ("elbo", "iw_bound"))
    se = (forward_elbo.var(0) / repeats + elbo.var(0) / repeats).sqrt()
    _assert_close_in_se(elbo.mean(0), forward_elbo.mean(0), se)
    se_iw = (iw_one.var(0) / repeats + elbo.var(0) / repeats).sqrt()
    _assert_close_in_se(iw_one.mean(0), elbo.mean(0), se_iw)
    assert (log_px - elbo.mean(0)).mean() > 1.0
    iw = model.evaluate(x_rep[: 200 * 6], y, samples=1, iw_samples=50)["iw_bound"].view(200, -1)
    iw_se = iw.std(0) / math.sqrt(200)
    assert ((iw.mean(0) - log_px) / iw_se).max() < Z_SCORE
    assert (iw.mean(0) - elbo.mean(0)).mean() > 0.5 * (log_px - elbo.mean(0)).mean()


def test_bayes_mlp_initial_alpha_and_weight_variance() -> None:
    model = make_model("bayes-mlp", SHAPE, {"hidden_sizes": "16,8"})
    alphas = [layer.log_alpha.detach().exp() for layer in model.layers]
    # the first layer at the paper's p = 0.2; the hidden layers' α = 1 lies on the cap (the
    # limit ρ → ∞), so they start at 0.9 of it
    assert torch.allclose(alphas[0], torch.full_like(alphas[0], 0.25))
    assert all(torch.allclose(a, torch.full_like(a, 0.9)) for a in alphas[1:])
    with torch.no_grad():
        model.layers[1].alpha_logit.fill_(1.5)
    x, y = _batch(SHAPE, 3)
    nodes = model(x, y, _Exact()).nodes
    for node, layer, alpha in zip(nodes, model.layers, [0.25, 1 / (1 + math.exp(-1.5)), 0.9]):
        assert node.weight_mean is layer.weight_mean and node.bias is layer.bias
        expected = alpha * layer.weight_mean.square()
        assert torch.allclose(node.weight_variance(), expected)
    assert torch.equal(nodes[0].inputs, x)


def test_bayes_mlp_alpha_cap_is_smooth_with_gradient_below_it() -> None:
    """α = max_alpha · sigmoid(ρ): below the cap for every ρ, ∂ log α / ∂ρ = 1 − α / max_alpha."""
    model = make_model("bayes-mlp", SHAPE, {"hidden_sizes": "4", "max_alpha": "0.5"}).double()
    layer = model.layers[1]
    with torch.no_grad():
        layer.alpha_logit.copy_(torch.linspace(-30.0, 30.0, layer.alpha_logit.numel()).view(4, 4))
    alpha = layer.log_alpha.exp()
    assert (alpha < 0.5).all() and (alpha > 0).all()
    assert torch.allclose(alpha, 0.5 * torch.sigmoid(layer.alpha_logit))
    (grad,) = torch.autograd.grad(layer.log_alpha.sum(), layer.alpha_logit)
    assert torch.allclose(grad, 1 - alpha.detach() / 0.5) and (grad > 0).all()
    # the KL's gradient (the only one a weight on an always-zero input gets) never vanishes
    (kl_grad,) = torch.autograd.grad(layer.kl(), layer.alpha_logit)
    assert (kl_grad < 0).all()


def _reference_statistics(weight_mean, alpha_logit, max_alpha):
    """σ² and the KL written as plain autograd operations: what the fused function replaces."""
    c1, c2, c3 = 1.16145124, -1.50204118, 0.58629921
    log_alpha = math.log(max_alpha) + F.logsigmoid(alpha_logit)
    alpha = log_alpha.exp()
    negative = 0.5 * log_alpha + c1 * alpha + c2 * alpha**2 + c3 * alpha**3 - (c1 + c2 + c3)
    return alpha * weight_mean.square(), -negative.sum()


@pytest.mark.parametrize("max_alpha", [1.0, 0.5])
def test_fused_weight_statistics_match_plain_autograd(max_alpha: float) -> None:
    """The fused σ² and KL (one function, backward written out) give the values and gradients
    of the plain formulas up to round-off, for each output alone and both, and under vmap."""
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    logit = (3 * torch.randn(6, 5, generator=generator, dtype=torch.float64)).requires_grad_()
    fused = weight_noise_statistics(mean, logit, max_alpha)
    plain = _reference_statistics(mean, logit, max_alpha)
    for a, b in zip(fused, plain):
        assert torch.allclose(a, b, rtol=1e-12, atol=0)
    upstream = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    for weights in ((upstream, 0.0), (0 * upstream, 1.7), (upstream, -0.3)):

        def loss(statistics, weights=weights):
            return (statistics[0] * weights[0]).sum() + weights[1] * statistics[1]

        got = torch.autograd.grad(loss(weight_noise_statistics(mean, logit, max_alpha)),
                                  (mean, logit))
        want = torch.autograd.grad(loss(_reference_statistics(mean, logit, max_alpha)),
                                   (mean, logit))
        for g, w in zip(got, want):
            assert torch.allclose(g, w, rtol=1e-10, atol=1e-14)
    # Under vmap over a batch of parameters, gradients by torch.func.grad.
    means = mean.detach() * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)[:, None, None]
    logits = logit.detach().expand(3, 6, 5).clone()

    def scalar(statistics_of, m, r):
        variance, kl = statistics_of(m, r, max_alpha)
        return (variance * upstream).sum() + 0.7 * kl

    got = torch.func.vmap(torch.func.grad(partial(scalar, weight_noise_statistics), (0, 1)))(
        means, logits
    )
    want = torch.func.vmap(torch.func.grad(partial(scalar, _reference_statistics), (0, 1)))(
        means, logits
    )
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-14)


def test_bayes_mlp_regularizer_is_kl_over_n_train() -> None:
    model = make_model("bayes-mlp", SHAPE, {"hidden_sizes": "16,8"}).double()
    x, y = _batch(SHAPE, 3, torch.float64)
    c1, c2, c3 = 1.16145124, -1.50204118, 0.58629921

    def per_weight(alpha: float) -> float:
        polynomial = c1 * alpha + c2 * alpha**2 + c3 * alpha**3
        return -(0.5 * math.log(alpha) + polynomial - (c1 + c2 + c3))

    assert per_weight(1.0) == 0.0
    # ρ was initialised in float32, hence rel=1e-6
    assert model.layers[1].kl().item() == pytest.approx(16 * 8 * per_weight(0.9), rel=1e-6)
    expected = (
        per_weight(0.25) * SHAPE.input_dim * 16 + per_weight(0.9) * (16 * 8 + 8 * SHAPE.n_classes)
    ) / SHAPE.n_train
    regularizer = model(x, y, _Exact()).regularizer
    assert torch.allclose(regularizer, torch.full((3,), expected, dtype=torch.float64))
    assert per_weight(0.25) > per_weight(0.9) > 0


def test_bayes_mlp_evaluate_matches_forward_and_mean_network() -> None:
    model = _small("bayes-mlp").double()
    x, y = _batch(SHAPE, 5, torch.float64)
    torch.manual_seed(6)
    metrics = model.evaluate(x, y, samples=4000, iw_samples=1)
    assert set(metrics) == {"elbo", "error", "nll"}
    assert all(v.shape == (5,) for v in metrics.values())
    repeats = 4000
    forward_elbo = -model(x.repeat(repeats, 1), y.repeat(repeats), _Exact()).loss.detach()
    forward_elbo = forward_elbo.view(repeats, -1)
    se = forward_elbo.std(0) * math.sqrt(2.0 / repeats)
    _assert_close_in_se(metrics["elbo"], forward_elbo.mean(0), se)
    h = x
    for index, layer in enumerate(model.layers):
        h = h @ layer.weight_mean + layer.bias
        h = torch.relu(h) if index < len(model.layers) - 1 else h
    nll = F.cross_entropy(h, y, reduction="none").detach()
    assert torch.allclose(metrics["nll"], nll)
    assert torch.equal(metrics["error"], (h.argmax(-1) != y).double())


def test_bayes_mlp_alpha_gradients_survive_300_steps_of_training() -> None:
    """The smooth cap keeps every α trainable: a hard clamp of log α at the cap, with the hidden
    layers starting on it, left most of their α gradients exactly 0 after a few hundred steps."""
    from gradbench.data import DataConfig, load_dataset
    from gradbench.experiment import Setting, build_estimator, build_model
    from gradbench.measure.training import make_optimizer, train_step

    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        digits = load_dataset(DataConfig(dataset="digits"), cpu)
        setting = Setting("bayes-mlp", {"hidden_sizes": "32,32"}, seed=0)
        torch.manual_seed(0)
        model = build_model(setting, digits, cpu)
        estimator = build_estimator(setting, "local-reparam", digits, cpu)
        optimizer = make_optimizer(model, 1e-3)
        generator = torch.Generator().manual_seed(0)
        batches = itertools.chain.from_iterable(
            digits.batches("train", 100, generator) for _ in itertools.count()
        )
        for x, y in itertools.islice(batches, 300):
            train_step(model, estimator, optimizer, x, y)
    finally:
        torch.set_num_threads(threads)
    for index, layer in enumerate(model.layers):
        zero = (layer.alpha_logit.grad == 0).double().mean().item()
        assert zero < 0.01, f"layer {index}: {zero:.1%} of the α gradients are exactly 0"


# --- bayes-mlp's exact oracle ---------------------------------------------------------------------

ORACLE_SHAPE = DataShape(input_dim=3, n_classes=2, n_train=50)


def _oracle_mlp(seed: int = 0) -> tuple[StochasticModel, Tensor, Tensor]:
    """The oracle configuration in float64 at generic parameters, and a batch of 4."""
    torch.manual_seed(seed)
    model = make_model("bayes-mlp", ORACLE_SHAPE, bayes_mlp.BayesMLP.oracle_options).double()
    with torch.no_grad():
        for layer in model.layers:
            layer.alpha_logit.normal_(0.0, 1.0)
            layer.bias.normal_(0.0, 0.5)
    x = torch.randn(4, ORACLE_SHAPE.input_dim, dtype=torch.float64)
    x[0, 1] = 0.0  # a zero input: its weight's α is moved by the KL only
    return model, x, torch.tensor([0, 1, 1, 0])


class _Local:
    def sample(self, node: WeightNoiseNode) -> Tensor:
        return node.local_sample()


def _monte_carlo(model: StochasticModel, x: Tensor, y: Tensor, groups: int, size: int):
    """Per-example loss and loss-sum gradient: means over groups × size draws and their SEs."""
    params = list(model.parameters())
    values, grads = [], []
    for _ in range(groups):
        loss = model(x.repeat(size, 1), y.repeat(size), _Local()).loss.view(size, -1)
        grad = torch.autograd.grad(loss.mean(0).sum(), params)
        values.append(loss.mean(0).detach())
        grads.append(torch.cat([g.flatten() for g in grad]))
    values_t, grads_t = torch.stack(values), torch.stack(grads)
    se = lambda t: t.std(0) / math.sqrt(groups)  # noqa: E731
    return values_t.mean(0), se(values_t), grads_t.mean(0), se(grads_t)


def _oracle_gradient(model: StochasticModel, x: Tensor, y: Tensor, *nodes: int) -> Tensor:
    loss = model.expected_loss(x, y, *nodes, max_points=2**20)
    grad = torch.autograd.grad(loss.sum(), list(model.parameters()))
    return torch.cat([g.flatten() for g in grad])


def test_bayes_mlp_oracle_matches_monte_carlo_in_value_and_gradient() -> None:
    model, x, y = _oracle_mlp()
    exact = model.expected_loss(x, y)
    assert exact.shape == (4,) and exact.dtype == torch.float64
    torch.manual_seed(1)
    value, value_se, grad, grad_se = _monte_carlo(model, x, y, groups=40, size=2000)
    _assert_close_in_se(exact.detach(), value, value_se)
    exact_grad = _oracle_gradient(model, x, y)
    assert (exact_grad != 0).all()  # every parameter (θ, ρ, biases of both layers) moves it
    _assert_close_in_se(exact_grad, grad, grad_se)


def test_bayes_mlp_oracle_quadrature_has_converged() -> None:
    """Doubling every node count moves the oracle's gradient by far less than a test's SE."""
    model, x, y = _oracle_mlp(seed=2)
    with torch.no_grad():
        model.layers[1].weight_mean.mul_(3.0)  # wider logit noise: the harder inner integral
    default = _oracle_gradient(model, x, y)
    doubled = _oracle_gradient(
        model, x, y, 2 * bayes_mlp.ORACLE_OUTER_NODES, 2 * bayes_mlp.ORACLE_INNER_NODES
    )
    change = (default - doubled).abs().max().item()
    # the Monte Carlo SEs above are ~1e-3; 1e-5 of the gradient's scale is negligible beside them
    assert change < 1e-5 * default.abs().max().item(), change
    halved = _oracle_gradient(model, x, y, bayes_mlp.ORACLE_OUTER_NODES // 4, 4)
    assert (halved - doubled).abs().max().item() > change  # the check can see an error


def test_bayes_mlp_oracle_refuses_configurations_it_cannot_compute_exactly() -> None:
    x = torch.randn(2, 3)
    y = torch.tensor([0, 1])
    wide = make_model("bayes-mlp", ORACLE_SHAPE, {"hidden_sizes": (2,)})
    deep = make_model("bayes-mlp", ORACLE_SHAPE, {"hidden_sizes": (1, 1)})
    for model in (wide, deep):
        with pytest.raises(ValueError, match=r"hidden_sizes=\(1,\)"):
            model.expected_loss(x, y)
    many = make_model("bayes-mlp", DataShape(3, 4, 50), bayes_mlp.BayesMLP.oracle_options)
    with pytest.raises(ValueError, match="quadrature points"):
        many.expected_loss(x, y)


def test_bayes_mlp_gradient_variance_orders_like_kingma_table_1() -> None:
    """Per-parameter variance of minibatch gradients, mean over the top / bottom layer's θ, at
    the initialisation (strong noise): no noise < local reparam. < separate samples < shared.

    Each variance is estimated from 300 draws, so its relative SE is about √(2/299) ≈ 8%
    (less: it is a mean over many parameters); the gaps asserted are 25%.
    """
    from gradbench.data import DataConfig, load_dataset
    from gradbench.experiment import Setting, build_estimator, build_model
    from gradbench.measure.variance import gradient_samples

    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        digits = load_dataset(DataConfig(dataset="digits"), cpu)
        setting = Setting("bayes-mlp", {"hidden_sizes": "32,32", "input_dropout": "0.5"}, seed=0)
        order = ["no-noise", "local-reparam", "reparam-per-example", "reparam"]
        variances: dict[str, dict[str, float]] = {}
        for name in order:
            torch.manual_seed(0)
            model = build_model(setting, digits, cpu)
            estimator = build_estimator(setting, name, digits, cpu)
            generator = torch.Generator().manual_seed(1)
            draws = gradient_samples(model, estimator, digits, 32, 300, generator)
            groups = model.parameter_groups()
            variances[name] = {
                group: draws[groups[group][0]].var(0).mean().item() for group in ("bottom", "top")
            }
    finally:
        torch.set_num_threads(threads)
    for group in ("bottom", "top"):
        figures = [variances[name][group] for name in order]
        assert all(1.25 * a < b for a, b in zip(figures, figures[1:])), (group, figures)


def test_bayes_mlp_deterministic_network_has_its_layer_sizes_and_loss() -> None:
    model = make_model("bayes-mlp", SHAPE, {"hidden_sizes": "16,8"})
    reference = model.deterministic_network()
    linear = [m for m in reference.network if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        tuple(layer.weight_mean.shape) for layer in model.layers
    ]
    assert sum(isinstance(m, torch.nn.ReLU) for m in reference.network) == len(linear) - 1
    x, y = _batch(SHAPE, 5)
    loss = reference.loss(reference.network, x, y)
    assert torch.allclose(loss, F.cross_entropy(reference.network(x), y, reduction="none"))
    assert make_model("gaussian-vae", SHAPE, {}).deterministic_network() is None


def test_compiled_weight_statistics_match_the_eager_ones(monkeypatch) -> None:
    """A layer of at least COMPILED_MIN_WEIGHTS runs compiled kernels: the same σ², KL and
    gradients as the eager operations up to float32 round-off (or the eager path itself, with a
    warning, where no compiler is at hand)."""
    generator = torch.Generator().manual_seed(0)
    shape = (512, bayes_mlp.COMPILED_MIN_WEIGHTS // 512)
    mean = (0.05 * torch.randn(shape, generator=generator)).requires_grad_()
    logit = (torch.randn(shape, generator=generator) + 2.0).requires_grad_()
    upstream = torch.randn(shape, generator=generator)

    def run() -> list[torch.Tensor]:
        variance, kl = weight_noise_statistics(mean, logit, 1.0)
        grads = torch.autograd.grad((variance * upstream).sum() + 0.3 * kl, (mean, logit))
        return [variance.detach(), kl.detach(), *grads]

    compiled = run()
    monkeypatch.setattr(bayes_mlp, "COMPILED_MIN_WEIGHTS", 2**40)
    eager = run()
    for a, b in zip(compiled, eager):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), float((a - b).abs().max())


OWN_MODELS = [name for name, cls in MODELS.items() if cls.__module__.startswith("gradbench.")]
PACKAGE = Path(gradbench.__file__).resolve().parent


@pytest.mark.parametrize("name", OWN_MODELS)
def test_a_model_declares_its_task_small_sizes_and_headline_groups(name: str) -> None:
    """What the suite needs of a model is on its class: every small profile's options build it,
    and the groups its tables lead with are among its parameter groups."""
    cls = MODELS[name]
    assert cls.task in TASKS
    assert set(cls.profile_options) <= set(PROFILES) - {"paper"}
    for profile, options in cls.profile_options.items():
        model = make_model(name, DataShape(64, 10, 100), options)
        assert set(cls.headline_groups) <= set(model.parameter_groups()), profile
        assert PROFILES[profile].options_for(name) == dict(options)
    assert PROFILES["paper"].options_for(name) == {}


def test_the_tasks_are_the_models() -> None:
    assert {name: MODELS[name].task for name in OWN_MODELS} == {
        "bayes-mlp": "classifier",
        "bernoulli-vae": "autoencoder",
        "categorical-vae": "autoencoder",
        "gaussian-vae": "autoencoder",
    }


def test_a_model_without_a_valid_task_is_not_registered() -> None:
    class Untasked(StochasticModel):
        name = "untasked"
        task = "regression"

    with pytest.raises(ValueError, match="task 'regression'; valid: classifier, autoencoder"):
        register_model(Untasked)
    assert "untasked" not in MODELS


def test_no_model_is_named_outside_its_own_file_and_the_papers_module() -> None:
    """Under gradbench/, a registered model's or toy problem's name appears in its own module
    and in report/paper.py (which published figure sits beside which row) only."""
    homes = {name: cls.__module__ for name, cls in [*MODELS.items(), *PROBLEMS.items()]}
    allowed = {PACKAGE / "report" / "paper.py"}
    found = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path in allowed:
            continue
        text = path.read_text(errors="replace")
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found += [
            f"{path.relative_to(PACKAGE.parent)}: {name}"
            for name, home in homes.items()
            if home != module and name in text
        ]
    assert not found, found
