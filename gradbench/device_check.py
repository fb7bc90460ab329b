"""Agreement of two devices' rows at the same seed: is a GPU run the CPU run's measurement?

The same cells (same profile, seed and configuration, but for the device) give different draws on
two devices (their random streams differ), so each statistic is compared within its intervals:
two estimates of one quantity agree when their 95 % intervals overlap, |a − b| ≤ h_a + h_b with
h the half-widths (for two independent unbiased estimates this fails about 0.6 % of the time).
Rows without an interval (a count, a schedule value) must be equal up to ``EXACT_RTOL``; timing
rows (the timing experiment, training's ``wall_clock_s``) are not compared but set side by
side as a speed ratio, each measured with the device synchronised before the clock is read.
"""

from __future__ import annotations

import math

import pandas as pd

from gradbench.experiments.metrics import WALL_CLOCK_S

KEY = ["experiment", "model", "estimator", "seed", "batch_size", "epoch", "param_group", "metric"]
"""What identifies one statistic across devices (the configuration hash names the device)."""
TIMING_EXPERIMENT = "timing"
TIMING_METRICS = frozenset({WALL_CLOCK_S})
"""Timing rows: every row of the timing experiment, and these metrics of the others."""
EXACT_RTOL = 1e-6
"""Relative tolerance of rows without an interval (configuration-derived values)."""
MAX_DISAGREEMENT = 0.02
"""Fraction of compared rows allowed to disagree before the check fails: with hundreds of rows
a few overlap failures are expected by chance."""


def paired_rows(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Rows of both runs joined on :data:`KEY` (suffixes ``_ref`` and ``_other``), finished
    (status ok) on both; a row that only one device has is left out."""
    columns = [*KEY, "value", "ci_low", "ci_high", "status"]
    joined = reference[columns].merge(
        other[columns], on=KEY, suffixes=("_ref", "_other"), validate="one_to_one"
    )
    finished = (joined["status_ref"] == "ok") & (joined["status_other"] == "ok")
    return joined[finished].reset_index(drop=True)


def _agrees(row: pd.Series) -> bool:
    a, b = float(row["value_ref"]), float(row["value_other"])
    if not (math.isfinite(a) and math.isfinite(b)):
        return (math.isnan(a) and math.isnan(b)) or a == b
    bounds = [row["ci_low_ref"], row["ci_high_ref"], row["ci_low_other"], row["ci_high_other"]]
    if any(pd.isna(v) for v in bounds):
        return math.isclose(a, b, rel_tol=EXACT_RTOL, abs_tol=1e-12)
    half_ref = (float(row["ci_high_ref"]) - float(row["ci_low_ref"])) / 2
    half_other = (float(row["ci_high_other"]) - float(row["ci_low_other"])) / 2
    return abs(a - b) <= half_ref + half_other


def _is_timing(rows: pd.DataFrame) -> pd.Series:
    return (rows["experiment"] == TIMING_EXPERIMENT) | rows["metric"].isin(TIMING_METRICS)


def compare(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Every shared statistic (timings apart) with ``agrees`` (module docstring)."""
    joined = paired_rows(reference, other)
    statistics = joined[~_is_timing(joined)].copy()
    statistics["agrees"] = [bool(_agrees(row)) for _, row in statistics.iterrows()]
    return statistics


def agreement_summary(statistics: pd.DataFrame) -> pd.DataFrame:
    """Per experiment: rows compared, rows that agree, and their fraction."""
    summary = statistics.groupby("experiment")["agrees"].agg(rows="size", agree="sum")
    summary["fraction"] = summary["agree"] / summary["rows"]
    return summary.reset_index()


def timing_ratios(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """Timing rows of both runs side by side, with reference / other (the speed-up)."""
    joined = paired_rows(reference, other)
    timings = joined[_is_timing(joined)].copy()
    timings["speed_up"] = timings["value_ref"] / timings["value_other"]
    return timings[[*KEY, "value_ref", "value_other", "speed_up"]].reset_index(drop=True)


def peak_memory(rows: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and model, the largest peak device memory of a cell (MiB)."""
    if "peak_memory_bytes" not in rows:
        return pd.DataFrame(columns=["experiment", "model", "peak_mib"])
    peaks = rows.groupby(["experiment", "model"])["peak_memory_bytes"].max() / 2**20
    return peaks.rename("peak_mib").reset_index()


def passes(statistics: pd.DataFrame) -> bool:
    """Whether at most :data:`MAX_DISAGREEMENT` of the compared rows disagree (and some were
    compared)."""
    return len(statistics) > 0 and (~statistics["agrees"]).mean() <= MAX_DISAGREEMENT
