"""Variance of minibatch gradient estimates at fixed parameters (Kingma, Salimans & Welling 2015).

Convention: a draw ĝ is the gradient of the minibatch's *mean* per-example surrogate,
ĝ = ∇_θ (1/M) Σ_m s_m, with a fresh minibatch of M distinct training examples and fresh noise,
so noise independent across examples gives Var ĝ ∝ 1/M. (Kingma et al.'s Table 1 does not say
whether it sums or averages over the minibatch; summing multiplies every variance by M².)

Design. At a checkpoint (the model trained with a reference estimator, see
:mod:`gradbench.measure.checkpoints`), each estimator draws R = B·K gradients: B minibatches, K
noise draws on each, which gives the law-of-total-variance split (noise variance
E_B[Var_ε(ĝ|B)], data variance Var_B(E_ε[ĝ|B]); see :mod:`gradbench.measure.variance_stats`).
The B index sets [B, M] are drawn up front on the data's device; each chunk of minibatches is
gathered and binarized once (so a dynamic binarization is part of the data, not the noise),
repeated K times and evaluated by one ``torch.func.vmap`` of ``torch.func.grad`` over
``functional_call`` with ``randomness="different"`` (every draw its own noise). A plain loop is
the fallback where vmap fails; rows record which path ran (``draw_path``). Chunks are sized from
a probe of the memory autograd saves for one draw.

Estimator state: an estimator's clock and run plan are set to the checkpoint's (annealed
temperatures match that point of training; each cell records them as ``schedule`` rows); then ``settle_steps`` forward passes feed
``observe`` (an EMA baseline settles at these parameters) and the estimator is frozen, so the
kept draws are independent. The clock is restored after settling. The reference estimator
itself resumes its trained state (a learned baseline included).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from functools import partial
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from gradbench.catalogue import check_applicable
from gradbench.data import Dataset
from gradbench.estimators.base import Estimator
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.execution.in_process import execute_here
from gradbench.execution.task import Context, Resources, Task, Work, cell_key
from gradbench.experiments.metrics import GRAD_VARIANCE, GRAD_VARIANCE_DATA, GRAD_VARIANCE_NOISE
from gradbench.measure.checkpoints import (
    TrainingConfig,
    as_checkpoint,
    checkpoint_config,
    checkpoint_tasks,
    stable_seed,
)
from gradbench.measure.training import dataset_config
from gradbench.measure.variance_stats import (
    BOOTSTRAP_REPLICATES,
    CONFIDENCE,
    METRICS,
    SLOPE_METRIC,
    DrawSummary,
    coverage_checked,
    log_variance_slope,
    summary_statistics,
)
from gradbench.models.base import StochasticModel, get_model_class
from gradbench.results import STATUS_DIVERGED, STATUS_OK, Cell, Provenance, ResultStore

EXPERIMENT = "variance"
DEFAULT_BATCH_SIZES = (1, 10, 100, 1000)
DEFAULT_DRAWS = 200
DEFAULT_NOISE_DRAWS = 2
SETTLE_STEPS = 50
"""Forward passes that settle an estimator's state (an EMA of decay 0.9 keeps 0.9⁵⁰ ≈ 0.5 % of its start)."""
SUMMARY_MEMORY_BYTES = 4 * 2**30
"""Largest per-minibatch summary (:func:`gradient_summary`) a variance cell keeps in memory. A
larger one lives on the CPU in a memory-mapped temporary file (in ``$TMPDIR``, removed at once:
the mapping keeps it until the cell ends), which the operating system pages in and out: the
same numbers in a bounded resident memory. The paper's weight-noise MLP (5.8 M parameters, μ and
the noise logit of every weight) at 1000 draws needs 2 × 500 × 5.8 M floats, 23 GB: in memory it
was killed on a 24 GB machine."""
DRAW_MEMORY_BYTES = 128 * 2**20
"""Memory budget of one chunk of draws (the probe's estimate is about half the true peak): small
chunks keep elementwise buffers in cache, faster on a CPU than one large chunk."""
MAX_CHUNK_DRAWS = 1024
GRADIENT_CONVENTION = "gradient of the minibatch mean of the per-example loss"
DIGEST_COLUMN = "checkpoint"
"""Where a variance row stores the digest of the parameters it was measured at
(``Checkpoint.digest``): a stored cell without it counts as missing (``Cell.required``), since
its figures cannot be put beside others at one set of parameters."""

