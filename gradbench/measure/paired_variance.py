"""Single against separate weight samples on identical draws: a paired estimate of their variances
and of the ratio (Kingma, Salimans & Welling 2015, Table 1).

Both estimators average per-example gradients G_m = (a_m δ_mᵀ) ∘ c of a dense layer's weight
mean θ (a_m the layer's input, δ_m the gradient of the minibatch mean loss at the example's
pre-activation, c = ∂W/∂θ = 1 + ε ∘ ∂σ/∂θ for W = θ + σ ∘ ε), and each example's G_m has the
same law under both: a single sample shares ε across the minibatch, separate samples draw one ε
per example. So, with two single-sample draws k = 1, 2 on one minibatch and d_m = G_m1 − G_m2,

    single noise    ½ (Σ_m d_m)²                         unbiased for Var_ε(ĝ_single | B)
    separate noise  ½ Σ_m d_m² = ½ (S₁₁ + S₂₂ − 2 S₁₂)    unbiased for Var_ε(ĝ_separate | B)
    S_kl = Σ_m G_mk ∘ G_ml = ((a_k ∘ a_l)ᵀ (δ_k ∘ δ_l)) ∘ c_k ∘ c_l

per parameter: the separate-sample variance comes from the very draws that give the single
one, with no per-example gradient formed (three [n_in, M] × [M, n_out] products a layer).
The data part Var_B(E_ε[ĝ | B]) is common to both (E_ε[G_m] is the same): from two
independent minibatches with draw means ḡ, ḡ', ½ (ḡ − ḡ')² is unbiased for it plus half the
single noise. A *unit* is such a pair of minibatches; per unit, averaged over a group's
parameters,

    V_single = N_single + D,   V_separate = N_separate + D,   D = ½ |ḡ − ḡ'|² / P − N_single / 2

with N the unit's two minibatches' mean noise estimates; the means over J units are unbiased for
the two variances, and the ratio of means estimates V_single / V_separate. Intervals: over units
(independent), the longer on each side of a percentile bootstrap and a delta-method t interval
(t_{J−1} · sd(h) / √J, h_j = (A_j − R B_j) / B̄ the ratio's influence values), at ``confidence``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from scipy import stats
from torch import Tensor
from tqdm import tqdm

from gradbench.data import Dataset
from gradbench.estimators.nodes import StochasticNode, WeightNoiseNode
from gradbench.estimators.reparam import Reparameterization
from gradbench.execution.task import Context, Resources, Task, Work, cell_key
from gradbench.experiment import Setting, build_model
from gradbench.measure.checkpoints import (
    TrainingConfig,
    as_checkpoint,
    checkpoint_config,
    checkpoint_tasks,
    stable_seed,
)
from gradbench.measure.variance import DIGEST_COLUMN, minibatch_indices
from gradbench.measure.variance_stats import BOOTSTRAP_REPLICATES, CONFIDENCE
from gradbench.models.base import StochasticModel, get_model_class
from gradbench.results import STATUS_OK, Cell
from gradbench.experiments.metrics import (
    GRAD_VARIANCE_DATA,
    GRAD_VARIANCE_SEPARATE,
    GRAD_VARIANCE_SINGLE,
    VARIANCE_RATIO,
)

EXPERIMENT = "paired-variance"
METRICS = (GRAD_VARIANCE_SINGLE, GRAD_VARIANCE_SEPARATE, GRAD_VARIANCE_DATA, VARIANCE_RATIO)
"""Per group: the two variances, their common data part, and single / separate."""
SINGLE_SAMPLE = "reparam"
"""The estimator a paired cell is stored under: the single-sample one, the ratio's numerator
(its denominator is ``reparam-per-example``'s variance on the same draws)."""
GRADIENTS_PER_UNIT = 8
"""A unit's cost in single-sample gradients, for time estimates: four draws (two on each of its
two minibatches), each also differentiating W in θ, and three cross products per group; measured
7.7 at 784-3×1024-10, M = 100, on one CPU thread."""


@dataclass(frozen=True)
class LayerDraw:
    """One layer in one single-sample draw: inputs a [M, n_in], output gradients δ [M, n_out]
    (of the minibatch mean loss), c = ∂W/∂θ [n_in, n_out], and the minibatch gradient ĝ of θ."""

    inputs: Tensor
    output_grad: Tensor
    weight_slope: Tensor
    gradient: Tensor


class _RecordingSingleSample(Reparameterization):
    """The single-sample estimator (one W = θ + σ ∘ ε per minibatch) that keeps, per layer, its
    inputs, pre-activations and W (to differentiate)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[WeightNoiseNode, Tensor, Tensor]] = []

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        if not isinstance(node, WeightNoiseNode):
            raise TypeError(f"paired variance needs weight-noise layers, got {node.kind!r}")
        std = node.weight_variance().sqrt()
        weight = node.weight_mean + std * torch.randn_like(std)  # [n_in, n_out]
        out = node.inputs @ weight
        out = out if node.bias is None else out + node.bias
        self.records.append((node, weight, out))
        return out


def single_sample_draw(model: StochasticModel, x: Tensor, y: Tensor) -> list[LayerDraw]:
    """One single-sample gradient draw on minibatch (x, y), per weight-noise layer in order
    (noise from torch's global RNG)."""
    recorder = _RecordingSingleSample()
    with torch.enable_grad():
        loss = recorder.surrogate(model(x, y, recorder)).mean()
        slopes = [
            torch.autograd.grad(weight.sum(), node.weight_mean, retain_graph=True)[0]
            for node, weight, _ in recorder.records  # W is elementwise in θ: the sum's gradient
        ]
        means = [node.weight_mean for node, _, _ in recorder.records]
        grads = torch.autograd.grad(loss, [*means, *(out for _, _, out in recorder.records)])
    count = len(means)
    return [
        LayerDraw(node.inputs.detach(), grads[count + i].detach(), slopes[i].detach(),
                  grads[i].detach())
        for i, (node, _, _) in enumerate(recorder.records)
    ]


def noise_parts(first: LayerDraw, second: LayerDraw) -> tuple[Tensor, Tensor]:
    """Per parameter [n_in, n_out]: the single-sample and separate-sample noise estimates of one
    minibatch from two draws on it (module docstring)."""
    if first.inputs.shape != second.inputs.shape or first.gradient.shape != second.gradient.shape:
        raise ValueError(
            f"draws of different shapes: inputs {tuple(first.inputs.shape)} and "
            f"{tuple(second.inputs.shape)}, gradients {tuple(first.gradient.shape)} and "
            f"{tuple(second.gradient.shape)}"
        )

    def cross(one: LayerDraw, other: LayerDraw) -> Tensor:
        return ((one.inputs * other.inputs).T @ (one.output_grad * other.output_grad)
                * one.weight_slope * other.weight_slope)

    single = 0.5 * (first.gradient - second.gradient).square()
    separate = 0.5 * (cross(first, first) + cross(second, second) - 2.0 * cross(first, second))
    return single, separate


@dataclass
class UnitSums:
    """Per group, per unit (a pair of minibatches), sums over the group's parameters: single and
    separate noise (mean of the unit's two minibatches) and ½ |ḡ − ḡ'|²; ``count`` parameters."""

    single: list[float]
    separate: list[float]
    spread: list[float]
    count: int


def paired_sums(
    model: StochasticModel,
    dataset: Dataset,
    batch_size: int,
    units: int,
    groups: Mapping[str, int],
    generator: torch.Generator,
    progress: bool = False,
) -> dict[str, UnitSums]:
    """Draw ``units`` pairs of minibatches of M = ``batch_size`` training examples (two
    single-sample draws on each) and sum, per group (name → weight-noise layer index), the
    unit's statistics (:class:`UnitSums`); ``progress``: a tqdm bar over units."""
    if units < 2:
        raise ValueError(f"need at least 2 units (pairs of minibatches), got {units}")
    index = minibatch_indices(len(dataset.train), batch_size, 2 * units, generator)
    sums = {name: UnitSums([], [], [], 0) for name in groups}
    for unit in tqdm(range(units), desc="paired units", disable=not progress, mininterval=30):
        means: dict[str, list[Tensor]] = {name: [] for name in groups}
        single = dict.fromkeys(groups, 0.0)
        separate = dict.fromkeys(groups, 0.0)
        for rows in index[2 * unit : 2 * unit + 2]:
            x, y = dataset._minibatch("train", rows, generator)
            first, second = single_sample_draw(model, x, y), single_sample_draw(model, x, y)
            for name, layer in groups.items():
                noise_single, noise_separate = noise_parts(first[layer], second[layer])
                single[name] += 0.5 * float(noise_single.double().sum())
                separate[name] += 0.5 * float(noise_separate.double().sum())
                means[name].append(0.5 * (first[layer].gradient + second[layer].gradient))
        for name in groups:
            a, b = means[name]
            sums[name].single.append(single[name])
            sums[name].separate.append(separate[name])
            sums[name].spread.append(0.5 * float((a - b).double().square().sum()))
            sums[name].count = a.numel()
    return sums


def _ratio_interval(
    numerator: Tensor, denominator: Tensor, confidence: float, replicates: int,
    generator: torch.Generator,
) -> tuple[float, float, float]:
    """mean(numerator) / mean(denominator) over units with its interval (module docstring)."""
    units = numerator.shape[0]
    ratio = float(numerator.mean() / denominator.mean())
    influence = (numerator - ratio * denominator) / denominator.mean()
    half = float(stats.t.ppf(0.5 + confidence / 2.0, units - 1)) * float(
        influence.std(correction=1)) / math.sqrt(units)
    draws = torch.randint(units, (replicates, units), generator=generator)
    boot = numerator[draws].mean(1) / denominator[draws].mean(1)
    tail = (1.0 - confidence) / 2.0
    levels = torch.tensor([tail, 1.0 - tail], dtype=torch.float64)
    low, high = torch.quantile(boot[boot.isfinite()], levels).tolist()
    return ratio, min(low, ratio - half), max(high, ratio + half)


def paired_statistics(
    sums: UnitSums, confidence: float = CONFIDENCE, replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The group's rows (``METRICS``) from its unit sums: each variance with its interval (a
    ratio to the constant 1), and single / separate."""
    p = sums.count
    single = torch.tensor(sums.single, dtype=torch.float64) / p
    separate = torch.tensor(sums.separate, dtype=torch.float64) / p
    data = torch.tensor(sums.spread, dtype=torch.float64) / p - single / 2.0
    if single.shape[0] < 2:
        raise ValueError(f"need at least 2 units, got {single.shape[0]}")
    ones = torch.ones_like(single)
    generator = torch.Generator().manual_seed(seed)
    estimates = {
        GRAD_VARIANCE_SINGLE: _ratio_interval(single + data, ones, confidence, replicates,
                                                generator),
        GRAD_VARIANCE_SEPARATE: _ratio_interval(separate + data, ones, confidence,
                                                  replicates, generator),
        GRAD_VARIANCE_DATA: _ratio_interval(data, ones, confidence, replicates, generator),
        VARIANCE_RATIO: _ratio_interval(single + data, separate + data, confidence,
                                          replicates, generator),
    }
    return [
        {"metric": metric, "value": value, "ci_low": low, "ci_high": high,
         "n": 2 * single.shape[0]}
        for metric, (value, low, high) in estimates.items()
    ]


def paired_variance_rows(
    model: StochasticModel,
    dataset: Dataset,
    batch_size: int,
    units: int,
    groups: Mapping[str, int],
    seed: int,
    *,
    confidence: float = CONFIDENCE,
    replicates: int = BOOTSTRAP_REPLICATES,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Rows {param_group, batch_size, metric, value, ci_low, ci_high, n, cell_seconds} of the
    paired estimate at the model's parameters: ``units`` pairs of minibatches of ``batch_size``
    (n counts minibatches), noise seeded by ``seed``."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator(device=dataset.device).manual_seed(seed)
    sums = paired_sums(model, dataset, batch_size, units, groups, generator, progress)
    seconds = time.perf_counter() - start
    return [
        {"param_group": name, "batch_size": batch_size, **row, "cell_seconds": seconds}
        for name, group in sums.items()
        for row in paired_statistics(group, confidence, replicates, seed)
    ]


def headline_layers(model: StochasticModel, names: Sequence[str] | None = None
                    ) -> dict[str, int]:
    """Group name → weight-noise layer index (in forward order) for the groups ``names``
    (default: the model's ``headline_groups``, e.g. ``top`` and ``bottom``: the last and first
    layer's θ); ValueError naming a group that is not one layer's mean weights."""
    groups = model.parameter_groups()
    layers = [n for n, _ in model.named_parameters() if n.endswith("weight_mean")]
    found = {}
    for name in model.headline_groups if names is None else names:
        members = groups.get(name, [])
        if len(members) != 1 or members[0] not in layers:
            raise ValueError(f"group {name!r} of {model.name} is not one weight-noise layer's "
                             f"mean weights: {members}")
        found[name] = layers.index(members[0])
    return found


def has_weight_noise(model: str) -> bool:
    """Whether the model's stochastic nodes are weight-noise layers (its ``node_kinds``): the
    models the paired estimate applies to."""
    return WeightNoiseNode.kind in get_model_class(model).node_kinds


def _paired_cell_rows(
    setting: Setting, batch_size: int, units: int, seed: int, replicates: int,
    context: Context, checkpoint_state: dict[str, Any],
) -> list[dict[str, Any]]:
    """The rows of one paired cell at the checkpoint's parameters, each with the checkpoint's
    epoch and digest."""
    state = as_checkpoint(checkpoint_state)
    model = build_model(setting, context.dataset, context.device)
    model.load_state_dict(state.model_state)
    rows = paired_variance_rows(model, context.dataset, batch_size, units,
                                headline_layers(model), seed, replicates=replicates,
                                progress=context.progress)
    return [row | {"epoch": state.epoch, DIGEST_COLUMN: state.digest, "status": STATUS_OK}
            for row in rows]


def paired_variance_tasks(
    setting: Setting,
    batch_sizes: Sequence[int],
    units: int,
    at_epochs: Sequence[int],
    dataset: Dataset,
    device: torch.device,
    root: str | os.PathLike[str],
    profile: str,
    *,
    training: TrainingConfig,
    replicates: int = BOOTSTRAP_REPLICATES,
    resources: Resources = Resources(),
) -> list[Task]:
    """The reference checkpoints at ``at_epochs`` (the variance experiment's tasks of the same
    keys: one set of parameters, one digest) and one paired cell per minibatch size M of
    ``batch_sizes`` above 1 (at M = 1 the two estimators are one) × epoch, of ``units`` pairs of
    minibatches, needing its checkpoint. ValueError on fewer than 2 units or a minibatch larger
    than the training split."""
    if units < 2:
        raise ValueError(f"paired variance needs at least 2 units (pairs of minibatches), "
                         f"got {units}")
    n_train = len(dataset.train)
    for size in batch_sizes:
        if not 1 <= size <= n_train:
            raise ValueError(f"batch size must be in 1..{n_train} (training examples), got {size}")
    reference = get_model_class(setting.model).reference_estimator
    checkpoints = checkpoint_tasks(setting, dataset, device, reference, training, at_epochs, root)
    parameters = checkpoint_config(setting, dataset, reference, training, device)
    # A cell is defined by its checkpoint's definition (the data's at the top level, where
    # results read it) and its own settings.
    base = {**parameters.pop("data"), **parameters, "units": units,
            "bootstrap_replicates": replicates, "confidence": CONFIDENCE, "profile": profile}
    tasks: list[Task] = list(checkpoints.values())
    for epoch in at_epochs:
        for size in (s for s in batch_sizes if s > 1):
            cell = Cell(EXPERIMENT, setting.model, SINGLE_SAMPLE,
                        base | {"epoch": epoch, "batch_size": size}, required=(DIGEST_COLUMN,))
            run = partial(_paired_cell_rows, setting, size, units,
                          stable_seed(setting.seed, EXPERIMENT, size, epoch), replicates)
            tasks.append(Task(
                cell_key(cell), run, (checkpoints[epoch].key,), cell, resources,
                at_intermediate=True,
                describe=f"paired variance {setting.model} / M={size} / epoch {epoch} / "
                f"seed {setting.seed}",
                work=Work(setting, SINGLE_SAMPLE, size, GRADIENTS_PER_UNIT * units),
            ))
    return tasks
