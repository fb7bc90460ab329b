"""Many independent gradient draws at once.

A draw is ∇_θ of a scalar surrogate computed with fresh randomness. ``gradient_draws`` evaluates
R draws with ``torch.func.vmap(torch.func.grad(...), randomness="different")`` in chunks, so the
random numbers of every draw are independent and no Python loop runs per draw; ``vectorize=False``
runs the same draws in a plain loop (the reference the batched path is measured against).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Params = dict[str, Tensor]
SurrogateFn = Callable[[Params], Tensor]


def _one_draw(surrogate_fn: SurrogateFn, params: Params) -> Params:
    detached = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    value = surrogate_fn(detached)
    grads = torch.autograd.grad(value, list(detached.values()), allow_unused=True)
    return {
        k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(detached.items(), grads)
    }


def gradient_draws(
    surrogate_fn: SurrogateFn,
    params: Params,
    draws: int,
    chunk_size: int = 1000,
    vectorize: bool = True,
) -> Params:
    """Stack ``draws`` independent gradients of ``surrogate_fn`` at ``params``: name → [draws, ...].

    ``surrogate_fn(params)`` must return a scalar and draw its own noise (elementwise random
    primitives only, so vmap's ``randomness="different"`` gives every draw its own noise).
    """
    if draws < 1:
        raise ValueError(f"draws must be positive, got {draws}")
    if not vectorize:
        single = [_one_draw(surrogate_fn, params) for _ in range(draws)]
        return {k: torch.stack([g[k] for g in single]) for k in params}
    fixed = {k: v.detach() for k, v in params.items()}
    device = next(iter(fixed.values())).device
    batched = torch.func.vmap(
        lambda _: torch.func.grad(surrogate_fn)(fixed), randomness="different"
    )
    chunks: list[Params] = []
    remaining = draws
    while remaining > 0:
        size = min(chunk_size, remaining)
        chunks.append(batched(torch.zeros(size, device=device)))
        remaining -= size
    return {k: torch.cat([c[k] for c in chunks]) for k in params}
