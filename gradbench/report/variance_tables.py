"""Gradient-variance tables: the Table-1 analogue per model, slopes against minibatch size, and
the noise / data decomposition with the signal-to-noise ratio, over seeds.

A model's variance table compares its estimators in every (group, checkpoint) column: lower
variance is better, compared on log variances (a ratio that holds across seeds). Slopes and the
decomposition describe and compare nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from gradbench.experiments.metrics import (
    GRAD_VARIANCE,
    GRAD_VARIANCE_DATA,
    GRAD_VARIANCE_NOISE,
    LOG_VARIANCE_SLOPE,
    SNR,
    VARIANCE_RATIO,
)
from gradbench.estimators import ESTIMATORS, estimator_class
from gradbench.measure.paired_variance import EXPERIMENT as PAIRED
from gradbench.report import paper
from gradbench.report.aggregate import Estimate, derive, estimate, over_seeds
from gradbench.report.notes import (
    EXCLUDED,
    at_one_checkpoint,
    bounds_note,
    coverage_notes,
    marked,
    objective_notes,
)
from gradbench.report.render import HIGH, LOW, MEAN, display
from gradbench.report.rows import (
    UNKNOWN_SEED,
    VARIANCE,
    at_batch_size,
    epoch_label,
    estimator_order,
    models_of,
    nearest_batch_size,
    other_objective,
    outcomes,
    seed_of,
    select,
)
from gradbench.report.table import Column, Compared, Comparison, Table, Value, assemble

GROUP_EPOCH_KEYS = (
    Column("model", key=True),
    Column("estimator", key=True),
    Column("group", key=True),
    Column("epoch", "int", key=True),
)
"""The key columns of the tables with a row per model × estimator × parameter group × epoch."""

DECOMPOSITION_METRICS = (GRAD_VARIANCE, GRAD_VARIANCE_NOISE, GRAD_VARIANCE_DATA, SNR)


def variance_table(rows: pd.DataFrame, model: str) -> Table | None:
    """Gradient variance per estimator × (group, checkpoint) at minibatch 100 (Kingma's Table 1).

    Only cells measured at one set of parameters per seed and checkpoint are compared
    (:func:`gradbench.report.notes.at_one_checkpoint`); the others are listed. The groups are
    the model's headline groups (:func:`gradbench.report.paper.headline_groups`); the papers'
    figures sit beside ours where a paper has them.
    """
    measured = select(rows, experiment=VARIANCE, model=model)
    variance = select(measured, metric=GRAD_VARIANCE)
    if variance.empty:
        return None
    cell_rows, left_out = at_one_checkpoint(measured)
    batch = nearest_batch_size(variance["batch_size"])
    epochs = sorted({float(e) for e in variance[variance["batch_size"] == batch]["epoch"].dropna()})
    ours = [(g, e) for g in paper.headline_groups(model, variance["param_group"]) for e in epochs]
    labels = [f"{g}, {epoch_label(e)}" for g, e in ours]
    beside = paper.variance_beside(model)
    columns = [
        Column("estimator", key=True),
        *(Column(c.label, c.kind) for c in beside.leading),
        *(Column(label, "sci") for label in labels),
        *(Column(c.label, c.kind) for c in beside.trailing),
    ]
    scoped = at_batch_size(cell_rows, batch)
    names = estimator_order(model, measured)
    table_rows = [
        [
            marked(cell_rows, name),
            *(c.values.get(name) for c in beside.leading),
            *(over_seeds(scoped, VARIANCE, model, name, metric=GRAD_VARIANCE, param_group=g,
                         epoch=e) for g, e in ours),
            *(c.values.get(name) for c in beside.trailing),
        ]
        for name in names
    ]
    others = [other_objective(cell_rows, name) for name in names]
    claimed = paper.variance_order(model)
    by_column = {
        label: dict(zip(names, (row[1 + len(beside.leading) + i] for row in table_rows)))
        for i, label in enumerate(labels)
    }
    notes = (
        f"Ours: mean over the group's parameters of each parameter's variance over independent "
        f"minibatch gradients (fresh data and noise), minibatch {batch}, at parameters after the "
        "given number of training epochs; gradient of the mean per-example loss.",
        *beside.notes,
        *paper.variant_notes(names),
        *objective_notes(cell_rows, names),
        *coverage_notes(cell_rows),
        *left_out,
        *(order_notes(claimed, by_column) if claimed else ()),
        *invariant_notes(invariant_checks(cell_rows, model)),
        *paired_notes(rows, model),
        *paired_excess_notes(rows, model),
    )
    comparison = Comparison(
        tuple(Compared(label, False, log=True) for label in labels),
        "gradient variance: lower is better",
        tuple(not other for other in others),
        excluded=EXCLUDED if any(others) else "",
        biased_apart=True,
    )
    return assemble(
        f"variance_{model.replace('-', '_')}",
        f"Gradient variance of {model} by estimator (Table 1 analogue)",
        columns, table_rows, notes, comparison,
    )


def order_notes(
    claimed: paper.ClaimedOrder, columns: dict[str, dict[str, Estimate | None]]
) -> tuple[str, ...]:
    """Whether each column keeps the order a paper claims (by the mean over seeds), each
    reversed neighbouring pair with its values and whether their intervals are disjoint, and
    for a pair whose order is certain in expectation, that a disjoint reversal means an interval
    missed."""
    kept, broken, missing = [], [], []
    missed: dict[tuple[str, str], list[str]] = {}
    for label, values in columns.items():
        found = [values.get(name) for name in claimed.estimators]
        if any(v is None or not v.values for v in found):
            missing.append(f"[{label}]")
            continue
        reversed_pairs = []
        for (low_name, low), (high_name, high) in itertools.pairwise(
            zip(claimed.estimators, found)
        ):
            if low.mean < high.mean:
                continue
            disjoint = low.low > high.high
            bounds = not (math.isnan(low.low) or math.isnan(high.high))
            reversed_pairs.append(
                f"{low_name} {display(low.mean, 'sci')} ≥ {high_name} "
                f"{display(high.mean, 'sci')}, "
                + (f"intervals {'disjoint' if disjoint else 'overlapping'}" if bounds
                   else "no intervals")
            )
            if disjoint and (low_name, high_name) in claimed.certain:
                missed.setdefault((low_name, high_name), []).append(f"[{label}]")
        if reversed_pairs:
            broken.append(f"[{label}] ({'; '.join(reversed_pairs)})")
        else:
            kept.append(f"[{label}]")
    parts = [f"kept in {', '.join(kept)}" if kept else "kept in no column"]
    if broken:
        parts.append(f"reversed in {', '.join(broken)}")
    if missing:
        parts.append(f"not every row measured in {', '.join(missing)}")
    notes = [
        f"{claimed.source.label}'s order, variance rising "
        f"{' < '.join(claimed.estimators)}: {'; '.join(parts)}."
    ]
    for (low_name, high_name), where in missed.items():
        notes.append(
            f"In expectation {low_name} is not above {high_name} for any network "
            f"({claimed.certain[(low_name, high_name)]}); reversed with disjoint intervals in "
            f"{', '.join(where)}, so there at least one of the two intervals misses its value: "
            "these draws do not settle that pair."
        )
    return tuple(notes)


@dataclass(frozen=True)
class Interval:
    """One cell's value of a quantity and its stored interval, with what it is."""

    label: str
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class InvariantCheck:
    """Two intervals of quantities equal in expectation at one set of parameters (an
    invariant, :func:`invariant_checks`): they hold when the intervals overlap."""

    law: str
    where: str
    first: Interval
    second: Interval

    @property
    def holds(self) -> bool:
        """Whether the two intervals overlap."""
        return not (self.first.high < self.second.low or self.second.high < self.first.low)


CellKey = tuple[str, str, int, float, int]
"""(estimator, group, minibatch size, epoch, seed)."""


def _intervals(rows: pd.DataFrame, metric: str, scale_by_batch: bool = False
               ) -> dict[CellKey, tuple[float, float, float]]:
    """Each measured cell's (value, low, high) of ``metric``, times M when ``scale_by_batch``;
    cells without a finite interval are left out."""
    found = select(rows, experiment=VARIANCE, metric=metric, status="ok")
    cells = {}
    for row in found.dropna(subset=["batch_size", "epoch", "value", "ci_low", "ci_high"]
                            ).itertuples(index=False):
        scale = float(row.batch_size) if scale_by_batch else 1.0
        key = (row.estimator, row.param_group, int(row.batch_size), float(row.epoch),
               int(row.seed) if not pd.isna(row.seed) else -1)
        cells[key] = (row.value * scale, row.ci_low * scale, row.ci_high * scale)
    return cells


def _interval(label: str, values: tuple[float, float, float]) -> Interval:
    return Interval(label, *values)


def _place(group: str, batch: int, epoch: float, seed: int) -> str:
    return f"[{group}, M = {batch}, {epoch_label(epoch)}, seed {seed}]"


def invariant_checks(rows: pd.DataFrame, model: str) -> list[InvariantCheck]:
    """The invariants every variance table of ``model`` must pass where its estimators were
    measured, cell by cell at one set of parameters (each seed's stored intervals):

    - the 1/M law: for an estimator with noise independent across examples
      (:func:`gradbench.report.paper.independent_noise`), M times the noise part at each two
      neighbouring minibatch sizes;
    - one law (:func:`gradbench.report.paper.equal_laws`): the variances of a group whose
      gradient has one law under two estimators (the output bias, local reparameterization and
      separate weight samples);
    - one data part: Var_B(E_ε[ĝ | B]) = Var_B(∇ loss_B) of every unbiased estimator (its mean
      given the minibatch is the minibatch's exact gradient), each against the first measured.

    Groups: the model's headline groups and each equal law's group.
    """
    variance = select(rows, experiment=VARIANCE, model=model)
    measured_groups = set(variance["param_group"].dropna())
    groups = [g for g in paper.headline_groups(model, measured_groups) if g in measured_groups]
    laws = [(law, law.group(measured_groups)) for law in paper.equal_laws(model)]
    groups += [g for _, g in laws if g is not None and g not in groups]
    checks: list[InvariantCheck] = []
    noise = _intervals(variance, GRAD_VARIANCE_NOISE, scale_by_batch=True)
    for name in paper.independent_noise(model):
        for group in groups:
            by_place: dict[tuple[float, int], list[int]] = {}
            for (estimator, g, batch, epoch, seed) in noise:
                if estimator == name and g == group:
                    by_place.setdefault((epoch, seed), []).append(batch)
            for (epoch, seed), sizes in sorted(by_place.items()):
                for small, large in itertools.pairwise(sorted(sizes)):
                    checks.append(InvariantCheck(
                        f"1/M law of {name}: M × noise part equal at every M",
                        f"[{group}, M = {small} vs {large}, {epoch_label(epoch)}, seed {seed}]",
                        _interval(f"M = {small}", noise[(name, group, small, epoch, seed)]),
                        _interval(f"M = {large}", noise[(name, group, large, epoch, seed)]),
                    ))
    total = _intervals(variance, GRAD_VARIANCE)
    for law, group in laws:
        first, second = law.estimators
        for (estimator, g, batch, epoch, seed), values in sorted(total.items()):
            other = total.get((second, g, batch, epoch, seed))
            if estimator == first and g == group and other is not None:
                checks.append(InvariantCheck(
                    f"one law of {law.what} under {first} and {second}: equal variances",
                    _place(group, batch, epoch, seed),
                    _interval(first, values), _interval(second, other),
                ))
    data = _intervals(variance, GRAD_VARIANCE_DATA)
    unbiased = [n for n in estimator_order(model, variance) if _unbiased(variance, n)]
    places = sorted({(g, b, e, s) for (_, g, b, e, s) in data if g in groups})
    for group, batch, epoch, seed in places:
        present = [n for n in unbiased if (n, group, batch, epoch, seed) in data]
        for name in present[1:]:
            checks.append(InvariantCheck(
                "one data part Var_B(E_ε[ĝ | B]) of every unbiased estimator",
                _place(group, batch, epoch, seed),
                _interval(present[0], data[(present[0], group, batch, epoch, seed)]),
                _interval(name, data[(name, group, batch, epoch, seed)]),
            ))
    return checks


def _unbiased(rows: pd.DataFrame, label: str) -> bool:
    """Whether a registered estimator (or variant) is unbiased for the gradient its rows
    estimate; an estimator the registry does not know (a plugin's) is not assumed to be."""
    name = label.partition("[")[0].strip()
    return (name in ESTIMATORS and estimator_class(label).unbiased
            and not other_objective(rows, label))


def invariant_notes(checks: Sequence[InvariantCheck]) -> tuple[str, ...]:
    """One note per invariant: in how many comparisons it holds, and each failure with its two
    intervals; where one fails, what a failure means."""
    if not checks:
        return ()
    by_law: dict[str, list[InvariantCheck]] = {}
    for check in checks:
        by_law.setdefault(check.law, []).append(check)
    notes = []
    for law, found in by_law.items():
        failed = [c for c in found if not c.holds]
        text = f"Invariant, {law}: holds in {len(found) - len(failed)} of {len(found)} comparisons"
        if failed:
            text += "; FAILS at " + "; ".join(
                f"{c.where} ({_shown(c.first)} against {_shown(c.second)})" for c in failed)
        notes.append(text + ".")
    if any(not c.holds for c in checks):
        notes.append(
            "A failed invariant is a failure of the measurement there, not of an interval: the "
            "two quantities are equal at one set of parameters, and two 95 % intervals of one "
            "value are disjoint by chance with probability below 1 %. Read those cells as "
            "measured at different parameters, or through a faulty noise path, until remeasured."
        )
    return tuple(notes)


def _shown(interval: Interval) -> str:
    return (f"{interval.label} {display(interval.value, 'sci')} "
            f"[{display(interval.low, 'sci')}, {display(interval.high, 'sci')}]")


def paired_notes(rows: pd.DataFrame, model: str) -> tuple[str, ...]:
    """The paired estimates of single / separate weight-sample variance
    (:mod:`gradbench.measure.paired_variance`: both from the same draws on the same minibatches
    and checkpoint), each ratio with its interval and whether it settles the order."""
    ratios = select(rows, experiment=PAIRED, model=model, metric=VARIANCE_RATIO)
    if ratios.empty:
        return ()
    found = []
    ratios = ratios.assign(seed=seed_of(ratios))
    for row in ratios.sort_values(["epoch", "param_group", "seed"]).itertuples(index=False):
        order = ("single above separate" if row.ci_low > 1.0 else
                 "single below separate" if row.ci_high < 1.0 else "order not settled")
        seed = f", seed {row.seed}" if row.seed != UNKNOWN_SEED else ""
        found.append(
            f"[{row.param_group}, M = {int(row.batch_size)}, {epoch_label(row.epoch)}{seed}] "
            f"{display(row.value, 'fixed3')} [{display(row.ci_low, 'fixed3')}, "
            f"{display(row.ci_high, 'fixed3')}] over {int(row.n)} minibatches: {order}"
        )
    return (
        "Paired single / separate weight samples (both variances from the same two weight draws "
        "on each of the same minibatches, at one checkpoint), the ratio of variances with its "
        f"95 % interval: {'; '.join(found)}.",
    )


EXCESS_P_MIN = 0.01
"""Family-wise level of the heterogeneity tests: a test whose p-value is below it divided by the
number of tests (Bonferroni) reads the excess per example pair as not constant in M (the
measurement failed: cells of other parameters, or a faulty noise path)."""


@dataclass(frozen=True)
class PairedExcess:
    """(R − 1) / (M − 1) of the paired single / separate ratio R at each minibatch size M of one
    group, checkpoint and seed, and their inverse-variance mean over M with its 95 % interval
    and the chi-square heterogeneity p-value (one value: None)."""

    group: str
    epoch: float
    seed: int
    per_size: tuple[tuple[int, float, float, float], ...]  # (M, excess, low, high)
    mean: float
    low: float
    high: float
    p_value: float | None


def paired_excess(rows: pd.DataFrame, model: str) -> list[PairedExcess]:
    """The paired ratio's excess per example pair, which theory holds constant in M.

    With one weight sample shared by a minibatch, each pair of its examples adds the covariance
    c of their noise terms, so Var_single = (σ² + (M − 1) c) / M + D against Var_separate =
    σ² / M + D, the data part D = δ² / M under both: R − 1 = (M − 1) c / (σ² + δ²). Each M's
    interval (the stored one of R, shifted and scaled) gives its standard error; the mean over
    M is weighted by inverse variance and Cochran's Q (``scipy.stats.chi2``) tests that the
    excesses agree.
    """
    ratios = select(rows, experiment=PAIRED, model=model, metric=VARIANCE_RATIO)
    ratios = ratios[ratios["batch_size"] >= 2]
    if ratios.empty:
        return []
    z = float(stats.norm.ppf(0.975))
    found = []
    ratios = ratios.assign(seed=seed_of(ratios))
    for (group, epoch, seed), at in ratios.groupby(["param_group", "epoch", "seed"], sort=True):
        sizes = []
        for row in at.sort_values("batch_size").itertuples(index=False):
            scale = 1.0 / (row.batch_size - 1)
            sizes.append((int(row.batch_size), (row.value - 1) * scale,
                          (row.ci_low - 1) * scale, (row.ci_high - 1) * scale))
        excess = np.array([e for _, e, _, _ in sizes])
        se = np.array([(high - low) / (2 * z) for _, _, low, high in sizes])
        if not (se > 0).all():
            continue
        weights = 1.0 / se**2
        mean = float((weights * excess).sum() / weights.sum())
        half = z / math.sqrt(float(weights.sum()))
        q = float((weights * (excess - mean) ** 2).sum())
        p_value = float(stats.chi2.sf(q, len(sizes) - 1)) if len(sizes) > 1 else None
        found.append(PairedExcess(str(group), float(epoch), int(seed), tuple(sizes), mean,
                                  mean - half, mean + half, p_value))
    return found


def paired_excess_notes(rows: pd.DataFrame, model: str) -> tuple[str, ...]:
    """The excess per example pair at each M and checkpoint (:func:`paired_excess`), and whether
    it is constant in M as theory says; a failure is named as the measurement's."""
    parts = []
    failed = []
    found = paired_excess(rows, model)
    level = EXCESS_P_MIN / max(1, sum(e.p_value is not None for e in found))
    for excess in found:
        seed = f", seed {excess.seed}" if excess.seed != UNKNOWN_SEED else ""
        where = f"{excess.group}, {epoch_label(excess.epoch)}{seed}"
        sizes = ", ".join(f"M = {m}: {display(e, 'sci')} [{display(low, 'sci')}, "
                          f"{display(high, 'sci')}]" for m, e, low, high in excess.per_size)
        verdict = ""
        if excess.p_value is not None:
            held = excess.p_value >= level
            verdict = (f"; constant in M (p = {excess.p_value:.2f})" if held else
                       f"; NOT constant in M (p = {excess.p_value:.1e})")
            if not held:
                failed.append(where)
        parts.append(f"[{where}] {sizes}; mean {display(excess.mean, 'sci')} "
                     f"[{display(excess.low, 'sci')}, {display(excess.high, 'sci')}]{verdict}")
    if not parts:
        return ()
    notes = [
        "Paired ratio R, its excess per example pair (R − 1) / (M − 1), which theory holds "
        "constant in M (a shared weight sample adds the covariance of every pair of examples' "
        "noise terms; the data part scales as 1/M under both), with 95 % intervals and "
        f"Cochran's heterogeneity test (at {EXCESS_P_MIN} over the tests shown, Bonferroni): "
        f"{'; '.join(parts)}."
    ]
    if failed:
        notes.append(
            f"The excess per example pair differs across M at {'; '.join(failed)} (p < "
            f"{level:.1e}, {EXCESS_P_MIN} over the tests shown): a failure of the measurement "
            "(cells of other parameters, or a faulty noise path), not of an interval."
        )
    return tuple(notes)


def slope_table(rows: pd.DataFrame) -> Table | None:
    """Fitted slope of log variance against log minibatch size per model × estimator × group."""
    slopes = select(rows, experiment=VARIANCE, metric=LOG_VARIANCE_SLOPE)
    if slopes.empty:
        return None
    table_rows: list[list[Value]] = []
    for model in models_of(slopes, VARIANCE):
        for name in estimator_order(model, select(slopes, model=model)):
            cell = select(slopes, model=model, estimator=name)
            for group in (*paper.headline_groups(model, cell["param_group"]), "all"):
                epochs = select(cell, param_group=group)["epoch"].dropna()
                for epoch in sorted({float(e) for e in epochs}):
                    slope = over_seeds(cell, VARIANCE, model, name, metric=LOG_VARIANCE_SLOPE,
                                       param_group=group, epoch=epoch)
                    table_rows.append([model, marked(cell, name), group, epoch,
                                       slope, slope, slope])
    if not table_rows:
        return None
    return assemble(
        "variance_slopes",
        "Slope of log gradient variance against log minibatch size",
        (
            *GROUP_EPOCH_KEYS,
            Column("slope", "fixed2", part=MEAN),
            Column("95% CI low", "fixed2", part=LOW),
            Column("95% CI high", "fixed2", part=HIGH),
        ),
        table_rows,
        (
            "A slope near -1: variance falls as 1/M (independent noise per example); "
            "near 0: a shared noise sample's covariance dominates (Kingma et al. 2015).",
            *bounds_note([row[4] for row in table_rows], "the stored 95 % interval of the fit"),
            *objective_notes(slopes, list(set(slopes["estimator"].dropna()))),
        ),
    )


def decomposition_table(rows: pd.DataFrame) -> Table | None:
    """Noise and data parts of the variance (law of total variance) and SNR, at minibatch 100,
    the last checkpoint; the noise share is noise / variance seed by seed."""
    variance = select(rows, experiment=VARIANCE)
    table_rows: list[list[Value]] = []
    batches: set[int] = set()
    left_out: list[str] = []
    for model in models_of(variance, VARIANCE):
        scoped, notes = at_one_checkpoint(select(variance, model=model))
        left_out += notes
        batch = nearest_batch_size(select(scoped, metric=GRAD_VARIANCE)["batch_size"])
        if batch is None:
            continue
        batches.add(batch)
        epochs = select(scoped, metric=GRAD_VARIANCE, batch_size=batch)["epoch"].dropna()
        epoch = float(epochs.max()) if not epochs.empty else None
        for name in estimator_order(model, scoped):
            for group in paper.headline_groups(model, scoped["param_group"]):
                total, noise, data, snr = (
                    outcomes(scoped, VARIANCE, model, name, metric=metric, param_group=group,
                             batch_size=batch, epoch=epoch)
                    for metric in DECOMPOSITION_METRICS
                )
                share = derive(lambda n, t: n / t if t > 0 else float("nan"), noise, total)
                table_rows.append([
                    model, marked(scoped, name), group, epoch,
                    *(estimate(part) for part in (total, noise, data, share, snr)),
                ])
    if not table_rows:
        return None
    return assemble(
        "variance_decomposition",
        "Noise and data parts of the gradient variance, and signal-to-noise ratio",
        (
            *GROUP_EPOCH_KEYS,
            Column("variance", "sci"),
            Column("noise part", "sci"),
            Column("data part", "sci"),
            Column("noise share", "percent"),
            Column("SNR", "sci"),
        ),
        table_rows,
        (
            f"Minibatch {', '.join(str(b) for b in sorted(batches))}, last checkpoint. "
            "Law of total "
            "variance: variance = E_B[Var_eps(g|B)] (noise) + Var_B(E_eps[g|B]) (data). SNR = "
            "|E[g]| / std[g] per parameter, root mean square over the group, squares debiased "
            "(Rainforth et al. 2018).",
            *objective_notes(variance, list(set(variance["estimator"].dropna()))),
            *coverage_notes(variance),
            *dict.fromkeys(left_out),
        ),
    )
