"""Aggregation over seeds: means, t-intervals, paired comparisons between rows, average ranks.

A table cell measured under n seeds is summarised by its mean x̄ and the 95 % t-interval
x̄ ± t_{0.975, n−1} · s / √n (s: the standard deviation over seeds, n − 1 in the denominator).
Rows are compared seed by seed: the same seed means the same initialisation, data order and
checkpoints for every estimator, so two rows' values pair by seed and a paired t-test on their
differences (``scipy.stats.ttest_rel``) removes the variation all estimators share across seeds.
Diverged and failed seeds are never averaged in; they are carried along as ``lost`` seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from gradbench.report.rows import (
    DIVERGED,
    FAILED,
    SKIPPED,
    Outcome,
    Outcomes,
    outcome,
    outcomes,
    seed_of,
)
from gradbench.results import STATUS_OK

def lost_status(statuses: Iterable[str]) -> str:
    """The status that names lost seeds: ``diverged`` before ``failed`` before ``skipped``."""
    met = set(statuses)
    return next((s for s in (DIVERGED, FAILED, SKIPPED) if s in met), FAILED)


LEVEL = 0.95
"""Confidence level of every interval over seeds."""

ALPHA = 0.05
"""Level of the paired t-test that tells a row from the best."""

ROUNDING = 1e-12
"""Relative spread of paired differences below which they are equal but for rounding."""

BEST = "best"
TIED = "tied"
DISTINCT = "distinct"
"""A compared cell's mark: the best, not distinguishable from it, or distinguishable."""


@dataclass(frozen=True)
class Estimate:
    """One table cell over seeds: the per-seed values and a 95 % interval of their mean.

    ``low``/``high``: with n ≥ 2 seeds the t-interval over seeds; with one seed that seed's own
    stored interval (NaN where it has none). ``lost``: seeds that diverged or failed, never
    averaged in; a cell with no value left shows its loss instead.
    """

    values: Mapping[int, float]
    low: float = math.nan
    high: float = math.nan
    lost: Mapping[int, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """The number of seeds averaged."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """The mean over seeds (NaN when no seed has a value)."""
        return statistics.fmean(self.values.values()) if self.values else math.nan

    @property
    def over_seeds(self) -> bool:
        """True when the interval is the t-interval over seeds (n ≥ 2)."""
        return self.n >= 2

    @property
    def half_width(self) -> float:
        """Half the width of the interval over seeds (NaN with one seed)."""
        return (self.high - self.low) / 2 if self.over_seeds else math.nan

    @property
    def status(self) -> str:
        """``ok`` when some seed has a value, else the first of ``diverged``, ``failed`` and
        ``skipped`` that a seed met."""
        if self.values:
            return STATUS_OK
        return lost_status(self.lost.values())


@dataclass(frozen=True)
class Rank:
    """A row's average rank: the mean over seeds of its rank within each seed, and the standard
    error sd / √n of that mean (None with one seed)."""

    per_seed: Mapping[int, float]

    @property
    def n(self) -> int:
        """The number of seeds ranked."""
        return len(self.per_seed)

    @property
    def mean(self) -> float:
        """The mean rank over seeds."""
        return statistics.fmean(self.per_seed.values())

    @property
    def se(self) -> float | None:
        """sd / √n over seeds; None with one seed."""
        if self.n < 2:
            return None
        return statistics.stdev(self.per_seed.values()) / math.sqrt(self.n)


@dataclass(frozen=True)
class Mark:
    """A compared cell's standing: :data:`BEST`, :data:`TIED` (the paired test cannot tell it
    from the best) or :data:`DISTINCT`, with the test's p-value (None for the best)."""

    kind: str
    p_value: float | None = None


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): x̄ ± t_{(1+level)/2, n−1} · s / √n over ``values`` (n ≥ 2)."""
    if len(values) < 2:
        raise ValueError(f"a t-interval needs 2 or more values, got {len(values)}")
    mean = statistics.fmean(values)
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean, mean - half, mean + half


def estimate(found: Outcomes) -> Estimate | None:
    """The cell over seeds of one quantity's per-seed outcomes; None when no seed measured it."""
    if not found:
        return None
    ordered = dict(sorted(found.items()))
    values = {s: o.value for s, o in ordered.items() if o.status == STATUS_OK}
    lost = {s: o.status for s, o in ordered.items() if o.status != STATUS_OK}
    if len(values) == 1:
        only = ordered[next(iter(values))]
        return Estimate(values, only.low, only.high, lost)
    if len(values) >= 2:
        _, low, high = t_interval(list(values.values()))
        return Estimate(values, low, high, lost)
    return Estimate({}, lost=lost)


