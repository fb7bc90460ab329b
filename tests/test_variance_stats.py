"""Statistical tests of gradbench.measure.variance_stats: the debiased SNR and interval coverage.

Simulated draws ĝ_bkp = μ_p + d_p u_bp + s_p e_bkp (B minibatches, K noise draws) have closed-form
truths: Var ĝ_p = d_p² + s_p², noise part s_p², data part d_p², SNR_p = |μ_p| / √(d_p² + s_p²), and
the group's SNR is the root mean square of SNR_p.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import Tensor

from gradbench.measure import variance_stats
from gradbench.measure.variance_stats import group_statistics
from tests.helpers import z_for

DTYPE = torch.float64


@pytest.fixture
def one_thread():
    """Many tiny products: threads only contend on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _student_t(shape, nu: float, generator: torch.Generator) -> Tensor:
    """Unit-variance Student-t draws: z / √(χ²_ν / ν) · √((ν − 2) / ν)."""
    z = torch.randn(shape, generator=generator, dtype=DTYPE)
    chi2 = 2.0 * torch._standard_gamma(torch.full(shape, nu / 2, dtype=DTYPE), generator=generator)
    return z / (chi2 / nu).sqrt() * math.sqrt((nu - 2) / nu)


def _correlated_t(shape, rho: float, nu: float, generator: torch.Generator) -> Tensor:
    """Unit variance, correlation ρ across the last dimension through a common t factor."""
    common = _student_t((*shape[:-1], 1), nu, generator)
    return math.sqrt(rho) * common + math.sqrt(1 - rho) * _student_t(shape, nu, generator)


def _rows(rows: list[dict], group: str) -> dict[str, dict]:
    return {r["metric"]: r for r in rows if r["param_group"] == group}


# Points and intervals -------------------------------------------------------------------------


@pytest.mark.parametrize("noise_draws", [1, 2, 4])
@pytest.mark.parametrize("signal", [0.0, 0.05, 3.0])
def test_every_point_lies_in_its_interval_and_snr_intervals_are_nonnegative(noise_draws, signal):
    generator = torch.Generator().manual_seed(noise_draws)
    draws = signal + _correlated_t((40, 50), 0.3, 5.0, generator)
    rows = group_statistics(
        {"w": draws, "v": draws[:, :7] * 0.01}, noise_draws=noise_draws, replicates=300
    )
    assert rows
    for row in rows:
        assert row["ci_low"] <= row["value"] <= row["ci_high"], row
        if row["metric"] == "snr":
            assert row["ci_low"] >= 0.0, row


def test_zero_variance_gives_a_point_interval():
    draws = torch.ones(20, 3, dtype=DTYPE)
    by_metric = _rows(group_statistics({"w": draws}, noise_draws=2), "w")
    assert by_metric["grad_variance"]["value"] == 0.0
    assert by_metric["grad_variance"]["ci_low"] == by_metric["grad_variance"]["ci_high"] == 0.0
    assert math.isnan(by_metric["snr"]["value"])  # every component deterministic


def test_interval_method_is_described():
    assert "bootstrap" in variance_stats.INTERVAL_METHOD
    assert "1997" in variance_stats.INTERVAL_METHOD


# SNR: its expectation does not drift with the number of draws -------------------------------


@pytest.mark.parametrize("draws", [100, 1600])
def test_debiased_squared_snr_is_unbiased_and_the_snr_does_not_drift(draws, one_thread):
    """Groups of 200 independent normal parameters with SNR 0, 0.1 and 1 (K = 1). The group's
    debiased mean squared SNR has its mean within z·SE of the true SNR² at 100 and at 1600
    draws; the plug-in mean of ḡ² / σ̂² lies 1 / R above it (> 2 z SE at zero signal). At zero
    signal the reported SNR, the root of the clamped group mean, stays under its floor
    E √max(0, N(0, s²)) = 0.41 √s, s = √2 / (R √P) for P parameters (0.5 allows for the
    F distribution's skew), against 0.34 / √R for a mean of per-parameter roots."""
    levels = {"zero": 0.0, "tenth": 0.1, "one": 1.0}
    size, repeats = 200, 24
    generator = torch.Generator().manual_seed(draws)
    squared = {name: [] for name in levels}
    roots = {name: [] for name in levels}
    for repeat in range(repeats):
        tensors = {
            name: snr + torch.randn(draws, size, generator=generator, dtype=DTYPE)
            for name, snr in levels.items()
        }
        rows = group_statistics(tensors, {n: [n] for n in levels}, replicates=20, seed=repeat)
        for row in rows:
            if row["metric"] == "snr_squared":
                squared[row["param_group"]].append(row["value"])
            elif row["metric"] == "snr":
                roots[row["param_group"]].append(row["value"])
    z = z_for(len(levels))
    for name, snr in levels.items():
        values = torch.tensor(squared[name], dtype=DTYPE)
        se = values.std().item() / math.sqrt(repeats)
        error = abs(values.mean().item() - snr**2)
        assert error <= z * se, (name, draws, values.mean().item(), snr**2, z * se)
        if snr == 0.0:  # the test has the power to see the plug-in's bias
            assert 1.0 / draws > 2 * z * se, (name, draws, se)
    zero = torch.tensor(roots["zero"], dtype=DTYPE)
    floor = 0.5 * (2 / size) ** 0.25 / math.sqrt(draws)
    assert zero.mean().item() < floor + z * zero.std().item() / math.sqrt(repeats), zero.mean()