Params = dict[str, Tensor]


def minibatch_indices(
    n_examples: int, batch_size: int, count: int, generator: torch.Generator
) -> Tensor:
    """``count`` index sets [count, M] of M distinct examples each, drawn on the generator's device.

    Row r is the top-M of fresh uniform keys, a uniformly random M-subset (as a training epoch's
    minibatches are: no example twice in one minibatch).
    """
    if not 1 <= batch_size <= n_examples:
        raise ValueError(
            f"batch size must be in 1..{n_examples} (training examples), got {batch_size}"
        )
    block = max(1, 2**24 // n_examples)
    rows = []
    for start in range(0, count, block):
        size = min(block, count - start)
        keys = torch.rand(size, n_examples, generator=generator, device=generator.device)
        rows.append(keys.topk(batch_size, dim=1).indices)
    return torch.cat(rows)


def settle_estimator(
    model: StochasticModel,
    estimator: Estimator,
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    steps: int = SETTLE_STEPS,
) -> None:
    """Feed ``steps`` forward passes (not kept) to ``estimator.observe``; keep its clock.

    Only estimators that track losses (a moving-average baseline) need it; others return at once.
    """
    if not estimator.tracks_losses:
        return
    clock = estimator.steps.clone()
    with torch.no_grad():
        for _ in range(steps):
            x, y = dataset.sample_batch("train", batch_size, generator)
            estimator.observe(model(x, y, estimator))
    estimator.steps.copy_(clock)


def draw_memory_bytes(model: StochasticModel, estimator: Estimator, x: Tensor, y: Tensor) -> int:
    """Estimated bytes of one draw on (x, y): 2 × what autograd saves + 3 × the parameters.

    The saved tensors are counted once per storage, leaving out the parameters themselves
    (shared by every draw under vmap).
    """
    params = dict(model.named_parameters())
    shared = {p.untyped_storage().data_ptr() for p in params.values()}
    saved: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in shared:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        estimator.surrogate(model(x, y, estimator)).mean()
    parameter_bytes = sum(p.numel() * p.element_size() for p in params.values())
    return 2 * sum(saved.values()) + 3 * parameter_bytes


def _chunk_draws(
    model: StochasticModel, estimator: Estimator, dataset: Dataset, batch_size: int
) -> int:
    x, y = dataset.sample_batch(
        "train", batch_size, torch.Generator(device=dataset.device).manual_seed(0)
    )
    per_draw = draw_memory_bytes(model, estimator, x, y)
    return int(min(MAX_CHUNK_DRAWS, max(1, DRAW_MEMORY_BYTES // per_draw)))


def _loop_gradients(
    loss: Callable[[Params, Tensor, Tensor], Tensor], params: Params, x: Tensor, y: Tensor
) -> Params:
    """Gradients of ``loss`` for each minibatch x[i], y[i] in a plain loop: name → [n, ...]."""
    draws: dict[str, list[Tensor]] = {k: [] for k in params}
    for i in range(x.shape[0]):
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        grads = torch.autograd.grad(
            loss(leaves, x[i], y[i]), list(leaves.values()), allow_unused=True
        )
        for (k, v), g in zip(leaves.items(), grads):
            draws[k].append(torch.zeros_like(v) if g is None else g)
    return {k: torch.stack(v) for k, v in draws.items()}


def _vmapped_gradients(
    batched: Callable[..., Params], params: Params, x: Tensor, y: Tensor
) -> Params:
    """``batched`` over the leading dimension of x, y; halves the chunk on a GPU out-of-memory."""
    try:
        return batched(params, x, y)
    except torch.OutOfMemoryError:
        if x.shape[0] == 1:
            raise
    torch.cuda.empty_cache()
    half = x.shape[0] // 2
    first = _vmapped_gradients(batched, params, x[:half], y[:half])
    second = _vmapped_gradients(batched, params, x[half:], y[half:])
    return {k: torch.cat([first[k], second[k]]) for k in params}


def _gradient_chunks(
    model: StochasticModel,
    estimator: Estimator,
    dataset: Dataset,
    index: Tensor,
    noise_draws: int,
    generator: torch.Generator,
    vectorize: bool,
    chunk_size: int | None,
) -> Iterator[tuple[Params, str]]:
    """Draws for the minibatches ``index`` [B, M], K = ``noise_draws`` each, chunk by chunk.

    Yields (name → [c·K, ...] draws ordered minibatch-major, path "vmap" or "loop").
    """
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: Params, x: Tensor, y: Tensor) -> Tensor:
        return estimator.surrogate(functional_call(model, p, (x, y, estimator))).mean()

    batched = vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")
    draws_per_chunk = chunk_size or _chunk_draws(model, estimator, dataset, index.shape[1])
    minibatches_per_chunk = max(1, draws_per_chunk // noise_draws)
    use_vmap = vectorize
    for start in range(0, index.shape[0], minibatches_per_chunk):
        rows = index[start : start + minibatches_per_chunk]
        x, y = dataset._minibatch("train", rows, generator)  # [c, M, D], [c, M]
        x = x.repeat_interleave(noise_draws, dim=0)  # [c·K, M, D]
        y = y.repeat_interleave(noise_draws, dim=0)
        if use_vmap:
            try:
                draws = _vmapped_gradients(batched, params, x, y)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as error:
                warnings.warn(
                    f"vmap failed for estimator {estimator.name!r} ({str(error).splitlines()[0]}); "
                    "drawing in a Python loop instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
                use_vmap = False
            else:
                yield draws, "vmap"
                continue
        yield _loop_gradients(loss, params, x, y), "loop"


def _check_layout(draws: int, noise_draws: int, minimum: int = 2) -> int:
    """B = draws / K minibatches; ValueError unless K divides draws and B >= ``minimum``."""
    if noise_draws < 1:
        raise ValueError(f"noise draws must be positive, got {noise_draws}")
    if draws % noise_draws or draws // noise_draws < minimum:
        raise ValueError(
            f"draws ({draws}) must be a multiple of the noise draws per minibatch ({noise_draws}) "
            f"covering at least {minimum} minibatch(es)"
        )
    return draws // noise_draws


def gradient_samples(
    model: StochasticModel,
    estimator: Estimator,
    dataset: Dataset,
    batch_size: int,
    draws: int,
    generator: torch.Generator,
    *,
    noise_draws: int = 1,
    vectorize: bool = True,
    chunk_size: int | None = None,
    settle_steps: int = SETTLE_STEPS,
) -> dict[str, Tensor]:
    """``draws`` minibatch gradients of the model's parameters: name → [draws, *shape].

    ĝ = ∇_θ (1/M) Σ_m surrogate_m on M = ``batch_size`` training examples. With ``noise_draws``
    K > 1, draws come as B = draws / K minibatches of K noise draws each, minibatch-major (draw
    b·K + k). ``generator`` (on the data's device) draws the minibatches and the binarization;
    the noise comes from torch's global RNG (vmap's ``randomness="different"`` needs it), so seed
    both. The estimator is settled first (:func:`settle_estimator`), then frozen.
    """
    minibatches = _check_layout(draws, noise_draws, minimum=1)
    settle_estimator(model, estimator, dataset, batch_size, generator, settle_steps)
    index = minibatch_indices(len(dataset.train), batch_size, minibatches, generator)
    chunks = [
        draws_
        for draws_, _ in _gradient_chunks(
            model, estimator, dataset, index, noise_draws, generator, vectorize, chunk_size
        )
    ]
    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}


def gradient_summary(
    model: StochasticModel,
    estimator: Estimator,
    dataset: Dataset,
    batch_size: int,
    draws: int,
    generator: torch.Generator,
    *,
    noise_draws: int = DEFAULT_NOISE_DRAWS,
    vectorize: bool = True,
    chunk_size: int | None = None,
    settle_steps: int = SETTLE_STEPS,
) -> tuple[DrawSummary | None, str]:
    """Like :func:`gradient_samples`, but keeps only the per-minibatch summary (B·P, not R·P).

    Returns (summary, path) where path is "vmap", "loop" or "vmap+loop"; the summary is None
    when a draw was NaN or infinite (the estimator diverged; drawing stops there).
    """
    minibatches = _check_layout(draws, noise_draws, minimum=2)
    settle_estimator(model, estimator, dataset, batch_size, generator, settle_steps)
    index = minibatch_indices(len(dataset.train), batch_size, minibatches, generator)
    params = dict(model.named_parameters())
    # Filled in place chunk by chunk: the summary is the only [B, P] memory held.
    mapped = _table_bytes(model, draws, noise_draws) > SUMMARY_MEMORY_BYTES
    summary = DrawSummary(
        {k: _summary_table(minibatches, p, mapped) for k, p in params.items()},
        {k: _summary_table(minibatches, p, mapped) for k, p in params.items()}
        if noise_draws > 1
        else None,
        noise_draws,
    )
    paths: set[str] = set()
    start = 0
    for chunk, path in _gradient_chunks(
        model, estimator, dataset, index, noise_draws, generator, vectorize, chunk_size
    ):
        paths.add(path)
        if not all(bool(torch.isfinite(g).all()) for g in chunk.values()):
            return None, "+".join(sorted(paths, reverse=True))
        part = DrawSummary.from_draws(chunk, noise_draws)
        stop = start + part.minibatches
        for name in params:
            summary.means[name][start:stop] = part.means[name]
            if summary.within is not None:
                summary.within[name][start:stop] = part.within[name]
        start = stop
    return summary, "+".join(sorted(paths, reverse=True))


def _metrics(noise_draws: int) -> list[str]:
    return [
        m
        for m in METRICS
        if noise_draws > 1 or m not in (GRAD_VARIANCE_NOISE, GRAD_VARIANCE_DATA)
    ]


def _variance_rows(
    setting: Setting,
    name: str,
    reference: str,
    batch_size: int,
    draws: int,
    noise_draws: int,
    seed: int,
    replicates: int,
    confidence: float,
    vectorize: bool,
    context: Context,
    checkpoint_state: dict[str, Any],
) -> list[dict[str, Any]]:
    """The rows of one cell: estimator ``name``, minibatch size M, the checkpoint's parameters."""
    state = as_checkpoint(checkpoint_state)
    dataset, device = context.dataset, context.device
    model = build_model(setting, dataset, device)
    model.load_state_dict(state.model_state)
    estimator = build_estimator(setting, name, dataset, device)
    if setting.same_estimator(name, reference):
        estimator.load_state_dict(state.estimator_state)
    else:
        estimator.steps.fill_(state.steps)
        for clock in ("planned_steps", "steps_per_epoch"):
            getattr(estimator, clock).copy_(state.estimator_state[clock])
    torch.manual_seed(seed)
    generator = torch.Generator(device=dataset.device).manual_seed(seed)
    summary, path = gradient_summary(
        model,
        estimator,
        dataset,
        batch_size,
        draws,
        generator,
        noise_draws=noise_draws,
        vectorize=vectorize,
    )
    groups = model.parameter_groups()
    common = {"batch_size": batch_size, "epoch": state.epoch, "draw_path": path,
              DIGEST_COLUMN: state.digest}
    schedule = [
        {"param_group": "schedule", "metric": key, "value": value, "n": 1, "status": STATUS_OK}
        | common
        for key, value in estimator.schedule().items()
    ]
    if summary is None:
        return [
            {
                "param_group": group,
                "metric": metric,
                "value": math.nan,
                "ci_low": math.nan,
                "ci_high": math.nan,
                "n": draws,
                "status": STATUS_DIVERGED,
                "coverage_checked": coverage_checked(draws // noise_draws),
                **common,
            }
            for group in groups
            for metric in _metrics(noise_draws)
        ] + schedule
    rows = summary_statistics(
        summary, groups, replicates=replicates, confidence=confidence, seed=seed, device=device
    )
    return [row | {"status": STATUS_OK, **common} for row in rows] + schedule


def slope_rows(frame: pd.DataFrame, confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """``log_variance_slope`` rows, one per group of one estimator's per-batch-size rows.

    Fitted on the finite ``grad_variance`` values; status is "diverged" when any batch size
    diverged.
    """
    variance = frame[frame["metric"] == GRAD_VARIANCE]
    rows = []
    for (group, epoch), part in variance.groupby(["param_group", "epoch"], sort=False):
        ok = part[part["status"] == STATUS_OK]
        fit = log_variance_slope(
            ok["batch_size"].astype(int).tolist(), ok["value"].astype(float).tolist(), confidence
        )
        rows.append(
            {
                "param_group": group,
                "batch_size": math.nan,
                "epoch": int(epoch),
                "metric": SLOPE_METRIC,
                **fit,
                "status": STATUS_OK if len(ok) == len(part) else STATUS_DIVERGED,
            }
        )
    return rows


def _table_bytes(model: StochasticModel, draws: int, noise_draws: int) -> int:
    """Bytes of :func:`gradient_summary`'s tables: the per-minibatch means (and, with K > 1
    noise draws, within-minibatch sums of squares), B = draws / K rows of every parameter."""
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    return (2 if noise_draws > 1 else 1) * (draws // noise_draws) * parameters


def _summary_table(minibatches: int, like: Tensor, mapped: bool) -> Tensor:
    """An empty [B, P] table for parameter ``like``: beside it, or (``mapped``) on the CPU in a
    memory-mapped temporary file (:data:`SUMMARY_MEMORY_BYTES`)."""
    if not mapped:
        return like.new_empty(minibatches, like.numel())
    count = minibatches * like.numel()
    with tempfile.NamedTemporaryFile(prefix="gradbench-summary-") as handle:
        handle.truncate(count * like.element_size())
        table = torch.from_file(handle.name, shared=True, size=count, dtype=like.dtype)
    return table.view(minibatches, like.numel())


def summary_bytes(model: StochasticModel, draws: int, noise_draws: int) -> int:
    """Memory a variance cell holds resident: its summary's tables (up to
    :data:`SUMMARY_MEMORY_BYTES`: a larger summary is memory-mapped) and one chunk of draws
    (:data:`DRAW_MEMORY_BYTES`)."""
    held = _table_bytes(model, draws, noise_draws)
    return min(held, SUMMARY_MEMORY_BYTES) + DRAW_MEMORY_BYTES


def variance_tasks(
    setting: Setting,
    estimators: Sequence[str],
    batch_sizes: Sequence[int],
    draws: int,
    at_epochs: Sequence[int],
    dataset: Dataset,
    device: torch.device,
    root: str | os.PathLike[str],
    profile: str,
    *,
    noise_draws: int = DEFAULT_NOISE_DRAWS,
    reference_estimator: str | None = None,
    training: TrainingConfig | None = None,
    replicates: int = BOOTSTRAP_REPLICATES,
    confidence: float = CONFIDENCE,
    vectorize: bool = True,
    resources: Resources = Resources(),
) -> list[Task]:
    """The tasks of :func:`measure_variance`: the reference checkpoints (stored under ``root``),
    one cell per estimator × batch size × epoch needing its checkpoint, and one derived
    ``log_variance_slope`` cell per estimator × epoch needing that estimator's cells."""
    training = training or TrainingConfig()
    reference = reference_estimator or get_model_class(setting.model).reference_estimator
    for name in [*estimators, reference]:
        check_applicable(name, setting.model)
    _check_layout(draws, noise_draws, minimum=2)
    n_train = len(dataset.train)
    for size in batch_sizes:
        if not 1 <= size <= n_train:
            raise ValueError(f"batch size must be in 1..{n_train} (training examples), got {size}")
    checkpoints = checkpoint_tasks(setting, dataset, device, reference, training, at_epochs, root)
    with torch.random.fork_rng(devices=[]):  # building the model seeds torch: keep the RNG
        model = build_model(setting, dataset, torch.device("cpu"))
    resources = replace(resources, memory_bytes=summary_bytes(model, draws, noise_draws))
    trained = checkpoint_config(setting, dataset, reference, training, device)
    base = {
        **dataset_config(dataset),
        "model_options": trained["model_options"],
        "reference_estimator": reference,
        "reference_options": trained["reference_options"],
        "training": asdict(training),
        "draws": draws,
        "noise_draws": noise_draws,
        "bootstrap_replicates": replicates,
        "confidence": confidence,
        "seed": setting.seed,
        "device": device.type,
        "profile": profile,
        "vectorize": vectorize,
        "gradient": GRADIENT_CONVENTION,
    }
    tasks: list[Task] = list(checkpoints.values())
    for epoch in at_epochs:
        for name in estimators:
            options = setting.resolved_options(name)
            per_size = []
            for size in batch_sizes:
                config = base | {"estimator_options": options, "epoch": epoch, "batch_size": size}
                cell = Cell(EXPERIMENT, setting.model, name, config, required=(DIGEST_COLUMN,))
                run = partial(
                    _variance_rows, setting, name, reference, size, draws, noise_draws,
                    stable_seed(setting.seed, name, size, epoch), replicates, confidence,
                    vectorize,
                )
                per_size.append(Task(
                    cell_key(cell), run, (checkpoints[epoch].key,), cell, resources,
                    at_intermediate=True,
                    describe=f"variance {setting.model} / {name} / M={size} / epoch {epoch} / "
                    f"seed {setting.seed}",
                    work=Work(setting, name, size, draws),
                ))
            config = base | {
                "estimator_options": options,
                "epoch": epoch,
                "batch_sizes": list(batch_sizes),
                "metric": SLOPE_METRIC,
            }
            cell = Cell(EXPERIMENT, setting.model, name, config)
            tasks += per_size
            tasks.append(Task(
                cell_key(cell), partial(_slope_task, confidence), tuple(t.key for t in per_size),
                cell, on_driver=True, derived=True,
                describe=f"variance slope {setting.model} / {name} / epoch {epoch}",
            ))
    return tasks


def _slope_task(confidence: float, context: Context, *sizes: pd.DataFrame) -> list[dict[str, Any]]:
    return slope_rows(pd.concat(sizes, ignore_index=True), confidence)


def measure_variance(
    setting: Setting,
    estimators: Sequence[str],
    batch_sizes: Sequence[int],
    draws: int,
    at_epochs: Sequence[int],
    dataset: Dataset,
    device: torch.device,
    store: ResultStore,
    provenance: Provenance,
    force: bool = False,
    *,
    noise_draws: int = DEFAULT_NOISE_DRAWS,
    reference_estimator: str | None = None,
    training: TrainingConfig | None = None,
    replicates: int = BOOTSTRAP_REPLICATES,
    confidence: float = CONFIDENCE,
    vectorize: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """Gradient-variance rows of every estimator × batch size × checkpoint epoch (tidy, stamped),
    run here (the tasks of :func:`variance_tasks`).

    The model is trained with ``reference_estimator`` (default: the model's own) to each epoch
    of ``at_epochs``; there each estimator draws ``draws`` = B·K gradients per minibatch size
    (B minibatches × K = ``noise_draws``). One cell per estimator × batch size × epoch, plus one
    ``log_variance_slope`` cell per estimator × epoch, is stored in ``store`` (resumed unless
    ``force``). Rows: ``grad_variance``, ``grad_variance_trace``, ``grad_variance_noise``,
    ``grad_variance_data`` (K > 1), ``snr_squared`` and ``snr`` per parameter group, with
    intervals over minibatches at ``confidence``, a ``draw_path`` column and ``checkpoint``, the
    digest of the parameters they were measured at (``Checkpoint.digest``).
    """
    tasks = variance_tasks(
        setting, estimators, batch_sizes, draws, at_epochs, dataset, device, store.root,
        provenance.profile, noise_draws=noise_draws, reference_estimator=reference_estimator,
        training=training, replicates=replicates, confidence=confidence, vectorize=vectorize,
    )
    context = Context(dataset, device, store.root, progress)
    rows = execute_here(tasks, store, provenance, context, force=force,
                        describe=f"variance {setting.model}")
    rows["batch_size"] = rows["batch_size"].astype("Int64")  # empty for the slope rows
    return rows
