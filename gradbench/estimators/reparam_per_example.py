"""Reparameterization with a separate weight sample per example (Kingma, Salimans & Welling 2015).

W_m = μ + σ ⊙ ε_m, ε_m ~ N(0, I) for each example m; b_m = a_m W_m. Uncorrelated per-example
terms, but M·n·k random numbers and a batched product per layer: the paper's 1635 s per epoch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from gradbench.estimators.base import Estimator, register_estimator
from gradbench.estimators.nodes import StochasticNode

CHUNK_BYTES = 4 * 2**30
"""Memory bound of one chunk of examples' weight samples (the noise ε_m and σ ⊙ ε_m, kept for
the backward, and the backward's product: three weight-sized tensors per example). A minibatch
above it is drawn in chunks, each recomputed in the backward pass from its saved random state
(``torch.utils.checkpoint``), so the peak stays near the bound whatever M is (at the paper's
784-3×1024-10 and M = 1000 the whole minibatch would need about 35 GB per layer). 4 GiB keeps
two such cells within a 24 GB machine and draws the paper's M = 100 (1.2 GB a layer) in one
chunk, without recomputing: a step there took 4.4 s instead of 6.3 s (one thread, this
repository's CPU). Where a layer's weight count is a multiple of 16 (the papers' sizes) the
chunks draw the very numbers one draw of the minibatch would (torch's CPU normal sampler fills
blocks of 16); elsewhere another stream of the same distribution."""


class PerExampleProduct(torch.autograd.Function):
    """b_m = a_m μ + a_m (σ ⊙ ε_m) for given noise ε [m, n_in, n_out], with the backward
    contracted per example instead of through M weight-sized gradients:
    ∂μ = Aᵀ G, ∂σ_ij = Σ_m a_mi g_mj ε_mij, ∂a_m = μ g_m + (σ ⊙ ε_m) g_m.
    The same numbers as autograd through W_m = μ + σ ⊙ ε_m, up to round-off, in about half the
    passes over the M weight-sized tensors (the bulk of a step at the paper's sizes). Pure given
    ε, so ``generate_vmap_rule`` batches it under ``torch.func.vmap``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        inputs: Tensor, weight_mean: Tensor, std: Tensor, noise: Tensor
    ) -> tuple[Tensor, Tensor]:
        scaled = std * noise  # [m, n_in, n_out]
        return inputs @ weight_mean + torch.bmm(inputs.unsqueeze(-2), scaled).squeeze(-2), scaled

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: tuple[Tensor, Tensor]) -> None:
        activations, weight_mean, _, noise = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(activations, weight_mean, noise, output[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _: Tensor) -> tuple[Tensor | None, ...]:
        inputs, weight_mean, noise, scaled = ctx.saved_tensors
        grad_inputs = grad_mean = grad_std = None
        if ctx.needs_input_grad[0]:
            per_example = torch.bmm(scaled, grad.unsqueeze(-1)).squeeze(-1)
            grad_inputs = grad @ weight_mean.mT + per_example
        if ctx.needs_input_grad[1]:
            grad_mean = inputs.mT @ grad
        if ctx.needs_input_grad[2]:
            grad_std = torch.einsum("mi,mij->ij", inputs, noise * grad.unsqueeze(-2))
        return grad_inputs, grad_mean, grad_std, None


def _chunk_outputs(inputs: Tensor, weight_mean: Tensor, std: Tensor) -> Tensor:
    """a_m (μ + σ ⊙ ε_m) for each example m of ``inputs`` [m, n_in]: [m, n_out]."""
    noise = torch.randn((inputs.shape[0], *std.shape), dtype=std.dtype, device=std.device)
    return PerExampleProduct.apply(inputs, weight_mean, std, noise)[0]


@register_estimator
class ReparameterizationPerExample(Estimator):
    """Pathwise gradient with an independent weight sample for every example."""

    name = "reparam-per-example"
    summary = "reparameterization with a separate weight sample per example"
    unbiased = True
    node_kinds = frozenset({"weight-noise"})

    def __init__(self) -> None:
        super().__init__()

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        inputs = node.inputs  # [batch, n_in]
        std = node.weight_variance().sqrt()  # [n_in, n_out]
        chunk = max(1, CHUNK_BYTES // (3 * std.numel() * std.element_size()))
        if inputs.shape[0] <= chunk:
            out = _chunk_outputs(inputs, node.weight_mean, std)
        else:
            out = torch.cat([
                checkpoint(_chunk_outputs, part, node.weight_mean, std, use_reentrant=False)
                for part in inputs.split(chunk)
            ])
        return out if node.bias is None else out + node.bias
