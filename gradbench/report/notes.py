"""The wording tables share: the † mark of other objectives, and the notes that say what seeds,
intervals, marks and ranks mean — written from what a table holds, so a note never claims a
test that was not possible."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from gradbench.measure.variance import DIGEST_COLUMN
from gradbench.measure.variance_stats import MIN_MINIBATCHES_FOR_COVERAGE
from gradbench.report.aggregate import ALPHA, LEVEL, Estimate
from gradbench.report.rows import VARIANCE, epoch_label, other_objective, select
from gradbench.results import STATUS_DIVERGED, STATUS_OK

if TYPE_CHECKING:
    from gradbench.report.table import Comparison

OTHER_OBJECTIVE = "†"
"""Marks an estimator whose direction is the gradient of another objective than the ELBO."""

OTHER_OBJECTIVE_NOTE = (
    f"{OTHER_OBJECTIVE} Not an estimate of the ELBO's gradient (as stored with the run): the "
    "direction of another objective, shown for comparison, not beside unbiased estimates as "
    "their equal."
)

EXCLUDED = (
    f"Rows marked {OTHER_OBJECTIVE} are kept out of the comparison and the ranks: they follow "
    "another objective's gradient, so they are never chosen best against unbiased estimates."
)
"""Why † rows take no part in a comparison (:attr:`Comparison.excluded`)."""

PERCENT = f"{100 * LEVEL:.0f} %"


def seed_phrase(count: int) -> str:
    """"1 seed", "3 seeds"."""
    return f"{count} seed" if count == 1 else f"{count} seeds"


def marked(rows: pd.DataFrame, estimator: str) -> str:
    """The estimator's label, with :data:`OTHER_OBJECTIVE` when its direction is not an ELBO
    gradient."""
    return f"{estimator} {OTHER_OBJECTIVE}" if other_objective(rows, estimator) else estimator


def objective_notes(rows: pd.DataFrame, estimators: Sequence[str]) -> tuple[str, ...]:
    """The other-objective note, when a table lists an estimator it marks."""
    return (OTHER_OBJECTIVE_NOTE,) if any(other_objective(rows, e) for e in estimators) else ()


def coverage_notes(rows: pd.DataFrame) -> tuple[str, ...]:
    """A note when some variance intervals come from fewer minibatches than the number at which
    their coverage was verified by simulation (gradbench.measure.variance_stats)."""
    flags = select(rows, experiment=VARIANCE)["coverage_checked"].str.lower()
    if not (flags == "false").any():
        return ()
    return (
        f"Intervals of {int((flags == 'false').sum())} variance rows come from fewer than "
        f"{MIN_MINIBATCHES_FOR_COVERAGE} minibatches, below which their 95 % coverage was not "
        "verified in simulations with heavy-tailed (Student-t, 5 d.o.f.) gradients: read them as "
        "approximate.",
    )


def at_one_checkpoint(rows: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The rows a table may compare, and notes naming the cells left out.

    Each code version trains its checkpoints anew, and another round-off in training gives other
    parameters (so does another CPU: one seed trained different parameters on this project's
    Intel and AMD machines), so cells compare only at one set of parameters: their checkpoint
    digest, or, for rows from before the digest was stored, their code version (on one machine
    a CPU checkpoint is a deterministic function of the code, its settings and the seed). At
    each model, seed and checkpoint epoch the compared set is the one most cells share (ties:
    the most recently measured); a note names the compared set of each, and a measured cell of
    another set is left out, as if missing, and listed. Rows without a minibatch size (derived:
    slopes) and rows that measured nothing (lost cells) are kept.
    """
    if rows.empty:
        return rows, ()
    digests = rows[DIGEST_COLUMN].astype("string") if DIGEST_COLUMN in rows else pd.Series(
        pd.NA, index=rows.index, dtype="string")
    versions = rows["code_version"].astype("string").fillna("unknown")
    identity = digests.fillna(CODE_PREFIX + versions)
    cells = rows["status"].isin([STATUS_OK, STATUS_DIVERGED]) & rows["batch_size"].notna()
    keep = pd.Series(True, index=rows.index)
    left_out: list[str] = []
    compared: dict[tuple[str, int], list[str]] = {}
    by_code = False
    for (model, seed, epoch), part in rows[cells].groupby(["model", "seed", "epoch"], dropna=True):
        counts = part.assign(identity=identity[part.index]).groupby("identity").agg(
            cells=("config_hash", "nunique"), newest=("created_at", "max"))
        chosen = counts.sort_values(["cells", "newest"]).index[-1]
        by_code |= chosen.startswith(CODE_PREFIX)
        compared.setdefault((model, int(seed)), []).append(
            f"{epoch_label(epoch)} {_parameters(chosen)}")
        left = part[identity[part.index] != chosen]
        keep[left.index] = False
        for (name, other), cell in left.assign(identity=identity[left.index]).groupby(
                ["estimator", "identity"], sort=True):
            sizes = ", ".join(str(int(b)) for b in sorted(set(cell["batch_size"])))
            left_out.append(f"{model} / {name} at M = {sizes}, {epoch_label(epoch)}, seed "
                            f"{int(seed)} ({_parameters(other)}; compared: {_parameters(chosen)})")
    sets = "; ".join(f"{model}, seed {seed}: {', '.join(found)}"
                     for (model, seed), found in sorted(compared.items()))
    notes = [
        "Parameters compared, one set per checkpoint (every cell of a column measured at it): "
        f"{sets}."
    ] if compared else []
    if left_out:
        notes.append(
            "Left out, measured at other parameters than the cells compared at their checkpoint "
            f"(another digest or, without one, other code): {'; '.join(left_out)}. A left-out "
            "cell counts as missing here; gradbench all measures it again where other code made "
            "it, and every cell at a checkpoint it trains anew (a checkpoint loaded from its "
            "file keeps the cells stored at it: rerun those with --force)."
        )
    if by_code:
        notes.append(
            "Some compared cells predate the checkpoint digest: they share parameters by being "
            "made by one code version on one machine (there a CPU checkpoint is a deterministic "
            "function of the code, its settings and the seed)."
        )
    return rows[keep], tuple(notes)


