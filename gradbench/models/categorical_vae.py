"""Categorical-latent VAE with a Bernoulli decoder: the thesis network 784-500-300(30×10)-500-784.

ELBO(x) = E_{q(y|x)}[log p(x|y)] − KL(q(y|x) ‖ uniform), y = n_vars independent one-hot
variables of n_classes classes. The latent is one :class:`CategoricalNode` whose ``inverse`` is
the encoder, the decoder's approximate inverse for difference target propagation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.estimators.base import Estimator, StochasticForward
from gradbench.estimators.nodes import CategoricalNode, configuration_digits
from gradbench.experiments.metrics import ELBO, IW_BOUND, RECONSTRUCTION_LL
from gradbench.models.base import (
    DataShape,
    OracleUnavailable,
    StochasticModel,
    bernoulli_log_likelihood,
    bernoulli_log_likelihood_table,
    check_hidden_sizes,
    encoder_decoder_groups,
    register_model,
)

_MAX_CONFIGURATIONS = 100_000
_EVAL_ELEMENTS = 2**24
"""Largest draws × batch × input_dim decoded at once in :meth:`CategoricalVAE.evaluate`."""


@register_model
class CategoricalVAE(StochasticModel):
    """VAE with softplus MLPs: encoder x → logits [B, n_vars, n_classes], decoder y → logits.

    Uniform prior p(y) = Π_v 1/K. Defaults are the thesis's (30 variables × 10 classes, 500
    softplus hidden units; the decoder's hidden sizes are the encoder's reversed). The thesis
    does not state an initialisation: layers keep PyTorch's default ``nn.Linear`` init.
    """

    name = "categorical-vae"
    summary = "categorical-latent VAE with Bernoulli decoder (thesis 784-500-30x10-500-784)"
    node_kinds = frozenset({"categorical"})
    has_inverse = True
    reference_estimator = "gumbel-softmax"
    oracle_options = {"hidden_sizes": (8,), "n_vars": 3, "n_classes": 3}
    """27 latent configurations: :meth:`expected_loss` enumerates them all."""

    task = "autoencoder"
    profile_options = {
        "smoke": {"hidden_sizes": (32,), "n_vars": 4, "n_classes": 4},
        "quick": {"hidden_sizes": (200,)},
    }
    headline_groups = ("encoder", "decoder")

    def __init__(
        self,
        shape: DataShape,
        *,
        hidden_sizes: tuple[int, ...] = (500,),
        n_vars: int = 30,
        n_classes: int = 10,
    ) -> None:
        super().__init__()
        check_hidden_sizes(hidden_sizes)
        if n_vars < 1:
            raise ValueError(f"n_vars must be a positive int, got {n_vars}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes}")
        self.n_vars = n_vars
        self.n_classes = n_classes
        latent = n_vars * n_classes
        encoder_sizes = [shape.input_dim, *hidden_sizes, latent]
        decoder_sizes = [latent, *reversed(hidden_sizes), shape.input_dim]
        self.encoder = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(encoder_sizes[:-1], encoder_sizes[1:])
        )
        self.decoder = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(decoder_sizes[:-1], decoder_sizes[1:])
        )

    def encode(self, x: Tensor) -> Tensor:
        """Logits of q(y|x) [B, n_vars, n_classes] for x (or a reconstruction x') [B, input_dim]."""
        h = x
        for layer in self.encoder[:-1]:
            h = F.softplus(layer(h))
        return self.encoder[-1](h).unflatten(-1, (self.n_vars, self.n_classes))

    def decode(self, y: Tensor) -> Tensor:
        """Bernoulli logits of p(x|y), [..., input_dim], for one-hot y [..., n_vars, n_classes]."""
        h = y.flatten(-2)  # [..., n_vars * n_classes]
        for layer in self.decoder[:-1]:
            h = F.softplus(layer(h))
        return self.decoder[-1](h)

    def kl_to_uniform(self, logits: Tensor) -> Tensor:
        """KL(q ‖ uniform) = Σ_v Σ_k π_vk log(K π_vk), [B] for logits [B, n_vars, n_classes]."""
        log_pi = torch.log_softmax(logits, dim=-1)
        return (log_pi.exp() * (log_pi + math.log(self.n_classes))).sum((-2, -1))

    def forward(self, x: Tensor, y: Tensor, estimator: Estimator) -> StochasticForward:
        """data_loss = −log p(x|y), regularizer = KL(q(y|x) ‖ uniform); both [B]."""
        logits = self.encode(x)
        node = CategoricalNode(logits, event_dims=1, inverse=self.encode, context=x)
        latent = estimator.sample(node)
        decoder_logits = self.decode(latent)
        return StochasticForward(
            data_loss=-bernoulli_log_likelihood(decoder_logits, x),
            regularizer=self.kl_to_uniform(logits),
            nodes=[node],
            samples=[latent],
            reconstruction=torch.sigmoid(decoder_logits),
        )

    def parameter_groups(self) -> dict[str, list[str]]:
        """Each parameter alone (``encoder.0.weight``, …); bottom, top, encoder, decoder, all."""
        return encoder_decoder_groups(self, f"decoder.{len(self.decoder) - 1}.weight")

    def all_latents(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Every one of the K^n_vars latent configurations, one-hot [C, n_vars, n_classes].

        Configuration c has variable v in class ⌊c / K^v⌋ mod K. Raises ValueError above
        100,000 configurations (meant for tiny models: tests and the exact-gradient oracle).
        """
        configurations = self.n_classes**self.n_vars
        if configurations > _MAX_CONFIGURATIONS:
            raise OracleUnavailable(
                f"{configurations} latent configurations (n_classes**n_vars) exceed "
                f"{_MAX_CONFIGURATIONS}; use a model with fewer variables or classes"
            )
        digits = configuration_digits(self.n_vars, self.n_classes, device)  # [C, n_vars]
        return F.one_hot(digits, self.n_classes).to(dtype)

    def exact_log_likelihood(self, x: Tensor) -> Tensor:
        """log p(x) = logsumexp_y [log p(x|y)] − n_vars log K over all K^n_vars latents, [B].

        Raises ValueError above 100,000 configurations; meant for tiny models in tests.
        """
        latents = self.all_latents(x.dtype, x.device)  # [C, n_vars, n_classes]
        with torch.no_grad():
            log_px_y = bernoulli_log_likelihood_table(self.decode(latents), x)  # [C, B]
            return torch.logsumexp(log_px_y, dim=0) - self.n_vars * math.log(self.n_classes)

    def expected_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """E_{q(y|x)}[−log p(x|y)] + KL(q(y|x) ‖ uniform), [B], by enumerating all K^n_vars
        latents: Σ_c q(y_c|x) (−log p(x|y_c)) with q(y_c|x) = Π_v π_v(class of v in c).

        Exact and differentiable in the encoder (through q) and the decoder (through every
        −log p(x|y_c)); ValueError above 100,000 configurations.
        """
        latents = self.all_latents(x.dtype, x.device)  # [C, V, K]
        logits = self.encode(x)  # [B, V, K]
        log_pi = torch.log_softmax(logits, dim=-1)
        log_q = torch.einsum("cvk,bvk->cb", latents, log_pi)  # [C, B]
        data_loss = -bernoulli_log_likelihood_table(self.decode(latents), x)  # [C, B]
        return (log_q.exp() * data_loss).sum(0) + self.kl_to_uniform(logits)

    def _log_weights(self, x: Tensor, logits: Tensor, draws: int) -> tuple[Tensor, Tensor]:
        """log p(x|y_k) and log p(y_k) − log q(y_k|x), each [draws, B], for Gumbel-max draws."""
        node = CategoricalNode(logits, event_dims=1)
        log_prior = -self.n_vars * math.log(self.n_classes)
        log_px_y, log_ratio = [], []
        chunk = max(1, _EVAL_ELEMENTS // x.numel())
        for start in range(0, draws, chunk):
            size = min(chunk, draws - start)
            draw = node.sample((size,))
            log_px_y.append(bernoulli_log_likelihood(self.decode(draw), x))
            log_ratio.append(log_prior - node.log_prob(draw))
        return torch.cat(log_px_y), torch.cat(log_ratio)

    def evaluate(self, x: Tensor, y: Tensor, samples: int, iw_samples: int) -> dict[str, Tensor]:
        """Per-example elbo, reconstruction_ll (``samples`` draws) and iw_bound (``iw_samples``).

        iw_bound = log (1/K) Σ_k p(x|y_k) p(y_k) / q(y_k|x), y_k ~ q(y|x) by Gumbel-max.
        """
        if samples < 1 or iw_samples < 1:
            raise ValueError(f"samples and iw_samples must be >= 1, got {samples}, {iw_samples}")
        with torch.no_grad():
            logits = self.encode(x)
            reconstruction_ll = self._log_weights(x, logits, samples)[0].mean(0)
            log_px_y, log_ratio = self._log_weights(x, logits, iw_samples)
            iw_bound = torch.logsumexp(log_px_y + log_ratio, dim=0) - math.log(iw_samples)
            return {
                ELBO: reconstruction_ll - self.kl_to_uniform(logits),
                RECONSTRUCTION_LL: reconstruction_ll,
                IW_BOUND: iw_bound,
            }
