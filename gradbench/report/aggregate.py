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
UNTESTED = "untested"
"""A compared cell's mark: the best, not distinguishable from it, distinguishable, or not
tested (fewer than two seeds shared with the best)."""


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
        """Half the width of the cell's interval: over seeds with n ≥ 2, the seed's own stored
        interval with one seed (NaN where it has none)."""
        return (self.high - self.low) / 2 if self.n > 0 else math.nan

    @property
    def finite(self) -> bool:
        """True when some seed has a value and every value is finite (a cell that may be
        compared and ranked)."""
        return self.n > 0 and all(math.isfinite(v) for v in self.values.values())

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
    from the best), :data:`DISTINCT` or :data:`UNTESTED` (fewer than two shared seeds), with the
    test's p-value (None when none was made); ``second``: the runner-up by mean (underlined in
    LaTeX)."""

    kind: str
    p_value: float | None = None
    second: bool = False


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


def monotone(function: Callable[[float], float], found: Outcomes) -> Outcomes:
    """``function`` (increasing) of each seed's value and of its stored interval's bounds: a
    published figure's distance (ours / published, ours − published) keeps ours' interval."""
    return {
        seed: Outcome(o.status, function(o.value), function(o.low), function(o.high))
        if o.status == STATUS_OK else o
        for seed, o in found.items()
    }


def ratio(numerator: Outcomes, denominator: Outcomes, level: float = LEVEL) -> Outcomes:
    """Per seed a / b of two positive quantities, with the interval exp(log(a/b) ± z·√(s_a² +
    s_b²)), s = (log high − log low) / 2z from each one's stored interval (the delta method on
    the log scale, as if the two were independent: wider than the truth where they share
    minibatches and so correlate positively); NaN bounds where either has no interval."""
    z = float(stats.norm.ppf(0.5 + level / 2))

    def log_se(o: Outcome) -> float:
        if o.low > 0 and o.high > 0:
            return (math.log(o.high) - math.log(o.low)) / (2 * z)
        return math.nan

    found: Outcomes = {}
    for seed in sorted(set(numerator) & set(denominator)):
        a, b = numerator[seed], denominator[seed]
        if a.status != STATUS_OK or b.status != STATUS_OK:
            found[seed] = Outcome(lost_status([o.status for o in (a, b) if o.status != STATUS_OK]))
            continue
        if not (a.value > 0 and b.value > 0):
            continue
        value = a.value / b.value
        spread = z * math.hypot(log_se(a), log_se(b))
        found[seed] = Outcome(STATUS_OK, value, value * math.exp(-spread),
                              value * math.exp(spread))
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
    first: Sequence[bool] = (),
) -> dict[int, Mark]:
    """Marks of one compared column: the best row, the runner-up, and the rows a paired test
    cannot tell from the best.

    Only eligible rows with finite values take part (a diverged or non-finite cell is never
    marked). The best is the row with the best mean among those with no lost seed (rows with
    exactly that mean are best too); a ``first`` row (the exact gradient) is best wherever it has
    a value. The runner-up is the next such row by mean. Every other row is tested against the
    best on the seeds both measured (at least two), paired by seed, on log values when ``log`` (a
    row with a non-positive value then takes no part, the exact gradient's round-off zero aside):
    p ≥ ``alpha`` marks it :data:`TIED`, else :data:`DISTINCT`; with fewer shared seeds, or
    against the exact gradient (a reference, not a rival), it is :data:`UNTESTED`.
    """
    leading = [bool(f) for f in first] or [False] * len(cells)
    candidates: dict[int, Estimate] = {
        i: cell for i, cell in enumerate(cells)
        if eligible[i] and isinstance(cell, Estimate) and cell.finite
        and not (log and min(cell.values.values()) <= 0 and not leading[i])
    }
    complete = [i for i, cell in candidates.items() if not cell.lost]
    if not complete:
        return {}
    sign = -1.0 if higher_is_better else 1.0

    def order(i: int) -> tuple[bool, float, int]:
        return (not leading[i], sign * candidates[i].mean, i)

    ranked = sorted(complete, key=order)
    best = ranked[0]
    marks = {i: Mark(BEST) for i in complete if order(i)[:2] == order(best)[:2]}
    runners = [i for i in ranked if i not in marks]
    scale = np.log if log else np.asarray
    reference = candidates[best]
    for i, cell in candidates.items():
        if i in marks:
            continue
        second = bool(runners) and i == runners[0]
        shared = sorted(set(cell.values) & set(reference.values))
        if len(shared) < 2 or leading[best]:
            marks[i] = Mark(UNTESTED, None, second)
            continue
        ours = scale(np.array([cell.values[s] for s in shared]))
        theirs = scale(np.array([reference.values[s] for s in shared]))
        p_value = paired_p_value(ours, theirs)
        marks[i] = Mark(TIED if p_value >= alpha else DISTINCT, p_value, second)
    return marks


def average_ranks(
    columns: Sequence[tuple[Sequence[object], bool]],
    eligible: Sequence[bool],
    first: Sequence[bool] = (),
) -> dict[int, Rank]:
    """Each eligible row's average rank over ``columns`` (cells, higher_is_better).

    Within each seed and column the eligible rows with a finite value are ranked, 1 = best, ties
    sharing their mean rank, a ``first`` row (the exact gradient) ahead of every other; diverged,
    failed and unmeasured seeds are not ranked, so a row that diverged on every seed has no rank.
    A row's rank in a seed is the mean over the columns, and its average rank the mean over seeds.
    """
    leading = [bool(f) for f in first] or [False] * len(eligible)
    per_row: dict[int, dict[int, list[float]]] = {}
    for cells, higher_is_better in columns:
        sign = -1.0 if higher_is_better else 1.0
        scores: dict[int, dict[int, float]] = {}
        for i, cell in enumerate(cells):
            if not (eligible[i] and isinstance(cell, Estimate)):
                continue
            for seed, value in cell.values.items():
                if math.isfinite(value):
                    scores.setdefault(seed, {})[i] = -math.inf if leading[i] else sign * value
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


@dataclass(frozen=True)
class Clamped(Estimate):
    """A cell aggregated on an unclamped scale and mapped once onto the shown one: ``values``
    are the per-seed unclamped estimates (a debiased squared relative bias may be negative);
    ``point``, ``low`` and ``high`` the mapped mean and interval (``t(x̄)``, ``t(low)``,
    ``t(high)`` for a monotone clamp ``t`` such as √max(·, 0)), so clamped zeros never make an
    interval [0, 0]."""

    point: float = math.nan

    @property
    def mean(self) -> float:
        """The mapped mean of the unclamped estimates."""
        return self.point


def clamp_once(cell: Estimate, transform: Callable[[float], float]) -> Clamped:
    """``cell`` (over seeds, unclamped) mapped once through the monotone ``transform``."""
    point = transform(statistics.fmean(cell.values.values())) if cell.values else math.nan
    low, high = (transform(b) if math.isfinite(b) else math.nan for b in (cell.low, cell.high))
    return Clamped(cell.values, low, high, cell.lost, point)