# Coverage -------------------------------------------------------------------------------------


COVERAGE_FAMILY_RATE = 0.05
"""Family-wise false-failure rate of the coverage test, Bonferroni over the metrics."""


@pytest.mark.slow
def test_intervals_cover_heavy_tailed_draws_from_the_established_minibatch_count(one_thread):
    """400 replicates of B = MIN_MINIBATCHES_FOR_COVERAGE (50) minibatches × K = 2 noise draws
    (100 draws, the quick profile's) of 300 parameters; data and noise parts Student-t (ν = 5),
    correlated 0.1 across parameters through a common factor; |μ_p| / σ_p uniform on [1, 2].
    Each metric's coverage lies in 95 % ± the Bonferroni binomial tolerance (≈ 92.4–97.6 %, the
    93–97 % band widened by the test's own sampling error)."""
    b = variance_stats.MIN_MINIBATCHES_FOR_COVERAGE
    assert b is not None and b <= 50
    k, size, repeats, rho, nu = 2, 300, 400, 0.1, 5.0
    generator = torch.Generator().manual_seed(1)
    data_sd = 0.5 + torch.rand(size, generator=generator, dtype=DTYPE)
    noise_sd = 0.5 + torch.rand(size, generator=generator, dtype=DTYPE)
    sd = (data_sd.square() + noise_sd.square()).sqrt()
    sign = torch.where(torch.rand(size, generator=generator) < 0.5, -1.0, 1.0).to(DTYPE)
    mu = (1.0 + torch.rand(size, generator=generator, dtype=DTYPE)) * sd * sign
    truth = {
        "grad_variance": sd.square().mean().item(),
        "grad_variance_noise": noise_sd.square().mean().item(),
        "grad_variance_data": data_sd.square().mean().item(),
        "snr": (mu / sd).square().mean().sqrt().item(),
        "snr_squared": (mu / sd).square().mean().item(),
    }
    hits = dict.fromkeys(truth, 0)
    for repeat in range(repeats):
        draws = (
            mu
            + data_sd * _correlated_t((b, 1, size), rho, nu, generator)
            + noise_sd * _correlated_t((b, k, size), rho, nu, generator)
        )
        rows = group_statistics(
            {"w": draws.reshape(b * k, size)}, {"w": ["w"]}, noise_draws=k, seed=repeat
        )
        for metric, row in _rows(rows, "w").items():
            if metric in truth:
                hits[metric] += row["ci_low"] <= truth[metric] <= row["ci_high"]
                assert row["coverage_checked"], row
    z = float(stats.norm.isf(COVERAGE_FAMILY_RATE / (2 * len(truth))))
    tolerance = z * math.sqrt(0.95 * 0.05 / repeats)
    coverage = {metric: hit / repeats for metric, hit in hits.items()}
    for metric in truth:
        assert abs(coverage[metric] - 0.95) <= tolerance, (metric, coverage, tolerance)


@pytest.mark.parametrize("established", [None, 20])
@pytest.mark.parametrize("minibatches", [10, 20, 40])
def test_rows_say_whether_their_draw_count_reaches_the_verified_one(
    established, minibatches, monkeypatch
):
    monkeypatch.setattr(variance_stats, "MIN_MINIBATCHES_FOR_COVERAGE", established)
    generator = torch.Generator().manual_seed(minibatches)
    draws = 1.0 + torch.randn(2 * minibatches, 6, generator=generator, dtype=DTYPE)
    rows = group_statistics({"w": draws, "v": draws[:, :2]}, noise_draws=2, replicates=50)
    expected = established is not None and minibatches >= established
    assert {r["metric"] for r in rows} >= set(variance_stats.METRICS)
    for row in rows:
        assert row["coverage_checked"] is expected, row
