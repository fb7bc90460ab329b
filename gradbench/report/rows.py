"""Stored rows as the reports read them: typed and de-duplicated, selected, looked up per seed.

The rows are the tidy rows of :mod:`gradbench.results`; one *cell* is an experiment × model ×
estimator × seed. Nothing here aggregates over seeds (:mod:`gradbench.report.aggregate` does)
or knows a table: :func:`outcomes` answers "what did each seed measure for this quantity",
with a cell's divergence or failure in place of a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradbench.estimators import ESTIMATORS
from gradbench.models.base import get_model_class
from gradbench.options import resolve_options
from gradbench.profiles import CUSTOM_SUFFIX, PROFILES
from gradbench.report import paper
from gradbench.results import (
    COLUMNS,
    LOST_SCOPE,
    STATUS_DIVERGED,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    UNFINISHED,
    row_options,
)

CATALOGUE = "catalogue"
VARIANCE = "variance"
TIMING = "timing"
TRAINING = "train"
BIAS = "bias"
"""Experiment names of the stored cells (gradbench.catalogue, gradbench.measure.*)."""

DIVERGED = STATUS_DIVERGED
"""What a table shows instead of a number for a cell whose gradients or losses were NaN or inf."""
FAILED = STATUS_FAILED
"""What a table shows instead of a number for a cell whose task failed after its retries."""
SKIPPED = STATUS_SKIPPED
"""What a table shows instead of a number for a cell skipped as too long for its device."""

UNKNOWN_SEED = -1
"""The seed of rows stored without one."""

KEYS = ["experiment", "model", "estimator", "metric", "param_group", "batch_size", "epoch", "seed"]
"""What one stored quantity is: two rows with the same keys measured the same thing."""

SPLIT_ORDER = ("train", "valid", "test")


@dataclass(frozen=True)
class Outcome:
    """What one seed gave for one quantity: ``ok`` with its value and stored interval (NaN where
    none), or ``diverged`` / ``failed`` without a number."""

    status: str
    value: float = math.nan
    low: float = math.nan
    high: float = math.nan


Outcomes = dict[int, Outcome]
"""One quantity's outcome per seed."""


def prepare_rows(frame: pd.DataFrame, profile: str | None = None) -> pd.DataFrame:
    """The rows reports read: typed, one row per measured quantity and seed, in a stable order.

    ``profile`` keeps that profile's rows; without it, when rows of several profiles are stored,
    those of the profile whose newest row is newest are kept, a named profile's before any
    ``NAME+custom`` run's (a run with one option changed, stored beside the profile's rows). Where one quantity (experiment,
    model, estimator, metric, group, batch size, epoch, seed) was stored under several
    configurations, the most recently created row is kept (ties broken by configuration hash).
    """
    rows = frame.copy()
    for column in COLUMNS:
        if column not in rows:
            rows[column] = None
    for column in ("batch_size", "epoch", "value", "ci_low", "ci_high", "n", "steps_timed", "seed"):
        rows[column] = pd.to_numeric(rows[column], errors="coerce")
    for column in ("experiment", "model", "estimator", "param_group", "metric"):
        rows[column] = _texts(rows[column])
    for column in ("status", "created_at", "profile", "config_hash", "dataset", "binarization",
                   "model_options", "device", "device_name", "torch_version", "git_commit",
                   "code_version", "estimates_elbo_gradient", "contended", "coverage_checked",
                   "error"):
        if column not in rows:
            rows[column] = None
        rows[column] = _texts(rows[column]).fillna("")
    rows.loc[rows["status"] == "", "status"] = STATUS_OK
    if rows.empty:
        return rows.reset_index(drop=True)
    if profile is not None:
        rows = rows[rows["profile"] == profile]
    elif rows["profile"].nunique() > 1:
        named = ~rows["profile"].str.endswith(CUSTOM_SUFFIX)
        rows = rows[named] if named.any() else rows
        newest = rows.groupby("profile")["created_at"].max().reset_index()
        chosen = newest.sort_values(["created_at", "profile"], kind="stable")["profile"].iloc[-1]
        rows = rows[rows["profile"] == chosen]
    rows = rows.sort_values(KEYS + ["created_at", "config_hash"], kind="stable",
                            na_position="first")
    rows = rows.drop_duplicates(subset=KEYS, keep="last")
    return rows.reset_index(drop=True)


def _texts(column: pd.Series) -> pd.Series:
    """A column as Python strings, None where missing (plain objects: fast to compare)."""
    text = column.astype("string")
    return text.astype(object).where(text.notna(), None)