def derive(function: Callable[..., float], *parts: Outcomes) -> Outcomes:
    """A quantity computed seed by seed from others (a ratio, a product): ``function`` of the
    parts' values at each seed they share; a lost part loses that seed, a non-finite result
    leaves it out."""
    shared = set.intersection(*(set(part) for part in parts)) if parts else set()
    found: Outcomes = {}
    for seed in sorted(shared):
        at_seed = [part[seed] for part in parts]
        lost = [o.status for o in at_seed if o.status != STATUS_OK]
        if lost:
            found[seed] = Outcome(lost_status(lost))
            continue
        value = function(*(o.value for o in at_seed))
        if math.isfinite(value):
            found[seed] = Outcome(STATUS_OK, float(value))
    return found


def paired_p_value(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of equal means (``scipy.stats.ttest_rel``); equal
    differences at every pair (to rounding: a constant ratio on log values) give 1 when they are
    zero and 0 otherwise."""
    differences = np.asarray(first, float) - np.asarray(second, float)
    largest = float(np.max(np.abs(differences)))
    if np.ptp(differences) <= ROUNDING * largest:
        return 1.0 if largest == 0.0 else 0.0
    return float(stats.ttest_rel(first, second).pvalue)


def compare(
    cells: Sequence[object],
    eligible: Sequence[bool],
    higher_is_better: bool,
    log: bool = False,
    alpha: float = ALPHA,
) -> dict[int, Mark]:
    """Marks of one compared column: the best row and the rows a paired test cannot tell from it.

    The best is the eligible row with the best mean among those with no lost seed (rows with
    exactly that mean are best too). Every other eligible row is tested against it on the seeds
    both measured (at least two), paired by seed, on log values when ``log`` (a row with a
    non-positive value then takes no part): p ≥ ``alpha`` marks it :data:`TIED`, else
    :data:`DISTINCT`.
    """
    candidates: dict[int, Estimate] = {
        i: cell for i, cell in enumerate(cells)
        if eligible[i] and isinstance(cell, Estimate) and cell.n > 0
        and not (log and min(cell.values.values()) <= 0)
    }
    complete = [i for i, cell in candidates.items() if not cell.lost]
    if not complete:
        return {}
    sign = -1.0 if higher_is_better else 1.0
    best = min(complete, key=lambda i: (sign * candidates[i].mean, i))
    marks = {i: Mark(BEST) for i in complete if candidates[i].mean == candidates[best].mean}
    scale = np.log if log else np.asarray
    reference = candidates[best]
    for i, cell in candidates.items():
        if i in marks:
            continue
        shared = sorted(set(cell.values) & set(reference.values))
        if len(shared) < 2:
            continue
        ours = scale(np.array([cell.values[s] for s in shared]))
        theirs = scale(np.array([reference.values[s] for s in shared]))
        p_value = paired_p_value(ours, theirs)
        marks[i] = Mark(TIED if p_value >= alpha else DISTINCT, p_value)
    return marks


def average_ranks(
    columns: Sequence[tuple[Sequence[object], bool]], eligible: Sequence[bool]
) -> dict[int, Rank]:
    """Each eligible row's average rank over ``columns`` (cells, higher_is_better).

    Within each seed and column the eligible rows with a value or a diverged seed are ranked,
    1 = best, ties sharing their mean rank, a diverged seed ranking below every value (failed
    and unmeasured seeds are not ranked); a row's rank in a seed is the mean over the columns,
    and its average rank the mean over seeds.
    """
    per_row: dict[int, dict[int, list[float]]] = {}
    for cells, higher_is_better in columns:
        sign = -1.0 if higher_is_better else 1.0
        scores: dict[int, dict[int, float]] = {}
        for i, cell in enumerate(cells):
            if not (eligible[i] and isinstance(cell, Estimate)):
                continue
            for seed, value in cell.values.items():
                scores.setdefault(seed, {})[i] = sign * value
            for seed, status in cell.lost.items():
                if status == DIVERGED:
                    scores.setdefault(seed, {})[i] = math.inf
        for seed, by_row in scores.items():
            rows = sorted(by_row)
            ranks = stats.rankdata([by_row[i] for i in rows])
            for i, rank in zip(rows, ranks):
                per_row.setdefault(i, {}).setdefault(seed, []).append(float(rank))
    return {
        i: Rank({seed: statistics.fmean(r) for seed, r in sorted(by_seed.items())})
        for i, by_seed in sorted(per_row.items())
    }


def over_seeds(
    rows: pd.DataFrame, experiment: str, model: str, estimator: str, **criteria: object
) -> Estimate | None:
    """One quantity of a stored cell aggregated over its seeds (see :func:`estimate`)."""
    return estimate(outcomes(rows, experiment, model, estimator, **criteria))


def curve(rows: pd.DataFrame, along: str) -> list[tuple[float, Estimate]]:
    """One quantity's rows (one per seed and point) over seeds at each value of ``along``
    (batch size, epoch), in order; points where no seed has a value are left out."""
    points = []
    for x, at in rows.dropna(subset=[along]).groupby(along, sort=True):
        found = {
            int(seed): result
            for seed, runs in at.groupby(seed_of(at), sort=True)
            if (result := outcome(runs)) is not None
        }
        summary = estimate(found)
        if summary is not None and summary.n > 0:
            points.append((float(x), summary))
    return points
