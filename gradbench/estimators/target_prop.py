"""Difference target propagation for a categorical latent (the thesis in shared/seeds; Lee et al. 2015).

The sample is exact, y = one-hot(argmax(log π + g)), and nothing is backpropagated through it.
Decoder: backprop of −log p(x|y). Encoder: towards the target π̂ = π(x) + f(x) − f(x') =
2π(x) − π(x'), with the encoder f as the decoder's approximate inverse and x' the reconstruction
(held fixed); encoder loss ‖π(x) − π̂‖² + β KL(q(y|x) ‖ uniform), β rising linearly from 0 to
``beta_max`` over ``beta_warmup_steps`` optimizer steps (the thesis scales β up from 0 without
giving the schedule; this is gradbench's choice). Not an unbiased estimator of the ELBO gradient:
its "gradient" is this update direction.
"""

from __future__ import annotations

from torch import Tensor

from gradbench.estimators.base import Estimator, StochasticForward, register_estimator
from gradbench.estimators.nodes import CategoricalNode, StochasticNode


@register_estimator
class TargetPropagation(Estimator):
    """Exact discrete samples; encoder trained towards difference targets."""

    name = "target-prop"
    summary = "difference target propagation: encoder towards 2π(x) − π(x')"
    unbiased = False
    node_kinds = frozenset({"categorical"})
    needs_inverse = True

    def __init__(self, *, beta_max: float = 1.0, beta_warmup_steps: int = 10_000) -> None:
        super().__init__()
        if beta_max < 0:
            raise ValueError(f"beta_max must be non-negative, got {beta_max}")
        if beta_warmup_steps < 0:
            raise ValueError(f"beta_warmup_steps must be non-negative, got {beta_warmup_steps}")
        self.beta_max = beta_max
        self.beta_warmup_steps = beta_warmup_steps

    @property
    def beta(self) -> float:
        """The current KL weight β_t = β_max · min(1, t / warmup)."""
        if self.beta_warmup_steps == 0:
            return self.beta_max
        return self.beta_max * min(1.0, int(self.steps) / self.beta_warmup_steps)

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        return node.exact_sample()

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        if forward.reconstruction is None:
            raise ValueError("target propagation needs the model's reconstruction x'")
        encoder_loss = 0.0
        for node in forward.nodes:
            if not isinstance(node, CategoricalNode) or node.inverse is None:
                raise TypeError("target propagation needs categorical nodes with an inverse")
            probs = node.log_probs().exp()  # [batch, vars, classes]
            reconstructed = node.inverse(forward.reconstruction.detach()).softmax(-1).detach()
            target = 2.0 * probs.detach() - reconstructed
            encoder_loss = encoder_loss + (probs - target).square().flatten(1).sum(-1)
        return forward.data_loss + encoder_loss + self.beta * forward.regularizer
