"""Bias of gradient estimators against the exact gradient of a model's oracle configuration.

At a checkpoint of the model in its ``oracle_options`` configuration (trained with the model's
reference estimator), one fixed minibatch of M examples is drawn from a seed; each estimator
draws R gradients of the minibatch-mean surrogate with fresh noise (``torch.func.vmap``), and
the exact gradient g is autograd of ``model.expected_loss(x, y).mean()`` (enumeration,
quadrature or a closed form). Everything runs in float64.

Per parameter group (the group's coordinates concatenated; sums over them, not means):

- ``relative_bias`` = ‖E ĝ − g‖ / ‖g‖;
- ``cosine`` = cos(E ĝ, g);
- ``mse`` = E ‖ĝ − g‖² = ‖E ĝ − g‖² + tr Var ĝ (of one draw);
- ``relative_std`` = √(tr Var ĝ) / ‖g‖ (ReinMax's analysis reports this ratio).

‖ḡ − g‖² overstates ‖E ĝ − g‖² by tr Var ĝ / R on average, and ‖ḡ‖² overstates ‖E ĝ‖² alike;
both are debiased by subtracting T / R, T the unbiased sample trace (then clamped at 0).
``mse`` is the mean of ‖ĝ_r − g‖² over draws, unbiased as it stands. Intervals: 95 %
bootstrap over draws of the raw statistics (squared relative bias and std, the unclipped cosine,
the MSE): percentiles shifted by the bootstrap's own bias (a replicate's debiasing leaves the
resampling noise's T/R in), mapped through the square root or clip, widened where needed to
contain the point; a small simulation in the tests checks their coverage (conservative near
zero bias).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch.func import functional_call

from gradbench.data import Dataset
from gradbench.estimators import base_name, estimator_class, variant_options
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.experiments.metrics import COSINE, MSE, RELATIVE_BIAS, RELATIVE_STD
from gradbench.gradients import gradient_draws
from gradbench.execution.in_process import execute_here
from gradbench.execution.task import Context, Resources, Task, Work, cell_key
from gradbench.measure.checkpoints import (
    TrainingConfig,
    as_checkpoint,
    checkpoint_config,
    checkpoint_tasks,
    stable_seed,
)
from gradbench.measure.training import dataset_config
from gradbench.measure.variance import DIGEST_COLUMN
from gradbench.models.base import get_model_class
from gradbench.options import resolve_options
from gradbench.results import STATUS_DIVERGED, STATUS_OK, Cell, Provenance, ResultStore

EXPERIMENT = "bias"
METRICS = (RELATIVE_BIAS, COSINE, MSE, RELATIVE_STD)
CONFIDENCE = 0.95
BOOTSTRAP_REPLICATES = 400
SETTLE_PASSES = 200
"""Forward passes on the fixed minibatch that settle a loss-tracking estimator (a baseline)."""
MAX_CHUNK_DRAWS = 8
"""Draws per vmap batch: small batches keep every elementwise buffer in cache (2–3× faster
than 1000 at once, and peak memory under 3 GB where 1000 reached 11 GB)."""
DOUBLE_PRECISION_COST = 2
"""A float64 gradient's cost in float32 gradients, for time estimates."""
CONVENTION = (
    "exact gradient of the minibatch mean of expected_loss at the oracle configuration; "
    "per-group sums; ||mean - g||^2 debiased by tr(Cov)/R"
)


def _raw_statistics(sums: dict[str, Tensor], norm_sq: Tensor, draws: int) -> dict[str, Tensor]:
    """The metrics before their final transform from a group's sums over its coordinates
    (:func:`_parameter_sums`) and ‖g‖²: relative bias and std squared, the cosine unclipped,
    the MSE (module docstring). T = (w·‖ĝ_r‖² − ‖ḡ‖²) · R / (R − 1)."""
    trace = (sums["square_norm"] - sums["mean_square"]) * draws / (draws - 1)
    bias_sq = sums["bias_square"] - trace / draws
    mean_sq = (sums["mean_square"] - trace / draws).clamp_min(torch.finfo(trace.dtype).tiny)
    return {
        RELATIVE_BIAS: bias_sq / norm_sq,
        COSINE: sums["cross"] / (mean_sq * norm_sq).sqrt(),
        MSE: sums["error"],
        RELATIVE_STD: trace / norm_sq,
    }