CODE_PREFIX = "code "
"""How :func:`at_one_checkpoint` names the parameters of rows without a digest: their code."""


def _parameters(identity: str) -> str:
    """A compared set of parameters as a note says it: ``digest D`` or ``code C`` (7 digits)."""
    if identity.startswith(CODE_PREFIX):
        return f"code {identity.removeprefix(CODE_PREFIX)[:7]}, no digest"
    return f"digest {identity}"


def bounds_note(cells: Sequence[object], within: str) -> tuple[str, ...]:
    """What a table's low / high columns are where a cell has one seed: ``within`` the seed (its
    stored interval); over several seeds :func:`seeds` says what they are."""
    single = [c for c in cells if isinstance(c, Estimate) and c.n == 1]
    if not single:
        return ()
    several = any(isinstance(c, Estimate) and c.over_seeds for c in cells)
    return (f"Low / high{' of a one-seed cell' if several else ''}: {within}.",)


def seeds(estimates: Sequence[Estimate], apart: bool = False) -> tuple[str, ...]:
    """What a cell over seeds shows: "1 seed" (its value) or "3 seeds" (the mean, and the
    t-interval x̄ ± t_{0.975, n−1} · sd / √n as ± its half-width, or in low / high columns when
    ``apart``), n per cell where the counts differ, and the seeds left out because they diverged
    or failed."""
    counts = sorted({e.n for e in estimates if e.n > 0})
    if not counts:
        return ()
    if counts == [1]:
        found = [
            "1 seed: each number is that seed's measurement; no interval over seeds is "
            "possible with one seed."
        ]
    else:
        span = seed_phrase(counts[-1]) if len(counts) == 1 else (
            f"{counts[0]} to {seed_phrase(counts[-1])}"
        )
        shown = (
            f"each value is the mean over its n seeds, low / high the {PERCENT} t-interval over "
            "them" if apart else
            f"each cell is the mean over its n seeds ± the half-width of the {PERCENT} "
            "t-interval over them"
        )
        found = [
            f"{span}: {shown}, t(0.975, n − 1) · sd / √n (Student's t, n − 1 degrees of freedom)"
            + ("; n is given in each cell, the seeds differing between rows" if len(counts) > 1
               else "")
            + ("; a cell of one seed shows that seed's value" if counts[0] == 1 else "")
            + "."
        ]
    if any(e.lost and e.n > 0 for e in estimates):
        found.append(
            "Seeds that diverged or failed are left out of a cell's mean (in parentheses: how "
            "many) and listed in the diverged-cells table."
        )
    return tuple(found)


def comparison(spec: Comparison, several: bool) -> list[str]:
    """Which row is best and why, the paired test (when several seeds allow one), and which rows
    take no part."""
    within = f" within each {spec.scope}" if spec.scope else ""
    logged = any(c.log for c in spec.columns)
    if several:
        found = [
            f"Best (bold): in each compared column{within}, the best mean among the compared rows "
            f"({spec.better}). ≈: not distinguishable from the best by a paired t-test over "
            f"seeds (scipy.stats.ttest_rel, two-sided, α = {ALPHA:g}), pairs formed by seed (the "
            "same seed: the same initialisation, data order and checkpoints for every "
            "estimator) on the seeds both rows measured"
            + (", on log values (a ratio that holds across seeds is a difference)" if logged
               else "")
            + "; a cell with a diverged or failed seed is not chosen best."
        ]
    else:
        found = [
            f"Best (bold): in each compared column{within}, the best value among the compared "
            f"rows ({spec.better}). 1 seed: no test is possible with one seed, so only the best "
            "is marked."
        ]
    if spec.excluded:
        found.append(spec.excluded)
    return found


def ranks(several: bool, scope: str) -> str:
    """How the average rank is made: rank within each seed, mean over columns, then seeds."""
    if several:
        within = f" and each {scope}" if scope else ""
        return (
            f"avg. rank: within each seed{within}, the compared rows are ranked on every compared "
            "column (1 = best, ties share their mean rank, a diverged seed ranks last, a failed "
            "one is not ranked); a row's ranks are averaged over the columns, then over seeds; in "
            "parentheses its standard error, sd / √n over the n seeds."
        )
    return (
        f"avg. rank: the rank among the compared rows{f' of each {scope}' if scope else ''} "
        "on every compared column (1 = best, ties share their mean rank, a diverged cell ranks "
        "last), averaged over the columns; 1 seed: no standard error with one seed."
    )