def networks(rows: pd.DataFrame, model: str) -> list[dict[str, Any] | None]:
    """The networks ``model``'s rows measured, one per (profile, stored options): the options
    the rows stored (``model_options``), else, for rows stored before that column, the named
    profile's options resolved; None where neither says (an older run of modified settings)."""
    found = []
    cells = rows[rows["model"] == model]
    for (profile, stored), _ in cells.groupby(["profile", "model_options"], sort=True):
        options = row_options(stored)
        if options is None and profile in PROFILES:
            options = resolve_options(get_model_class(model), PROFILES[profile].options_for(model))
        found.append(options)
    return found


def select(rows: pd.DataFrame, **criteria: object) -> pd.DataFrame:
    """Rows whose columns equal the given values (numbers compared as numbers; None: missing)."""
    mask = np.ones(len(rows), dtype=bool)
    for column, wanted in criteria.items():
        values = rows[column].to_numpy()
        mask &= pd.isna(values) if wanted is None else values == wanted
    return rows[mask]


def seed_of(rows: pd.DataFrame) -> pd.Series:
    """Each row's seed as an int (:data:`UNKNOWN_SEED` where none was stored)."""
    return rows["seed"].fillna(UNKNOWN_SEED).astype(int)


def seeds_of(rows: pd.DataFrame) -> list[int]:
    """The stored seeds of the rows, sorted (rows without a seed are left out)."""
    return sorted({int(s) for s in rows["seed"].dropna()})


def is_failed(rows: pd.DataFrame) -> bool:
    """True if any row is a failed or skipped task's."""
    return unfinished(rows) is not None


def unfinished(rows: pd.DataFrame) -> str | None:
    """``failed`` or ``skipped`` when a row says the cell's task failed or was skipped (failed
    first), else None."""
    for status in (FAILED, SKIPPED):
        if (rows["status"] == status).any():
            return status
    return None


def is_diverged(rows: pd.DataFrame) -> bool:
    """True if any row is marked diverged or holds an infinite value (NaN alone: not measured)."""
    if rows.empty:
        return False
    infinite = np.isinf(rows["value"].to_numpy(float)).any()
    return bool((rows["status"] == STATUS_DIVERGED).any() or infinite)


def lost_for(rows: pd.DataFrame, **criteria: object) -> pd.DataFrame:
    """The failed or skipped rows that speak for the quantity ``criteria`` select: those whose cell
    fixed each :data:`~gradbench.results.LOST_SCOPE` column asked for to the wanted value or left
    it open (a skipped variance cell at M = 1000 loses M = 1000 only; a failed training cell,
    every epoch)."""
    lost = rows[rows["status"].isin(UNFINISHED)]
    for column in LOST_SCOPE:
        wanted = criteria.get(column)
        if wanted is not None and not lost.empty:
            values = lost[column].to_numpy(float)
            lost = lost[np.isnan(values) | (values == float(wanted))]
    return lost


def outcome(cell: pd.DataFrame, **criteria: object) -> Outcome | None:
    """One seed's outcome for the quantity ``criteria`` select among that seed's ``cell`` rows.

    A failed or skipped cell is ``failed`` or ``skipped`` for whatever it would have measured
    (:func:`lost_for`); where no row matches but the cell diverged (training stopped before this
    checkpoint) the outcome is ``diverged``; None: not measured.
    """
    if (status := unfinished(lost_for(cell, **criteria))) is not None:
        return Outcome(status)
    match = select(cell, **criteria)
    if match.empty:
        return Outcome(DIVERGED) if is_diverged(cell) else None
    if is_diverged(match):
        return Outcome(DIVERGED)
    last = match.iloc[-1]
    if not math.isfinite(float(last["value"])):
        return None
    return Outcome(STATUS_OK, float(last["value"]), float(last["ci_low"]), float(last["ci_high"]))


