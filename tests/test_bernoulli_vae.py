"""Tests of the Bernoulli-latent VAE: architectures, the sample axis, the KL, the enumerating
oracle against a hand enumeration and Monte Carlo, and the ELBO / IW bound / log-likelihood order.

The model is driven by ``_Draws`` and ``_Relaxed``, minimal estimators written here (exact
Bernoulli draws with a sample shape; a binary-Concrete relaxation), so these tests do not depend
on the real estimator modules.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from gradbench.estimators.nodes import BernoulliNode, logistic_like
from gradbench.models import MODELS, DataShape, make_model
from gradbench.models.base import OracleUnavailable, bernoulli_log_likelihood
from gradbench.measure.training import make_optimizer
from gradbench.models.bernoulli_vae import (
    LEAKY_SLOPE,
    MAX_ORACLE_LATENT_DIM,
    PRIOR_LEARNING_RATE,
    BernoulliVAE,
    bernoulli_kl,
    bernoulli_kl_to_uniform,
)
from tests.helpers import standard_error, z_for
from tests.test_oracle import estimator_draws, exact_gradient, setup, worst, z_table

SHAPE = DataShape(input_dim=12, n_classes=4, n_train=500)
SMALL = {"architecture": "nonlinear", "latent_dim": "5", "hidden_size": "16"}


class _Draws:
    """Exact Bernoulli draws of ``sample_shape`` per example, no gradient path to the encoder."""

    def __init__(self, sample_shape: tuple[int, ...] = ()) -> None:
        self.sample_shape = sample_shape

    def sample(self, node: BernoulliNode) -> Tensor:
        return node.sample(self.sample_shape)


class _Relaxed:
    """Binary Concrete σ((l + logistic noise) / ½): continuous and differentiable in the logits."""

    def sample(self, node: BernoulliNode) -> Tensor:
        return torch.sigmoid((node.logits + logistic_like(node.logits)) / 0.5)


def _model(options: dict[str, str], shape: DataShape = SHAPE, seed: int = 0) -> BernoulliVAE:
    torch.manual_seed(seed)
    return make_model("bernoulli-vae", shape, options).double()


def _binary(batch: int, dim: int) -> Tensor:
    return torch.bernoulli(torch.full((batch, dim), 0.5, dtype=torch.float64))


def _sharpened(model: BernoulliVAE, factor: float = 4.0) -> BernoulliVAE:
    """Scale the last encoder and decoder layers, so that q(b|x) is far from p(b|x)."""
    with torch.no_grad():
        model.encoder[-1].weight.mul_(factor)
        model.decoder[-1].weight.mul_(factor)
    return model


def test_registered_with_declared_capabilities() -> None:
    assert MODELS["bernoulli-vae"] is BernoulliVAE
    assert BernoulliVAE.node_kinds == frozenset({"bernoulli"})
    assert BernoulliVAE.reference_estimator == "lr-baseline"
    assert not BernoulliVAE.has_inverse
    assert BernoulliVAE.oracle_options["latent_dim"] <= MAX_ORACLE_LATENT_DIM


def test_default_is_the_linear_784_200_784_network() -> None:
    model = make_model("bernoulli-vae", DataShape(784, 10, 50_000))
    sizes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert sizes == {
        "encoder.0.weight": (200, 784), "encoder.0.bias": (200,),
        "decoder.0.weight": (784, 200), "decoder.0.bias": (784,),
    }
    assert all((layer.bias == 0).all() for layer in [*model.encoder, *model.decoder])
    x = _binary(3, 784).float()
    torch.testing.assert_close(model.encode(x), model.encoder[0](x))


def test_nonlinear_has_two_leaky_relu_layers_each_side() -> None:
    model = _model({"architecture": "nonlinear", "latent_dim": "3", "hidden_size": "7"})
    assert [tuple(layer.weight.shape) for layer in model.encoder] == [(7, 12), (7, 7), (3, 7)]
    assert [tuple(layer.weight.shape) for layer in model.decoder] == [(7, 3), (7, 7), (12, 7)]
    x = _binary(4, 12)
    h = x
    for layer in model.encoder[:2]:
        h = layer(h)
        h = torch.where(h > 0, h, LEAKY_SLOPE * h)
    torch.testing.assert_close(model.encode(x), model.encoder[2](h))
    b = _binary(4, 3)
    h = b
    for layer in model.decoder[:2]:
        h = F.leaky_relu(layer(h), 0.3)
    torch.testing.assert_close(model.decode(b), model.decoder[2](h))


def test_the_leaky_slope_option_sets_every_hidden_unit_and_the_deterministic_floor() -> None:
    """ARM's nonlinear script's slope 0.1 reaches the encoder, the decoder and the network a step
    is timed against; the linear network has no hidden unit for it to change."""
    model = _model({"architecture": "nonlinear", "latent_dim": "3", "hidden_size": "7",
                    "leaky_slope": "0.1"})
    default = _model({"architecture": "nonlinear", "latent_dim": "3", "hidden_size": "7"})
    default.load_state_dict(model.state_dict())
    def hidden(layers: torch.nn.ModuleList, h: Tensor) -> Tensor:
        for layer in layers[:2]:
            h = layer(h)
            h = torch.where(h > 0, h, 0.1 * h)
        return h

    x, b = _binary(64, 12), _binary(64, 3)
    torch.testing.assert_close(model.encode(x), model.encoder[2](hidden(model.encoder, x)))
    assert not torch.allclose(model.encode(x), default.encode(x))
    torch.testing.assert_close(model.decode(b), model.decoder[2](hidden(model.decoder, b)))
    slopes = {module.negative_slope for module in model.deterministic_network().network.modules()
              if isinstance(module, torch.nn.LeakyReLU)}
    assert slopes == {0.1}
    linear = _model({"latent_dim": "3", "leaky_slope": "0.1"})
    torch.testing.assert_close(linear.encode(x), linear.encoder[0](x))


def test_the_arm_nonlinear_script_profile_is_that_scripts_network() -> None:
    """b_mnist_nonlinear_slim.py: the prior fixed at Bern(1/2) (no prior parameter), LeakyReLU
    slope 0.1, two hidden layers each side, f = log p(x,b) - log q(b|x)."""
    options = BernoulliVAE.profile_options["arm-nonlinear-script"]
    model = make_model("bernoulli-vae", DataShape(input_dim=784, n_classes=0, n_train=50_000),
                       {key: str(value) for key, value in options.items()})
    assert (model.prior, model.leaky_slope, model.signal) == ("uniform", 0.1, "sampled-kl")
    assert "prior_logits" not in dict(model.named_parameters())
    assert len(model.encoder) == len(model.decoder) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"leaky_slope": "-0.1"}, "leaky_slope must be non-negative and finite, got -0.1"),
        ({"leaky_slope": "nan"}, "bad value .nan. for leaky_slope: expected a finite number"),
        ({"architecture": "deep"}, r"unknown architecture 'deep'; valid: linear, nonlinear"),
        ({"latent_dim": "0"}, "latent_dim must be a positive int"),
        ({"hidden_size": "0"}, "hidden_size must be a positive int"),
        ({"latent_dim": "two"}, "bad value 'two' for latent_dim"),
        ({"hidden_sizes": "8"}, "valid: architecture, latent_dim, hidden_size"),
    ],
)
def test_bad_options_raise_value_error(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_model("bernoulli-vae", SHAPE, options)


def test_forward_terms_and_shapes() -> None:
    model = _model(SMALL)
    x = _binary(5, 12)
    forward = model(x, None, _Draws())
    assert forward.data_loss.shape == (5,) and forward.regularizer.shape == (5,)
    node, b = forward.nodes[0], forward.samples[0]
    assert node.event_dims == 1 and forward.context() is x
    assert b.shape == (5, 5) and set(b.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(node.logits, model.encode(x))
    expected = -bernoulli_log_likelihood(model.decode(b), x)
    torch.testing.assert_close(forward.data_loss, expected)
    torch.testing.assert_close(forward.reconstruction, torch.sigmoid(model.decode(b)))
    assert (forward.regularizer >= 0).all() and (forward.data_loss > 0).all()


def test_sample_axis_is_carried_through() -> None:
    """A value with a leading dim of 3 gives data_loss [3, B], one per draw; KL stays [B]."""
    model = _model(SMALL)
    x = _binary(4, 12)
    forward = model(x, None, _Draws((3,)))
    b = forward.samples[0]
    assert b.shape == (3, 4, 5)
    assert forward.data_loss.shape == (3, 4) and forward.regularizer.shape == (4,)
    assert forward.sample_shape == (3,) and forward.log_prob().shape == (3, 4)
    assert forward.reconstruction.shape == (3, 4, 12)
    for k in range(3):
        single = -bernoulli_log_likelihood(model.decode(b[k]), x)
        torch.testing.assert_close(forward.data_loss[k], single)
    assert forward.mean_loss().shape == (4,)


def test_gradients_reach_every_parameter_through_a_relaxed_sample() -> None:
    model = _model(SMALL)
    x = _binary(8, 12)
    forward = model(x, None, _Relaxed())
    assert ((forward.samples[0] > 0) & (forward.samples[0] < 1)).all()
    forward.loss.mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_parameter_groups_name_real_parameters() -> None:
    model = _model(SMALL)
    names = [n for n, _ in model.named_parameters()]
    groups = model.parameter_groups()
    assert groups["all"] == names
    assert all(groups[n] == [n] for n in names)
    assert groups["bottom"] == ["encoder.0.weight"] and groups["top"] == ["decoder.2.weight"]
    assert sorted(groups["encoder"] + groups["decoder"]) == sorted(names)
    linear = _model({"latent_dim": "3"}).parameter_groups()
    assert linear["bottom"] == ["encoder.0.weight"] and linear["top"] == ["decoder.0.weight"]


def test_kl_to_uniform_is_the_closed_form_and_finite_for_large_logits() -> None:
    logits = torch.tensor([[-40.0, -2.0, 0.0, 0.7, 40.0]], dtype=torch.float64)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Bernoulli(logits=logits),
        torch.distributions.Bernoulli(probs=torch.full_like(logits, 0.5)),
    ).sum(-1)
    torch.testing.assert_close(bernoulli_kl_to_uniform(logits), reference)
    assert bernoulli_kl_to_uniform(torch.zeros(1, 5)).item() == 0.0
    assert bernoulli_kl_to_uniform(logits).item() < 5 * math.log(2.0)
    # d KL / d l = σ(l) σ(−l) l
    (grad,) = torch.autograd.grad(bernoulli_kl_to_uniform(logits.requires_grad_()).sum(), logits)
    l = logits.detach()
    torch.testing.assert_close(grad, torch.sigmoid(l) * torch.sigmoid(-l) * l)


def test_enumerated_latents_are_every_binary_vector() -> None:
    model = _model({"latent_dim": "3"})
    latents = model.all_latents(torch.float64, torch.device("cpu"))
    expected = {tuple(float(v) for v in bits) for bits in itertools.product([0, 1], repeat=3)}
    assert latents.shape == (8, 3) and {tuple(row.tolist()) for row in latents} == expected


def test_enumeration_by_hand_for_one_latent() -> None:
    """latent_dim 1: E = π (−log p(x|1)) + (1 − π)(−log p(x|0)) + π log 2π + (1 − π) log 2(1 − π),
    in value and in the gradient of every parameter."""
    options = {"architecture": "nonlinear", "latent_dim": "1", "hidden_size": "3"}
    model = _sharpened(_model(options, DataShape(5, 2, 10), seed=5))
    x = _binary(3, 5)
    pi = torch.sigmoid(model.encode(x)[:, 0])
    nll = [
        F.binary_cross_entropy_with_logits(
            model.decode(torch.full((3, 1), value, dtype=torch.float64)), x, reduction="none"
        ).sum(-1)
        for value in (0.0, 1.0)
    ]
    by_hand = (pi * nll[1] + (1 - pi) * nll[0] + pi * torch.log(2 * pi)
               + (1 - pi) * torch.log(2 * (1 - pi)))
    exact = model.expected_loss(x, None)
    torch.testing.assert_close(exact, by_hand, rtol=1e-12, atol=1e-12)
    params = list(model.parameters())
    for got, want in zip(torch.autograd.grad(exact.sum(), params),
                         torch.autograd.grad(by_hand.sum(), params)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_expected_loss_matches_monte_carlo_in_value_and_decoder_gradient() -> None:
    """Exact draws with a sample axis of R: the mean loss and its decoder gradient (pathwise
    given b, so unbiased) agree with the enumeration within a Bonferroni z of their SE."""
    model = _sharpened(_model(SMALL, seed=1), 2.0)
    x = _binary(6, 12)
    exact = model.expected_loss(x, None)
    decoder = list(model.decoder.parameters())
    exact_grad = torch.cat([g.flatten() for g in torch.autograd.grad(exact.sum(), decoder)])
    torch.manual_seed(2)
    values, grads = [], []
    for _ in range(200):
        forward = model(x, None, _Draws((100,)))
        loss = forward.loss  # [100, B]
        values.append(loss.detach())
        grad = torch.autograd.grad(loss.mean(0).sum(), decoder)
        grads.append(torch.cat([g.flatten() for g in grad]))
    sampled = torch.cat(values)  # [20000, B]
    z = ((sampled.mean(0) - exact.detach()) / standard_error(sampled)).abs().max()
    assert z < z_for(6), z
    grads_t = torch.stack(grads)
    z_grad = ((grads_t.mean(0) - exact_grad) / standard_error(grads_t)).abs().max()
    assert z_grad < z_for(grads_t.shape[1]), z_grad


def _tiny() -> tuple[BernoulliVAE, Tensor]:
    """input_dim 6, three latents, sharpened so that q(b|x) ≠ p(b|x) clearly; every x in {0,1}^6."""
    options = {"architecture": "nonlinear", "latent_dim": "3", "hidden_size": "8"}
    model = _sharpened(_model(options, DataShape(6, 2, 10), seed=1))
    every_x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6)), dtype=torch.float64)
    return model, every_x


def test_exact_likelihood_is_normalised_and_bounds_the_exact_elbo() -> None:
    model, every_x = _tiny()
    log_px = model.exact_log_likelihood(every_x)
    assert abs(torch.logsumexp(log_px, dim=0).item()) < 1e-10
    exact_elbo = -model.expected_loss(every_x, None).detach()
    assert (exact_elbo <= log_px + 1e-12).all()
    assert (log_px - exact_elbo).mean() > 0.5


def test_bounds_order_elbo_iw_log_likelihood() -> None:
    model, every_x = _tiny()
    exact_elbo = -model.expected_loss(every_x, None).detach()
    log_px = model.exact_log_likelihood(every_x)
    repeats = 400
    x = every_x.repeat(repeats, 1)  # [repeats * 64, 6]: independent estimates per input
    torch.manual_seed(3)
    metrics = model.evaluate(x, None, samples=1, iw_samples=1)
    assert set(metrics) == {"elbo", "reconstruction_ll", "iw_bound"}
    assert all(v.shape == (x.shape[0],) for v in metrics.values())
    elbo, iw_one = (metrics[k].view(repeats, -1) for k in ("elbo", "iw_bound"))
    assert (elbo.mean(0) - exact_elbo).abs().max() < z_for(64) * standard_error(elbo).max()
    kl = bernoulli_kl_to_uniform(model.encode(every_x)).detach()
    torch.testing.assert_close(elbo, metrics["reconstruction_ll"].view(repeats, -1) - kl)
    # one importance sample: E[iw_bound] is the ELBO; pooled over inputs to detect small offsets
    pooled_se = iw_one.var(0).mean().sqrt() / math.sqrt(iw_one.numel())
    assert abs(iw_one.mean() - exact_elbo.mean()) < z_for(1) * pooled_se
    iw = model.evaluate(x, None, samples=1, iw_samples=20)["iw_bound"].view(repeats, -1)
    iw_se = standard_error(iw)
    assert ((iw.mean(0) - exact_elbo) / iw_se).min() > -z_for(64)
    assert ((iw.mean(0) - log_px) / iw_se).max() < z_for(64)
    assert (iw.mean(0) - exact_elbo).mean() > 0.5 * (log_px - exact_elbo).mean()


def test_evaluate_chunks_draws_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradbench.models import bernoulli_vae

    model, every_x = _tiny()
    torch.manual_seed(4)
    whole = model.evaluate(every_x, None, samples=5, iw_samples=7)
    monkeypatch.setattr(bernoulli_vae, "_EVAL_ELEMENTS", 2 * every_x.numel())
    torch.manual_seed(4)
    chunked = model.evaluate(every_x, None, samples=5, iw_samples=7)
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key])
    with pytest.raises(ValueError, match="iw_samples must be >= 1"):
        model.evaluate(every_x, None, samples=1, iw_samples=0)


def test_oracle_refuses_latent_dims_above_its_limit() -> None:
    shape = DataShape(2, 2, 10)
    x = _binary(2, 2)
    largest = _model({"latent_dim": str(MAX_ORACLE_LATENT_DIM)}, shape)
    assert largest.expected_loss(x, None).shape == (2,)
    too_large = _model({"latent_dim": str(MAX_ORACLE_LATENT_DIM + 1)}, shape)
    with pytest.raises(OracleUnavailable, match=f"latent_dim at most {MAX_ORACLE_LATENT_DIM}"):
        too_large.expected_loss(x, None)
    with pytest.raises(OracleUnavailable, match="latent_dim"):
        too_large.exact_log_likelihood(x)


# --- the released codes' options: a learned prior, f = log p(x, b) − log q(b|x) -------------------

ARM_CODE = {"latent_dim": "3", "prior": "learned", "signal": "sampled-kl"}


def _with_prior(options: dict[str, str], logits: list[float], seed: int = 0) -> BernoulliVAE:
    """A sharpened small model whose learned prior sits away from Bern(½)."""
    model = _sharpened(_model(options, seed=seed))
    with torch.no_grad():
        model.prior_logits.copy_(torch.tensor(logits, dtype=torch.float64))
    return model


def test_kl_to_a_learned_prior_is_the_closed_form() -> None:
    logits = torch.tensor([[-30.0, -2.0, 0.0, 0.7, 30.0]], dtype=torch.float64)
    prior = torch.tensor([0.3, -1.0, 2.0, 0.0, -0.5], dtype=torch.float64)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Bernoulli(logits=logits),
        torch.distributions.Bernoulli(logits=prior.expand_as(logits)),
    ).sum(-1)
    torch.testing.assert_close(bernoulli_kl(logits, prior), reference)
    torch.testing.assert_close(bernoulli_kl(logits, torch.zeros(5)), bernoulli_kl_to_uniform(logits))


def test_the_learned_prior_starts_at_zero_and_trains_by_plain_sgd() -> None:
    model = _model(ARM_CODE)
    assert torch.equal(model.prior_logits, torch.zeros(3, dtype=torch.float64))
    assert PRIOR_LEARNING_RATE == 0.01
    assert model.sgd_parameters() == {"prior_logits": 0.01}
    assert _model({"latent_dim": "3"}).sgd_parameters() == {}
    assert "prior_logits" not in dict(_model({"latent_dim": "3"}).named_parameters())
    optimizer = make_optimizer(model, 1e-3)
    x = _binary(16, 12)
    torch.manual_seed(0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    forward = model(x, None, _Draws())
    optimizer.zero_grad()
    forward.loss.mean().backward()
    grad = model.prior_logits.grad.clone()
    optimizer.step()
    moved = model.prior_logits.detach() - before["prior_logits"]
    assert moved.abs().min() > 0, "the prior's logits must move"
    torch.testing.assert_close(moved, -0.01 * grad, rtol=0, atol=1e-15)  # SGD, not Adam
    adam_step = model.encoder[0].weight.detach() - before["encoder.0.weight"]
    assert adam_step.abs().max() <= 1e-3 * (1 + 1e-6)  # Adam's first step is at most lr


def test_the_elbo_signal_is_the_sampled_negative_elbo() -> None:
    """data_loss = −[log p(x|b) + log p(b) − log q(b|x)] per draw by hand; the regularizer is 0;
    its mean over exact draws is the enumerated expected loss (= −ELBO) within SE."""
    model = _with_prior(ARM_CODE, [0.5, -1.0, 1.5])
    x = _binary(5, 12)
    forward = model(x, None, _Draws((4,)))
    b = forward.samples[0]
    logits = model.encode(x)
    log_q = (b * F.logsigmoid(logits) + (1 - b) * F.logsigmoid(-logits)).sum(-1)
    eta = model.prior_logits
    log_p = (b * F.logsigmoid(eta) + (1 - b) * F.logsigmoid(-eta)).sum(-1)
    by_hand = -(bernoulli_log_likelihood(model.decode(b), x) + log_p - log_q)
    torch.testing.assert_close(forward.data_loss, by_hand)
    assert torch.equal(forward.regularizer, torch.zeros(5, dtype=torch.float64))
    torch.manual_seed(1)
    draws = model(x, None, _Draws((20_000,))).loss.detach()
    exact = model.expected_loss(x, None).detach()
    z = ((draws.mean(0) - exact) / standard_error(draws)).abs().max()
    assert z < z_for(5), z


def test_the_elbo_signal_keeps_the_analytic_kl_models_expectation() -> None:
    """Same parameters, either signal: the same enumerated loss, log-likelihood and ELBO."""
    analytic = _with_prior({"latent_dim": "3", "prior": "learned"}, [0.5, -1.0, 1.5])
    sampled = _with_prior(ARM_CODE, [0.5, -1.0, 1.5])
    x = _binary(7, 12)
    torch.testing.assert_close(sampled.expected_loss(x, None), analytic.expected_loss(x, None))
    log_px = sampled.exact_log_likelihood(x)
    assert (log_px >= -sampled.expected_loss(x, None).detach()).all()
    every_x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=12)), dtype=torch.float64)
    assert abs(torch.logsumexp(sampled.exact_log_likelihood(every_x), 0).item()) < 1e-9


@pytest.mark.parametrize(
    ("signal", "estimator"),
    [("sampled-kl", "arm"), ("sampled-kl", "disarm"), ("sampled-kl", "rloo"),
     ("sampled-kl", "lr-baseline"), ("sampled-kl", "rebar"), ("analytic-kl", "disarm")],
)
def test_unbiased_estimators_match_the_oracle_with_a_learned_prior(
    signal: str, estimator: str
) -> None:
    """The oracle instance (4 latents, linear, digits) with the released codes' options: every
    coordinate of every parameter, the prior's logits included, within a Bonferroni z of the
    exact gradient; the f of ``signal="sampled-kl"`` estimates the same gradient as the analytic KL."""
    model, x, y = setup("bernoulli-vae")
    options = {**BernoulliVAE.oracle_options, "prior": "learned", "signal": signal}
    learned = make_model("bernoulli-vae", DataShape(x.shape[1], 2, 100), options).double()
    learned.load_state_dict({**model.state_dict(),
                             "prior_logits": torch.tensor([0.8, -0.6, 0.3, -1.2]).double()})
    draws = estimator_draws(learned, estimator, x, y, 10_000)
    z, name, score = worst(z_table(draws, exact_gradient(learned, x, y)))
    assert score < z, (name, score, z)
    assert draws["prior_logits"].mean(0).abs().min() > 0.01


def test_the_elbo_signal_reaches_the_encoder_only_through_the_estimator() -> None:
    """As in the released codes, log q(b|x) inside f is a value for the encoder: with draws that
    carry no gradient path, the loss's gradient in the encoder is zero, in the decoder and the
    prior it is not."""
    model = _with_prior(ARM_CODE, [0.5, -1.0, 1.5])
    loss = model(_binary(5, 12), None, _Draws((3,))).loss.sum()
    grads = dict(zip([n for n, _ in model.named_parameters()],
                     torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)))
    assert all(grads[n] is None for n in grads if n.startswith("encoder."))
    assert all(grads[n].abs().sum() > 0 for n in grads if not n.startswith("encoder."))
