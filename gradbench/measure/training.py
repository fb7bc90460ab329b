"""Optimizer steps with an estimator's surrogate: the loop every measurement shares.

One step: forward pass of the model with the estimator, the surrogate's mean over the minibatch
backpropagated, an Adam update, then ``estimator.observe`` (baselines, annealing clocks).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.data import Dataset
from gradbench.estimators.base import Estimator
from gradbench.models.base import StochasticModel


def make_optimizer(
    model: StochasticModel, estimator: Estimator, learning_rate: float
) -> torch.optim.Optimizer:
    """Adam over the model's and the estimator's own parameters (a learned baseline)."""
    params = list(model.parameters()) + list(estimator.parameters())
    return torch.optim.Adam(params, lr=learning_rate)


def train_step(
    model: StochasticModel,
    estimator: Estimator,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
) -> Tensor:
    """One optimizer step on minibatch (x, y); returns the minibatch's mean loss (no host sync)."""
    forward = model(x, y, estimator)
    surrogate = estimator.surrogate(forward).mean()
    optimizer.zero_grad(set_to_none=True)
    surrogate.backward()
    optimizer.step()
    estimator.observe(forward)
    return surrogate.detach()


def train_epoch(
    model: StochasticModel,
    estimator: Estimator,
    optimizer: torch.optim.Optimizer,
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    max_steps: int | None = None,
) -> float:
    """One pass over the training set (or ``max_steps`` steps); the mean minibatch loss.

    Returns NaN or inf when the run diverged; the caller records that instead of crashing.
    """
    model.train()
    total = torch.zeros((), device=dataset.device)
    steps = 0
    for x, y in dataset.batches("train", batch_size, generator):
        total += train_step(model, estimator, optimizer, x, y)
        steps += 1
        if max_steps is not None and steps >= max_steps:
            break
    if steps == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {len(dataset.train)} training examples")
    return float(total) / steps
