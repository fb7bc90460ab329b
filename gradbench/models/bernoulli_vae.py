"""Bernoulli-latent VAE with a Bernoulli decoder: the binary-latent benchmark of REBAR, RELAX, ARM
and DisARM (784-200-784 and its nonlinear variant).

ELBO(x) = E_{q(b|x)}[log p(x|b)] − KL(q(b|x) ‖ Bern(½)^d), q(b|x) = Π_j Bern(b_j; σ(l_j(x))),
with the KL analytic: Σ_j [π_j log π_j + (1 − π_j) log(1 − π_j)] + d log 2, π = σ(l). The latent
is one :class:`BernoulliNode`; the estimator's sample may be relaxed (continuous, Gumbel-softmax)
and may carry leading sample dimensions, which the decoder and the data loss carry through.

The papers and their setups
    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein (2017), REBAR; Grathwohl, Choi, Wu, Roeder &
    Duvenaud (2018), RELAX; Yin & Zhou (2019), ARM; Dong, Mnih & Tucker (2020), DisARM. All four
    train one layer of 200 Bernoulli latents on binarized MNIST in two architectures: "linear"
    (the encoder's logits are an affine function of x, the decoder's an affine function of b)
    and "nonlinear" (two deterministic hidden layers of 200 units before the stochastic layer,
    mirrored in the decoder). Optimiser Adam; minibatch 50 in ARM's table and DisARM's released
    code (learning rate 1e-4; ARM's released nonlinear script uses 25). The published figures
    use Larochelle's statically binarized MNIST (Larochelle & Murray 2011), which gradbench does
    not ship: gradbench's MNIST is binarized by threshold, dynamically or by one seeded sample
    (:mod:`gradbench.data`), so its numbers are close to, not equal to, those tables. Priors:
    REBAR's code (and RELAX, built on it) learns factorised Bernoulli prior logits; ARM's code
    fixes Bern(½); DisARM's code learns prior logits initialised at 0, i.e. at Bern(½). Hidden
    units: tanh in REBAR's code, LeakyReLU in ARM's (negative slope 0.2) and DisARM's (0.3).
    The papers put log p(b) − log q(b|x) inside the function whose gradient is estimated;
    gradbench takes the KL analytically (the regularizer), so an estimator sees
    f(b) = −log p(x|b) only: the same gradient in expectation, usually less variance in the
    encoder's (their variance figures are not comparable with gradbench's).

gradbench's choices
    Prior fixed at Bern(½) for every latent: the KL is then analytic in the encoder alone and
    every parameter is the encoder's or the decoder's (like the categorical VAE's uniform
    prior); it is ARM's prior and DisARM's starting point, and a learned prior's gradient would
    be exact for every estimator alike, telling them apart in nothing. Nonlinear hidden units are
    LeakyReLU with negative slope 0.3 (DisARM's). Weights Glorot-uniform, biases zero (the
    default of the TensorFlow layers ARM's and DisARM's codes build on).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.estimators.base import Estimator, StochasticForward
from gradbench.estimators.nodes import BernoulliNode, configuration_digits
from gradbench.experiments.metrics import ELBO, IW_BOUND, RECONSTRUCTION_LL
from gradbench.models.base import (
    DataShape,
    OracleUnavailable,
    StochasticModel,
    bernoulli_log_likelihood,
    bernoulli_log_likelihood_table,
    encoder_decoder_groups,
    register_model,
)

ARCHITECTURES = ("linear", "nonlinear")
LEAKY_SLOPE = 0.3
"""Negative slope of the nonlinear architecture's LeakyReLU units (DisARM's code)."""
MAX_ORACLE_LATENT_DIM = 16
"""Largest latent_dim :meth:`BernoulliVAE.expected_loss` enumerates: 2^16 = 65,536
configurations, each decoded once (about 400 MB of float64 decoder logits for MNIST)."""
_EVAL_ELEMENTS = 2**24
"""Largest draws × batch × input_dim decoded at once in :meth:`BernoulliVAE.evaluate`."""
_LOG_2 = math.log(2.0)


def bernoulli_kl_to_uniform(logits: Tensor) -> Tensor:
    """KL(Π_j Bern(σ(l_j)) ‖ Bern(½)^d) = Σ_j [σ(l) log σ(l) + σ(−l) log σ(−l) + log 2], summed
    over the last dimension; stable for large |l| (log σ by ``logsigmoid``)."""
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    return (log_p.exp() * log_p + log_not_p.exp() * log_not_p + _LOG_2).sum(-1)


def _mlp(sizes: list[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))


@register_model
class BernoulliVAE(StochasticModel):
    """VAE with ``latent_dim`` independent Bernoulli latents: encoder x → logits [B, latent_dim],
    decoder b → Bernoulli logits [..., input_dim].

    ``architecture="linear"``: input_dim-latent_dim-input_dim, one affine layer each way.
    ``"nonlinear"``: two LeakyReLU hidden layers of ``hidden_size`` units before the latent
    layer and two after it (input_dim-h-h-latent_dim-h-h-input_dim); ``hidden_size`` is unused
    by the linear architecture. Defaults: linear, 200 latents, 200 hidden units.
    """

    name = "bernoulli-vae"
    summary = "Bernoulli-latent VAE with Bernoulli decoder (REBAR/ARM/DisARM 784-200-784)"
    node_kinds = frozenset({"bernoulli"})
    has_inverse = False
    reference_estimator = "lr-baseline"
    oracle_options = {"architecture": "linear", "latent_dim": 4}
    """16 latent configurations: :meth:`expected_loss` enumerates them all. Linear: on digits
    (tests/test_oracle.py) an encoder gradient off by 5 % is 6 (lr-baseline) to 10 (disarm)
    standard errors away at 10,000 draws, against 3 to 7 for a nonlinear 64-8-8-4 network, whose
    hidden layers add coordinates but nothing an estimator acts on (the decoder's gradient is
    pathwise given b for every estimator)."""

    task = "autoencoder"
    profile_options = {"smoke": {"latent_dim": 8}}
    headline_groups = ("encoder", "decoder")

    def __init__(
        self,
        shape: DataShape,
        *,
        architecture: str = "linear",
        latent_dim: int = 200,
        hidden_size: int = 200,
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}"
            )
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size}")
        self.latent_dim = latent_dim
        hidden = [hidden_size, hidden_size] if architecture == "nonlinear" else []
        self.encoder = _mlp([shape.input_dim, *hidden, latent_dim])
        self.decoder = _mlp([latent_dim, *hidden, shape.input_dim])
        for layer in [*self.encoder, *self.decoder]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def encode(self, x: Tensor) -> Tensor:
        """Logits of q(b|x), [B, latent_dim], for x [B, input_dim]."""
        h = x
        for layer in self.encoder[:-1]:
            h = F.leaky_relu(layer(h), LEAKY_SLOPE)
        return self.encoder[-1](h)

    def decode(self, b: Tensor) -> Tensor:
        """Bernoulli logits of p(x|b), [..., input_dim], for b [..., latent_dim] (binary or
        relaxed)."""
        h = b
        for layer in self.decoder[:-1]:
            h = F.leaky_relu(layer(h), LEAKY_SLOPE)
        return self.decoder[-1](h)

    def forward(self, x: Tensor, y: Tensor, estimator: Estimator) -> StochasticForward:
        """data_loss = −log p(x|b) [*sample_shape, B], regularizer = KL(q(b|x) ‖ Bern(½)) [B]."""
        logits = self.encode(x)
        node = BernoulliNode(logits, event_dims=1, context=x)
        latent = estimator.sample(node)  # [*sample_shape, B, latent_dim]
        decoder_logits = self.decode(latent)  # [*sample_shape, B, input_dim]
        return StochasticForward(
            data_loss=-bernoulli_log_likelihood(decoder_logits, x),
            regularizer=bernoulli_kl_to_uniform(logits),
            nodes=[node],
            samples=[latent],
            reconstruction=torch.sigmoid(decoder_logits),
        )

    def parameter_groups(self) -> dict[str, list[str]]:
        """Each parameter alone (``encoder.0.weight``, …); bottom, top, encoder, decoder, all."""
        return encoder_decoder_groups(self, f"decoder.{len(self.decoder) - 1}.weight")

    def all_latents(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Every one of the 2^latent_dim binary configurations, [C, latent_dim]; configuration c
        has b_j = bit j of c. :class:`OracleUnavailable` above latent_dim 16."""
        if self.latent_dim > MAX_ORACLE_LATENT_DIM:
            raise OracleUnavailable(
                f"enumerating 2^{self.latent_dim} latent configurations is too large for an "
                f"exact oracle (latent_dim at most {MAX_ORACLE_LATENT_DIM}); use a smaller "
                "latent_dim"
            )
        return configuration_digits(self.latent_dim, 2, device).to(dtype)

    def _enumerated_log_likelihoods(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every configuration [C, latent_dim] and log p(x|b_c) [C, B] (matrix products: no
        C × B × input_dim tensor is formed)."""
        latents = self.all_latents(x.dtype, x.device)
        return latents, bernoulli_log_likelihood_table(self.decode(latents), x)

    def exact_log_likelihood(self, x: Tensor) -> Tensor:
        """log p(x) = logsumexp_b [log p(x|b)] − latent_dim log 2 over all 2^latent_dim latents,
        [B]; :class:`OracleUnavailable` above latent_dim 16. Meant for tiny models in tests."""
        with torch.no_grad():
            log_px_b = self._enumerated_log_likelihoods(x)[1]
            return torch.logsumexp(log_px_b, dim=0) - self.latent_dim * _LOG_2

    def expected_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """E_{q(b|x)}[−log p(x|b)] + KL(q(b|x) ‖ Bern(½)), [B], by enumerating all 2^latent_dim
        configurations: Σ_c q(b_c|x) (−log p(x|b_c)), q(b_c|x) = Π_j σ(l_j)^b_cj σ(−l_j)^(1−b_cj).

        Exact and differentiable in the encoder (through q and the KL) and the decoder (through
        every log p(x|b_c)); :class:`OracleUnavailable` above latent_dim 16.
        """
        latents, log_px_b = self._enumerated_log_likelihoods(x)  # [C, d], [C, B]
        logits = self.encode(x)  # [B, d]
        log_q = latents @ F.logsigmoid(logits).T + (1.0 - latents) @ F.logsigmoid(-logits).T
        return -(log_q.exp() * log_px_b).sum(0) + bernoulli_kl_to_uniform(logits)

    def _log_weights(self, x: Tensor, logits: Tensor, draws: int) -> tuple[Tensor, Tensor]:
        """log p(x|b_k) and log p(b_k) − log q(b_k|x), each [draws, B], for exact draws b_k."""
        node = BernoulliNode(logits, event_dims=1)
        log_prior = -self.latent_dim * _LOG_2
        log_px_b, log_ratio = [], []
        chunk = max(1, _EVAL_ELEMENTS // x.numel())
        for start in range(0, draws, chunk):
            draw = node.sample((min(chunk, draws - start),))  # [size, B, latent_dim]
            log_px_b.append(bernoulli_log_likelihood(self.decode(draw), x))
            log_ratio.append(log_prior - node.log_prob(draw))
        return torch.cat(log_px_b), torch.cat(log_ratio)

    def evaluate(self, x: Tensor, y: Tensor, samples: int, iw_samples: int) -> dict[str, Tensor]:
        """Per-example elbo, reconstruction_ll (``samples`` draws) and iw_bound (``iw_samples``).

        iw_bound = log (1/K) Σ_k p(x|b_k) p(b_k) / q(b_k|x), b_k ~ q(b|x) (Burda et al. 2016),
        drawn in chunks of at most 2^24 decoded elements.
        """
        if samples < 1 or iw_samples < 1:
            raise ValueError(f"samples and iw_samples must be >= 1, got {samples}, {iw_samples}")
        with torch.no_grad():
            logits = self.encode(x)
            reconstruction_ll = self._log_weights(x, logits, samples)[0].mean(0)
            log_px_b, log_ratio = self._log_weights(x, logits, iw_samples)
            iw_bound = torch.logsumexp(log_px_b + log_ratio, dim=0) - math.log(iw_samples)
            return {
                ELBO: reconstruction_ll - bernoulli_kl_to_uniform(logits),
                RECONSTRUCTION_LL: reconstruction_ll,
                IW_BOUND: iw_bound,
            }
