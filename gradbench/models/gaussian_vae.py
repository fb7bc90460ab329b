"""Gaussian-latent VAE with a Bernoulli decoder (Kingma & Welling 2014, their MNIST setup).

ELBO(x) = E_{q(z|x)}[log p(x|z)] − KL(q(z|x) ‖ N(0, I)) with q(z|x) = N(μ(x), diag σ²(x)).
The latent is one :class:`GaussianNode`; the KL to the prior is analytic.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from gradbench.estimators.base import Estimator, StochasticForward
from gradbench.estimators.nodes import GaussianNode
from gradbench.experiments.metrics import ELBO, IW_BOUND, RECONSTRUCTION_LL
from gradbench.models.base import (
    DataShape,
    OracleUnavailable,
    StochasticModel,
    bernoulli_log_likelihood,
    check_hidden_sizes,
    encoder_decoder_groups,
    register_model,
)

_LOG_2PI = math.log(2.0 * math.pi)
_EVAL_ELEMENTS = 2**24
"""Largest draws × batch × input_dim decoded at once in :meth:`GaussianVAE.evaluate`."""
MAX_QUADRATURE_DIM = 3
QUADRATURE_NODES = {1: 64, 2: 40, 3: 32}
"""Gauss–Hermite nodes per latent dimension of :meth:`GaussianVAE.expected_loss` by latent_dim."""
_QUADRATURE_ELEMENTS = 2**22
"""Largest grid points × batch × input_dim decoded at once in the quadrature (recomputed in the
backward pass, so memory stays bounded whatever the grid)."""


def hermite_grid(dim: int, nodes: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Tensor-product Gauss–Hermite rule for E_{t ~ N(0, I_dim)}[h(t)] ≈ Σ_j w_j h(t_j).

    Returns points [nodes**dim, dim] and weights [nodes**dim] summing to 1 (probabilists'
    Hermite nodes, numpy's ``hermegauss``, weights divided by √(2π) per dimension).
    """
    points, weights = np.polynomial.hermite_e.hermegauss(nodes)
    weights = weights / math.sqrt(2.0 * math.pi)
    grids = np.meshgrid(*([points] * dim), indexing="ij")
    grid = np.stack([g.reshape(-1) for g in grids], axis=-1)
    weight = np.prod(np.stack(np.meshgrid(*([weights] * dim), indexing="ij")), axis=0).reshape(-1)
    return (
        torch.as_tensor(grid, dtype=dtype, device=device),
        torch.as_tensor(weight, dtype=dtype, device=device),
    )


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − log σ² − 1), summed over the last dim."""
    return 0.5 * (mean.square() + log_var.exp() - log_var - 1.0).sum(-1)


def _mlp(sizes: list[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))


@register_model
class GaussianVAE(StochasticModel):
    """VAE on binarized inputs: tanh MLP encoder → (μ, log σ²), z ~ N(μ, σ²), tanh MLP decoder.

    Defaults follow Kingma & Welling (2014) for MNIST: one hidden layer of 500 units in encoder
    and decoder, 20 latent dimensions, weights N(0, init_std²) with biases 0. The paper's
    "N(0, 0.01)" is read as a standard deviation of 0.01. The decoder's hidden sizes are the
    encoder's in reverse order.
    """

    name = "gaussian-vae"
    summary = "Gaussian-latent VAE with Bernoulli decoder (Kingma & Welling 2014)"
    node_kinds = frozenset({"gaussian"})
    has_inverse = False
    reference_estimator = "reparam"
    oracle_options = {"hidden_sizes": (8,), "latent_dim": 2}
    """Two latent dimensions: :meth:`expected_loss` integrates them on a 40 × 40 Gauss–Hermite grid."""

    task = "autoencoder"
    profile_options = {
        "smoke": {"hidden_sizes": (32,), "latent_dim": 4},
        "quick": {"hidden_sizes": (200,)},
    }
    headline_groups = ("encoder", "decoder")

    def __init__(
        self,
        shape: DataShape,
        *,
        hidden_sizes: tuple[int, ...] = (500,),
        latent_dim: int = 20,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        check_hidden_sizes(hidden_sizes)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim}")
        if not init_std > 0.0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        self.input_dim = shape.input_dim
        self.latent_dim = latent_dim
        hidden = list(hidden_sizes)
        self.encoder = _mlp([shape.input_dim, *hidden, 2 * latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden), shape.input_dim])
        for layer in [*self.encoder, *self.decoder]:
            nn.init.normal_(layer.weight, 0.0, init_std)
            nn.init.zeros_(layer.bias)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x), each [B, latent_dim]."""
        h = x
        for layer in self.encoder[:-1]:
            h = torch.tanh(layer(h))
        mean, log_var = self.encoder[-1](h).chunk(2, dim=-1)
        return mean, log_var

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits of p(x|z), [..., input_dim] for z [..., latent_dim]."""
        h = z
        for layer in self.decoder[:-1]:
            h = torch.tanh(layer(h))
        return self.decoder[-1](h)

    def forward(self, x: Tensor, y: Tensor, estimator: Estimator) -> StochasticForward:
        """data_loss = −log p(x|z), regularizer = KL(q(z|x) ‖ N(0, I)); both [B]."""
        mean, log_var = self.encode(x)
        node = GaussianNode(mean, torch.exp(0.5 * log_var), event_dims=1, context=x)
        z = estimator.sample(node)
        logits = self.decode(z)
        return StochasticForward(
            data_loss=-bernoulli_log_likelihood(logits, x),
            regularizer=gaussian_kl(mean, log_var),
            nodes=[node],
            samples=[z],
            reconstruction=torch.sigmoid(logits),
        )

    def parameter_groups(self) -> dict[str, list[str]]:
        """Each parameter alone (``encoder.0.weight``, …); bottom, top, encoder, decoder, all."""
        return encoder_decoder_groups(self, f"decoder.{len(self.decoder) - 1}.weight")

    def expected_loss(self, x: Tensor, y: Tensor, nodes: int | None = None) -> Tensor:
        """E_{q(z|x)}[−log p(x|z)] + KL(q(z|x) ‖ N(0, I)), [B], by Gauss–Hermite quadrature.

        z = μ + σ t on a tensor-product grid of ``nodes`` points per latent dimension (default
        ``QUADRATURE_NODES[latent_dim]``), KL analytic. Differentiable in the encoder (through μ
        and σ) and the decoder. The integrand is smooth, so the error falls geometrically with
        the nodes (tests compare against twice the nodes). ValueError for latent_dim > 3.
        """
        if self.latent_dim > MAX_QUADRATURE_DIM:
            raise OracleUnavailable(
                f"quadrature over latent_dim={self.latent_dim} dimensions is too large for an "
                f"exact oracle (at most {MAX_QUADRATURE_DIM}); use a smaller latent_dim"
            )
        nodes = nodes or QUADRATURE_NODES[self.latent_dim]
        if nodes < 1:
            raise ValueError(f"nodes must be positive, got {nodes}")
        points, weights = hermite_grid(self.latent_dim, nodes, x.dtype, x.device)
        mean, log_var = self.encode(x)
        std = torch.exp(0.5 * log_var)
        chunk = max(1, _QUADRATURE_ELEMENTS // max(1, x.numel()))

        def part(mean: Tensor, std: Tensor, points: Tensor, weights: Tensor) -> Tensor:
            z = mean + std * points[:, None, :]  # [n, B, latent_dim]
            return -(weights[:, None] * bernoulli_log_likelihood(self.decode(z), x)).sum(0)

        data_loss = x.new_zeros(x.shape[0])
        for start in range(0, points.shape[0], chunk):
            args = (mean, std, points[start : start + chunk], weights[start : start + chunk])
            if points.shape[0] <= chunk:
                data_loss = data_loss + part(*args)
            else:
                data_loss = data_loss + checkpoint(part, *args, use_reentrant=False)
        return data_loss + gaussian_kl(mean, log_var)

    def _log_weights(self, x: Tensor, node: GaussianNode, draws: int) -> tuple[Tensor, Tensor]:
        """log p(x|z_k) and log p(z_k) − log q(z_k|x) for ``draws`` exact draws, each [draws, B]."""
        log_px_z, log_ratio = [], []
        chunk = max(1, _EVAL_ELEMENTS // x.numel())
        for start in range(0, draws, chunk):
            size = min(chunk, draws - start)
            noise = torch.randn(size, *node.mean.shape, dtype=x.dtype, device=x.device)
            z = node.reparameterize(noise)  # [size, B, latent_dim]
            log_prior = -0.5 * (z.square() + _LOG_2PI).sum(-1)
            log_px_z.append(bernoulli_log_likelihood(self.decode(z), x))
            log_ratio.append(log_prior - node.log_prob(z))
        return torch.cat(log_px_z), torch.cat(log_ratio)

    def evaluate(self, x: Tensor, y: Tensor, samples: int, iw_samples: int) -> dict[str, Tensor]:
        """Per-example elbo, reconstruction_ll (``samples`` draws) and iw_bound (``iw_samples``).

        iw_bound = log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2016).
        """
        if samples < 1 or iw_samples < 1:
            raise ValueError(f"samples and iw_samples must be >= 1, got {samples}, {iw_samples}")
        with torch.no_grad():
            mean, log_var = self.encode(x)
            node = GaussianNode(mean, torch.exp(0.5 * log_var), event_dims=1)
            reconstruction_ll = self._log_weights(x, node, samples)[0].mean(0)
            log_px_z, log_ratio = self._log_weights(x, node, iw_samples)
            iw_bound = torch.logsumexp(log_px_z + log_ratio, dim=0) - math.log(iw_samples)
            return {
                ELBO: reconstruction_ll - gaussian_kl(mean, log_var),
                RECONSTRUCTION_LL: reconstruction_ll,
                IW_BOUND: iw_bound,
            }