def outcomes(
    rows: pd.DataFrame, experiment: str, model: str, estimator: str, **criteria: object
) -> Outcomes:
    """Per seed, the outcome of one quantity of an experiment × model × estimator cell (each
    seed as :func:`outcome` says, with one selection for all seeds)."""
    cell = select(rows, experiment=experiment, model=model, estimator=estimator)
    if cell.empty:
        return {}
    seeds = seed_of(cell).to_numpy()
    lost_rows = lost_for(cell, **criteria)
    lost = {int(seed): status for status in (SKIPPED, FAILED)
            for seed in seed_of(lost_rows).to_numpy()[(lost_rows["status"] == status).to_numpy()]}
    broken = (cell["status"] == STATUS_DIVERGED).to_numpy() | np.isinf(cell["value"].to_numpy(float))
    diverged = set(seeds[broken])
    match = select(cell, **criteria)
    at = seed_of(match).to_numpy()
    bad = (match["status"] == STATUS_DIVERGED).to_numpy() | np.isinf(match["value"].to_numpy(float))
    values, lows, highs = match[["value", "ci_low", "ci_high"]].to_numpy(float).T
    found: Outcomes = {}
    for seed in sorted(set(seeds)):
        rows_at = np.flatnonzero(at == seed)
        if int(seed) in lost:
            found[int(seed)] = Outcome(lost[int(seed)])
        elif rows_at.size == 0:
            if seed in diverged:
                found[int(seed)] = Outcome(DIVERGED)
        elif bad[rows_at].any():
            found[int(seed)] = Outcome(DIVERGED)
        elif math.isfinite(values[rows_at[-1]]):
            last = rows_at[-1]
            found[int(seed)] = Outcome(STATUS_OK, float(values[last]), float(lows[last]),
                                      float(highs[last]))
    return found


def texts(rows: pd.DataFrame, describe: Callable[[pd.DataFrame], str | None]) -> str | None:
    """The distinct texts ``describe(seed_rows)`` gives for each seed's rows, joined by "; "."""
    found = [describe(runs) for _, runs in rows.groupby(seed_of(rows), sort=True)]
    unique = list(dict.fromkeys(text for text in found if text))
    return "; ".join(unique) if unique else None


def estimators_of(rows: pd.DataFrame, model: str, preferred: Sequence[str] = ()) -> list[str]:
    """Estimators with rows for ``model``: the ``preferred`` ones in that order, then in registry
    order (each estimator's variants together)."""
    present = set(select(rows, model=model)["estimator"].dropna())
    rest = sorted(present - set(preferred), key=label_key)
    return [e for e in preferred if e in present] + rest


def estimator_order(model: str, rows: pd.DataFrame) -> list[str]:
    """Row order for a model: the paper's order first where it has one, then registry order."""
    return estimators_of(rows, model, paper.row_order(model))


def models_of(rows: pd.DataFrame, experiment: str) -> list[str]:
    """Models with rows of ``experiment``, sorted."""
    return sorted(set(select(rows, experiment=experiment)["model"].dropna()))


def label_key(label: str) -> tuple[int, str]:
    """Sort key of an estimator label: its estimator's registry position, then the label."""
    names = list(ESTIMATORS)
    base = label.partition("[")[0]
    return (names.index(base) if base in names else len(names), label)


def nearest_batch_size(
    sizes: Sequence[float] | pd.Series, target: int = paper.TABLE_BATCH_SIZE
) -> int | None:
    """The stored batch size closest to ``target`` (the smaller on a tie)."""
    finite = sorted({int(s) for s in sizes if pd.notna(s)})
    if not finite:
        return None
    return min(finite, key=lambda s: (abs(s - target), s))


def at_batch_size(rows: pd.DataFrame, batch: int | None) -> pd.DataFrame:
    """Rows of minibatch ``batch`` and rows without a batch size (a cell's diverged marks)."""
    if batch is None:
        return rows
    return rows[(rows["batch_size"] == batch) | rows["batch_size"].isna()]


def splits_of(rows: pd.DataFrame, metric: str) -> list[str]:
    """The data splits (param_group) a metric was evaluated on, in train/valid/test order."""
    present = set(select(rows, metric=metric)["param_group"].dropna())
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


def final_epoch_rows(rows: pd.DataFrame, model: str) -> pd.DataFrame:
    """Each estimator's training rows, per seed, at that seed's last recorded epoch (diverged
    and failed rows kept)."""
    training = select(rows, experiment=TRAINING, model=model)
    if training.empty:
        return training
    seeds = seed_of(training)
    last = training.groupby([training["estimator"], seeds])["epoch"].transform("max")
    return training[(training["epoch"] == last) | training["epoch"].isna()]


def epoch_label(epoch: float) -> str:
    """A checkpoint's column label: "10 ep"."""
    return f"{int(epoch)} ep"


def other_objective(rows: pd.DataFrame, estimator: str) -> bool:
    """True when the stored rows of ``estimator`` say its direction is not the ELBO gradient's."""
    flags = select(rows, estimator=estimator)["estimates_elbo_gradient"]
    return bool((flags.str.lower() == "false").any())
