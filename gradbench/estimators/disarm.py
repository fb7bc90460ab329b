"""DisARM, ARM with the noise integrated out given the pair (Dong, Mnih & Tucker 2020).

Same antithetic pair as ARM, b = 1[u < σ(α)] and b̃ = 1[1 − u < σ(α)] (= 1[u > σ(−α)]):
ĝ_{α,i} = ½ (f(b) − f(b̃)) (−1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|α_i|), which is E[ĝ_ARM | b, b̃]. Unbiased;
2 evaluations; variance at most ARM's. The loss difference is f(b) − f(b̃): adding f(b̃) instead
gives an estimator whose expectation is zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.estimators.arm import ARM
from gradbench.estimators.base import register_estimator
from gradbench.estimators.nodes import BernoulliNode


@register_estimator
class DisARM(ARM):
    """ARM Rao-Blackwellised over u: only coordinates where the pair differs get a gradient."""

    name = "disarm"
    summary = "DisARM: ½ (f(b) − f(b̃)) (−1)^b̃ 1[b ≠ b̃] σ(|α|) over an antithetic pair"

    def logit_direction(self, node: BernoulliNode, pair: Tensor, difference: Tensor) -> Tensor:
        """ĝ_α = ½ (f(b) − f(b̃)) (−1)^b̃ 1[b ≠ b̃] σ(|α|), given ``difference`` = f(b̃) − f(b)."""
        b, b_tilde = pair[0], pair[1]
        sign = 1 - 2 * b_tilde
        differs = (b - b_tilde).abs()
        weight = torch.sigmoid(node.logits.detach().abs())
        return -0.5 * difference * sign * differs * weight