def _parameter_sums(weights: Tensor, draws: Tensor, exact: Tensor) -> dict[str, Tensor]:
    """One parameter's sums over its coordinates for weight rows w [..., R] over draws
    ĝ [R, P] (g [P]), with ḡ = w ĝ: ‖ḡ‖², ḡ·g, ‖ḡ − g‖², w·‖ĝ_r‖², w·‖ĝ_r − g‖². A group's
    sums are its parameters' sums, so overlapping groups share one product per parameter."""
    mean = weights @ draws  # [..., P]
    return {
        "mean_square": mean.square().sum(-1),
        "cross": mean @ exact,
        "bias_square": (mean - exact).square().sum(-1),
        "square_norm": weights @ draws.square().sum(1),
        "error": weights @ (draws - exact).square().sum(1),
    }


_TRANSFORMS = {
    RELATIVE_BIAS: lambda v: math.sqrt(max(v, 0.0)),
    COSINE: lambda v: min(max(v, -1.0), 1.0),
    MSE: lambda v: max(v, 0.0),
    RELATIVE_STD: lambda v: math.sqrt(max(v, 0.0)),
}
"""Each metric from its raw statistic (monotone, so intervals map through it)."""


def bias_statistics(
    draws: dict[str, Tensor],
    exact: dict[str, Tensor],
    groups: dict[str, list[str]],
    *,
    replicates: int = BOOTSTRAP_REPLICATES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows {param_group, metric, value, ci_low, ci_high, n} per group × metric (module docstring).

    ``draws``: name → [R, ...] gradient draws; ``exact``: name → the exact gradient; ``groups``:
    group → parameter names. Relative metrics and the cosine are NaN where ‖g‖ = 0 (or ‖E ĝ‖
    is estimated as 0 for the cosine).
    """
    n = next(iter(draws.values())).shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 draws, got {n}")
    generator = torch.Generator().manual_seed(seed)
    # Multinomial counts / R: the bootstrap replicates' weights on the draws, shared by all groups.
    picks = torch.randint(0, n, (replicates, n), generator=generator)
    counts = torch.zeros(replicates, n, dtype=torch.float64)
    counts.scatter_add_(1, picks, torch.ones(replicates, n, dtype=torch.float64))
    device = next(iter(draws.values())).device
    weights = {"point": torch.full((n,), 1.0 / n, dtype=torch.float64, device=device),
               "boot": (counts / n).to(device)}
    sums: dict[str, dict[str, dict[str, Tensor]]] = {}
    norms: dict[str, Tensor] = {}
    for name in sorted({name for names in groups.values() for name in names}):
        d = draws[name].reshape(n, -1).double()
        g = exact[name].reshape(-1).double().to(device)
        sums[name] = {kind: _parameter_sums(w, d, g) for kind, w in weights.items()}
        norms[name] = g.square().sum()
    rows = []
    for group, names in groups.items():
        norm_sq = sum(norms[k] for k in names)
        point, boot = (
            _raw_statistics(
                {key: sum(sums[k][kind][key] for k in names) for key in sums[names[0]][kind]},
                norm_sq,
                n,
            )
            for kind in weights
        )
        alpha = (1.0 - confidence) / 2
        for metric in METRICS:
            raw, transform = float(point[metric]), _TRANSFORMS[metric]
            finite = boot[metric][torch.isfinite(boot[metric])]
            if not math.isfinite(raw) or finite.numel() < 2:
                value = low = high = math.nan
            else:
                # Percentiles of the raw statistic, shifted by the bootstrap's own bias (a
                # replicate's debiasing leaves the resampling noise's T/R in).
                levels = torch.tensor([alpha, 1 - alpha], dtype=finite.dtype, device=finite.device)
                q_low, q_high = (float(v) for v in torch.quantile(finite, levels))
                shift = float(finite.mean()) - raw
                value = transform(raw)
                low = min(transform(q_low - shift), value)
                high = max(transform(q_high - shift), value)
            rows.append(
                {"param_group": group, "metric": metric, "value": value,
                 "ci_low": low, "ci_high": high, "n": n}
            )
    return rows


# ---------------------------------------------------------------------------- cells


def estimator_options(setting: Setting, label: str) -> dict[str, Any]:
    """The resolved options of an estimator label in a setting (a cell's configuration)."""
    given = variant_options(label, setting.estimator_options.get(base_name(label), {}))
    return resolve_options(estimator_class(label), given)


def exact_gradient(model, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Autograd of ``model.expected_loss(x, y).mean()``: name → tensor (zeros where unused)."""
    params = dict(model.named_parameters())
    with torch.enable_grad():
        loss = model.expected_loss(x, y).mean()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), grads)}


def estimator_draws(model, estimator, x: Tensor, y: Tensor, draws: int) -> tuple[dict, str]:
    """``draws`` gradients of the minibatch-mean surrogate on (x, y), fresh noise each.

    Returns (name → [draws, ...], path "vmap" or "loop"); a loss-tracking estimator is settled
    on ``SETTLE_PASSES`` forward passes of the same minibatch first (its clock kept), then frozen.
    """
    if estimator.tracks_losses:
        clock = estimator.steps.clone()
        with torch.no_grad():
            for _ in range(SETTLE_PASSES):
                estimator.observe(model(x, y, estimator))
        estimator.steps.copy_(clock)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def surrogate(p: dict[str, Tensor]) -> Tensor:
        return estimator.surrogate(functional_call(model, p, (x, y, estimator))).mean()

    try:
        return gradient_draws(surrogate, params, draws, chunk_size=MAX_CHUNK_DRAWS), "vmap"
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as error:
        warnings.warn(
            f"vmap failed for estimator {estimator.label!r} ({str(error).splitlines()[0]}); "
            "drawing in a Python loop instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return gradient_draws(surrogate, params, draws, vectorize=False), "loop"


def _bias_rows(
    setting: Setting,
    label: str,
    reference: str,
    batch_size: int,
    draws: int,
    context: Context,
    checkpoint_state: dict[str, Any],
) -> list[dict[str, Any]]:
    """The rows of one cell: estimator ``label`` at one checkpoint, on its fixed minibatch."""
    state = as_checkpoint(checkpoint_state)
    dataset, device = context.dataset, context.device
    model = build_model(setting, dataset, device)
    model.load_state_dict(state.model_state)
    model.double()
    estimator = build_estimator(setting, label, dataset, device)
    if label == reference:
        estimator.load_state_dict(state.estimator_state)
    else:
        estimator.steps.fill_(state.steps)
    estimator.double()
    groups = model.parameter_groups()
    common = {"batch_size": batch_size, "epoch": state.epoch, DIGEST_COLUMN: state.digest}
    generator = torch.Generator(device=dataset.device)
    generator.manual_seed(stable_seed(setting.seed, EXPERIMENT, "minibatch", state.epoch))
    x, y = dataset.sample_batch("train", batch_size, generator)
    x = x.to(device=device, dtype=torch.float64)
    y = y.to(device)
    seed = stable_seed(setting.seed, EXPERIMENT, label, state.epoch)
    torch.manual_seed(seed)
    sampled, path = (None, "") if state.diverged else estimator_draws(model, estimator, x, y, draws)
    if sampled is None or not all(bool(torch.isfinite(g).all()) for g in sampled.values()):
        return [
            {"param_group": group, "metric": metric, "value": math.nan, "ci_low": math.nan,
             "ci_high": math.nan, "n": draws, "status": STATUS_DIVERGED, "draw_path": path,
             **common}
            for group in groups
            for metric in METRICS
        ]
    exact = exact_gradient(model, x, y)
    rows = bias_statistics(sampled, exact, groups, seed=seed % 2**31)
    return [row | {"status": STATUS_OK, "draw_path": path, **common} for row in rows]


def bias_tasks(
    setting: Setting,
    estimators: Sequence[str],
    at_epochs: Sequence[int],
    dataset: Dataset,
    device: torch.device,
    root: str | os.PathLike[str],
    profile: str,
    *,
    draws: int,
    batch_size: int,
    training: TrainingConfig,
    resources: Resources = Resources(),
) -> list[Task]:
    """The tasks of :func:`measure_bias`: the reference checkpoints (stored under ``root``) and
    one cell per estimator × epoch needing its checkpoint."""
    if draws < 2:
        raise ValueError(f"draws must be at least 2, got {draws}")
    if not 1 <= batch_size <= len(dataset.train):
        raise ValueError(
            f"batch size must be in 1..{len(dataset.train)} (training examples), got {batch_size}"
        )
    reference = get_model_class(setting.model).reference_estimator
    checkpoints = checkpoint_tasks(setting, dataset, device, reference, training, at_epochs, root)
    trained = checkpoint_config(setting, dataset, reference, training, device)
    base = {
        **dataset_config(dataset),
        "model_options": trained["model_options"],
        "reference_estimator": reference,
        "reference_options": trained["reference_options"],
        "training": asdict(training),
        "draws": draws,
        "batch_size": batch_size,
        "bootstrap_replicates": BOOTSTRAP_REPLICATES,
        "confidence": CONFIDENCE,
        "seed": setting.seed,
        "device": device.type,
        "profile": profile,
        "gradient": CONVENTION,
    }
    tasks: list[Task] = list(checkpoints.values())
    for epoch in at_epochs:
        for label in estimators:
            config = base | {"estimator_options": estimator_options(setting, label), "epoch": epoch}
            cell = Cell(EXPERIMENT, setting.model, label, config, required=(DIGEST_COLUMN,))
            run = partial(_bias_rows, setting, label, reference, batch_size, draws)
            tasks.append(Task(
                cell_key(cell), run, (checkpoints[epoch].key,), cell, resources,
                at_intermediate=True,
                describe=f"bias {setting.model} / {label} / epoch {epoch} / seed {setting.seed}",
                work=Work(setting, label, batch_size, DOUBLE_PRECISION_COST * draws),
            ))
    return tasks


def measure_bias(
    setting: Setting,
    estimators: Sequence[str],
    at_epochs: Sequence[int],
    dataset: Dataset,
    device: torch.device,
    store: ResultStore,
    provenance: Provenance,
    force: bool = False,
    *,
    draws: int,
    batch_size: int,
    training: TrainingConfig,
) -> pd.DataFrame:
    """Bias rows of every estimator label × checkpoint epoch (tidy, stamped; module docstring),
    run here (the tasks of :func:`bias_tasks`).

    ``setting.model_options`` should be the model's ``oracle_options`` (the oracle raises
    ValueError otherwise). The model is trained with its reference estimator to each epoch
    of ``at_epochs``; there one fixed minibatch of ``batch_size`` training examples (seeded by the
    setting's seed and the epoch, the same for every estimator) gets ``draws`` draws per
    estimator. One cell per estimator × epoch, resumed from ``store`` unless ``force``.
    """
    tasks = bias_tasks(
        setting, estimators, at_epochs, dataset, device, store.root, provenance.profile,
        draws=draws, batch_size=batch_size, training=training,
    )
    return execute_here(tasks, store, provenance, Context(dataset, device, store.root),
                        force=force, describe=f"bias {setting.model}")
