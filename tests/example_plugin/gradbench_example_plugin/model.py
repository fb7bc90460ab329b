"""A model from another package, found through the entry-point group ``gradbench.models``.

A linear autoencoder with d Bernoulli latents and a learned factorised prior p(b) = Π_j Bern(σ(r_j))
(REBAR's, Tucker et al. 2017): ELBO(x) = E_{q(b|x)}[log p(x|b)] − KL(q(b|x) ‖ p(b)),
q(b|x) = Π_j Bern(σ(W_e x + c)_j), p(x|b) = Π_i Bern(σ(W_d b + a)_i). Everything the suite needs
to know of it is an attribute of the class: its task, its sizes in the small profiles, the groups
its tables lead with (the contract's ``top`` and ``bottom``, inherited). The class is not
decorated: the entry point names it and gradbench registers it on load."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.estimators import Estimator, StochasticForward
from gradbench.estimators.nodes import BernoulliNode, configuration_digits
from gradbench.models import DataShape, StochasticModel
from gradbench.models.base import (
    OracleUnavailable,
    bernoulli_log_likelihood,
    bernoulli_log_likelihood_table,
)

MAX_ORACLE_LATENT_DIM = 12
"""Largest latent_dim whose 2^d configurations :meth:`BinaryAutoencoder.expected_loss` sums."""


class BinaryAutoencoder(StochasticModel):
    """Encoder x → logits [B, latent_dim] and decoder b → logits [..., input_dim], one affine
    layer each, Glorot-uniform weights and zero biases; prior logits r [latent_dim] from 0."""

    name = "binary-autoencoder"
    summary = "plugin example: linear autoencoder with Bernoulli latents, D-d-D"
    node_kinds = frozenset({"bernoulli"})
    reference_estimator = "lr-baseline"
    oracle_options = {"latent_dim": 3}
    task = "autoencoder"
    profile_options = {"smoke": {"latent_dim": 4}, "quick": {"latent_dim": 16}}

    def __init__(self, shape: DataShape, *, latent_dim: int = 32) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim}")
        self.latent_dim = latent_dim
        self.encoder = nn.Linear(shape.input_dim, latent_dim)
        self.decoder = nn.Linear(latent_dim, shape.input_dim)
        self.prior_logits = nn.Parameter(torch.zeros(latent_dim))
        for layer in (self.encoder, self.decoder):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def log_prior(self, b: Tensor) -> Tensor:
        """log p(b) = Σ_j [b_j log σ(r_j) + (1 − b_j) log σ(−r_j)], [...] for b [..., d]."""
        r = self.prior_logits
        return (b * F.logsigmoid(r) + (1 - b) * F.logsigmoid(-r)).sum(-1)

    def kl_to_prior(self, logits: Tensor) -> Tensor:
        """KL(q(b|x) ‖ p(b)) = Σ_j Σ_{v∈{0,1}} q(b_j = v) [log q(b_j = v) − log p(b_j = v)], [B]."""
        log_q = torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)])  # [2, B, d]
        log_p = torch.stack([F.logsigmoid(-self.prior_logits), F.logsigmoid(self.prior_logits)])
        return (log_q.exp() * (log_q - log_p[:, None])).sum((0, -1))

    def forward(self, x: Tensor, y: Tensor, estimator: Estimator) -> StochasticForward:
        """data_loss = −log p(x|b) [*sample_shape, B], regularizer = KL(q(b|x) ‖ p(b)) [B]."""
        node = BernoulliNode(self.encoder(x), event_dims=1, context=x)
        latent = estimator.sample(node)
        decoder_logits = self.decoder(latent)
        data_loss = -bernoulli_log_likelihood(decoder_logits, x)
        regularizer = self.kl_to_prior(node.logits)
        return StochasticForward(
            data_loss, regularizer, [node], [latent], reconstruction=torch.sigmoid(decoder_logits)
        )

    def parameter_groups(self) -> dict[str, list[str]]:
        """Each parameter alone; ``bottom`` the encoder's weight, ``top`` the decoder's, all."""
        names = [name for name, _ in self.named_parameters()]
        return {
            **{name: [name] for name in names},
            "bottom": ["encoder.weight"],
            "top": ["decoder.weight"],
            "all": names,
        }

    def expected_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Σ_c q(b_c|x) (−log p(x|b_c)) + KL(q(b|x) ‖ Bern(½)), [B], over all 2^d configurations
        b_c; :class:`OracleUnavailable` above latent_dim 12."""
        if self.latent_dim > MAX_ORACLE_LATENT_DIM:
            raise OracleUnavailable(
                f"2^{self.latent_dim} configurations; the oracle needs latent_dim <= "
                f"{MAX_ORACLE_LATENT_DIM}"
            )
        latents = configuration_digits(self.latent_dim, 2, x.device).to(x.dtype)  # [C, d]
        logits = self.encoder(x)  # [B, d]
        log_q = latents @ F.logsigmoid(logits).T + (1.0 - latents) @ F.logsigmoid(-logits).T
        log_px_b = bernoulli_log_likelihood_table(self.decoder(latents), x)  # [C, B]
        return -(log_q.exp() * log_px_b).sum(0) + self.kl_to_prior(logits)

    def evaluate(self, x: Tensor, y: Tensor, samples: int, iw_samples: int) -> dict[str, Tensor]:
        """Per-example elbo and reconstruction_ll (``samples`` draws of b), and the
        importance-weighted bound log (1/K) Σ_k p(x|b_k) p(b_k) / q(b_k|x) (``iw_samples``)."""
        if samples < 1 or iw_samples < 1:
            raise ValueError(f"samples and iw_samples must be >= 1, got {samples}, {iw_samples}")
        with torch.no_grad():
            logits = self.encoder(x)
            node = BernoulliNode(logits, event_dims=1)
            reconstruction_ll = bernoulli_log_likelihood(
                self.decoder(node.sample((samples,))), x
            ).mean(0)
            draws = node.sample((iw_samples,))  # [K, B, d]
            log_weights = (
                bernoulli_log_likelihood(self.decoder(draws), x)
                + self.log_prior(draws)
                - node.log_prob(draws)
            )
            return {
                "elbo": reconstruction_ll - self.kl_to_prior(logits),
                "reconstruction_ll": reconstruction_ll,
                "iw_bound": torch.logsumexp(log_weights, dim=0) - math.log(iw_samples),
            }
