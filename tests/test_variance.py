"""Tests of the gradient-variance measurement: statistics, draws, checkpoints, cells, command.

Statistical assertions use intervals or standard errors of the quantities compared, with fixed
seeds; the models are small and trained on scikit-learn's digits so the module runs in well
under two minutes on two CPU cores.
"""

from __future__ import annotations

import copy

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import Tensor

from gradbench.cli import main
from gradbench.data import DataConfig, load_dataset
from gradbench.estimators import make_estimator
from gradbench.estimators.local_reparam import LocalReparameterization
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.measure import variance, variance_stats
from gradbench.measure.checkpoints import TrainingConfig, load_or_train, stable_seed
from gradbench.measure.toy import toy_draws
from gradbench.measure.variance import (
    gradient_samples,
    gradient_summary,
    measure_variance,
    minibatch_indices,
)
from gradbench.measure.variance_stats import (
    METRICS,
    SLOPE_METRIC,
    DrawSummary,
    group_statistics,
    log_variance_slope,
)
from gradbench.models.toy import make_problem
from gradbench.results import Cell, Provenance, ResultStore
from gradbench.models import MODELS

CPU = torch.device("cpu")
Z = 4.0  # two-sided z at a ~1e-4 failure rate per comparison
SMALL_VAE = {"hidden_sizes": "16", "latent_dim": "4", "init_std": "0.3"}
SMALL_MLP = {"hidden_sizes": "32,32"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(dataset="digits"), CPU)


def _by(rows: list[dict] | pd.DataFrame, group: str, metric: str) -> dict:
    frame = pd.DataFrame(rows)
    match = frame[(frame["param_group"] == group) & (frame["metric"] == metric)]
    assert len(match) == 1, f"expected one {group}/{metric} row, got {len(match)}"
    return match.iloc[0].to_dict()


def _slope_standard_error(rows: pd.DataFrame, estimator: str, group: str) -> float:
    """SE of the fitted log-log slope from each size's 95% interval of the variance.

    slope = Σ w_i log v_i with w_i = (x_i − x̄) / Sxx, so SE² = Σ w_i² SE(log v_i)², SE(log v_i)
    read off the interval as (log high − log low) / (2 · 1.96).
    """
    cells = rows[
        (rows["estimator"] == estimator)
        & (rows["param_group"] == group)
        & (rows["metric"] == "grad_variance")
    ].sort_values("batch_size")
    x = np.log(cells["batch_size"].to_numpy(dtype=float))
    weights = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    log_se = (np.log(cells["ci_high"].to_numpy()) - np.log(cells["ci_low"].to_numpy())) / (2 * 1.96)
    return float(np.sqrt((weights**2 * log_se**2).sum()))


# Statistics on plain draw tensors -----------------------------------------------------------


def test_toy_reparam_variance_of_mu_is_four_sigma_squared():
    """f = (z − t)², z = μ + σε: ∂f/∂μ = 2(μ + σε − t), so Var = 4σ² and SNR = |μ − t| / σ."""
    sigma, mu, target = 1.3, 0.5, -0.4
    problem = make_problem("gaussian-quadratic", {"mu": mu, "sigma": sigma, "target": target})
    draws = toy_draws(problem, make_estimator("reparam"), samples=20_000, seed=3)
    rows = group_statistics(draws, seed=3)
    exact = 4 * sigma**2
    row = _by(rows, "mu", "grad_variance")
    assert row["ci_low"] <= exact <= row["ci_high"], row
    # Power: the interval (relative SE √(2/R) ≈ 1 %) excludes a 10 % error.
    assert row["ci_high"] < 1.1 * exact and row["ci_low"] > 0.9 * exact, row
    assert row["n"] == 20_000
    snr = _by(rows, "mu", "snr")
    assert snr["ci_low"] <= abs(mu - target) / sigma <= snr["ci_high"], snr
    trace = _by(rows, "all", "grad_variance_trace")
    assert trace["value"] == pytest.approx(
        _by(rows, "mu", "grad_variance")["value"] + _by(rows, "sigma", "grad_variance")["value"]
    )


def _two_level_draws(
    minibatches: int, noise_draws: int, data_sd: float, noise_sd: float, seed: int, size: int = 30
) -> Tensor:
    """ĝ_bk = 1 + a_b + e_bk over P parameters, minibatch-major [B·K, P], float64."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn((minibatches, 1, size), generator=generator, dtype=torch.float64) * data_sd
    e = torch.randn((minibatches, noise_draws, size), generator=generator, dtype=torch.float64)
    return (1.0 + a + noise_sd * e).reshape(minibatches * noise_draws, size)


def test_noise_plus_data_is_total_and_recovers_the_components():
    draws = _two_level_draws(300, 3, data_sd=1.5, noise_sd=0.8, seed=0)
    rows = group_statistics({"w": draws}, noise_draws=3, seed=1)
    total = _by(rows, "w", "grad_variance")
    noise = _by(rows, "w", "grad_variance_noise")
    data = _by(rows, "w", "grad_variance_data")
    assert noise["value"] + data["value"] == pytest.approx(total["value"], rel=1e-12)
    for row, exact in ((noise, 0.8**2), (data, 1.5**2), (total, 0.8**2 + 1.5**2)):
        assert row["ci_low"] <= exact <= row["ci_high"], row
    # The one-way ANOVA's corrections matter: the naive variance of minibatch means,
    # SSB / (B − 1), overstates the data variance by noise / K, far outside the interval.
    means = draws.reshape(300, 3, 30).mean(1)
    naive = means.var(0).mean().item()
    assert not data["ci_low"] <= naive <= data["ci_high"]


@pytest.mark.parametrize("resampled", [variance_stats.SNR_BOOTSTRAP_PARAMETERS, 300])
def test_snr_interval_covers_the_true_mean_snr_despite_the_bias_of_abs_mean(resampled, monkeypatch):
    """|ḡ| overstates |E ĝ| for parameters whose mean is small next to its standard error; over
    2000 such parameters the bias far exceeds the spread; the debiased SNR's interval covers
    the true mean SNR."""
    generator = torch.Generator().manual_seed(6)
    mean = torch.randn(2000, generator=generator, dtype=torch.float64) * 0.15
    draws = _two_level_draws(50, 2, data_sd=0.6, noise_sd=0.8, seed=6, size=2000) - 1.0 + mean
    full = _by(group_statistics({"w": draws}, noise_draws=2, seed=6), "all", "snr")
    # Resampling only a subset of the parameters keeps the estimate, and the interval valid.
    monkeypatch.setattr(variance_stats, "SNR_BOOTSTRAP_PARAMETERS", resampled)
    snr = _by(group_statistics({"w": draws}, noise_draws=2, seed=6), "all", "snr")
    assert snr["value"] == full["value"]
    exact = mean.square().mean().sqrt().item()  # root mean square; std = √(0.6² + 0.8²) = 1
    plug_in = (draws.mean(0).square() / draws.var(0)).mean().sqrt().item()
    assert plug_in > exact and snr["value"] < plug_in  # debiased below the plug-in's upward bias
    assert 0.0 <= snr["ci_low"] <= snr["value"] <= snr["ci_high"], snr
    assert snr["ci_low"] <= exact <= snr["ci_high"], (snr, exact)


def test_snr_subset_keeps_small_tensors_and_weights_tensors_by_their_fraction(monkeypatch):
    """A 4000-parameter tensor of small SNR beside a 40-parameter one of large SNR: with 200
    parameters resampled, the small tensor still gets replicates of its own (a finite interval),
    and the group's interval stays close to the one from resampling every parameter: each
    tensor's subset counts by the inverse of its sampled fraction, so the oversampled small
    tensor does not dominate the replicates."""
    generator = torch.Generator().manual_seed(3)
    big = _two_level_draws(60, 2, data_sd=0.6, noise_sd=0.8, seed=3, size=4000) - 1.0
    big += torch.randn(4000, generator=generator, dtype=torch.float64) * 0.1
    small = _two_level_draws(60, 2, data_sd=0.6, noise_sd=0.8, seed=4, size=40) + 2.0
    draws = {"big": big, "small": small}
    full = group_statistics(draws, noise_draws=2, seed=5)
    monkeypatch.setattr(variance_stats, "SNR_BOOTSTRAP_PARAMETERS", 200)
    monkeypatch.setattr(variance_stats, "SNR_BOOTSTRAP_PER_TENSOR", 40)
    subset = group_statistics(draws, noise_draws=2, seed=5)
    small_row = _by(subset, "small", "snr_squared")
    assert small_row["ci_low"] < small_row["value"] < small_row["ci_high"]
    whole, part = _by(full, "all", "snr_squared"), _by(subset, "all", "snr_squared")
    assert part["value"] == whole["value"]
    width = part["ci_high"] - part["ci_low"]
    assert width < 2.0 * (whole["ci_high"] - whole["ci_low"]), (part, whole)


def test_single_noise_draw_has_no_split_and_matches_sample_variance():
    draws = _two_level_draws(200, 1, data_sd=1.0, noise_sd=1.0, seed=2)
    rows = group_statistics({"w": draws}, seed=0)
    metrics = {r["metric"] for r in rows}
    assert metrics == {"grad_variance", "grad_variance_trace", "snr", "snr_squared"}
    assert _by(rows, "w", "grad_variance")["value"] == pytest.approx(draws.var(0).mean().item())


def test_deterministic_components_are_left_out_of_the_snr():
    varying = torch.randn(100, 3, dtype=torch.float64)
    draws = torch.cat([varying, torch.full((100, 1), 2.0, dtype=torch.float64)], 1)
    rows = group_statistics({"w": draws}, seed=0)
    snr = _by(rows, "w", "snr")["value"]
    assert math.isfinite(snr)
    squared = (varying.mean(0).square() - varying.var(0) / 100) / varying.var(0) * 97 / 99
    assert snr == pytest.approx(squared.mean().clamp(min=0).sqrt().item())


def test_log_variance_slope():
    fit = log_variance_slope([1, 4, 16, 64], [2.0 / m for m in (1, 4, 16, 64)])
    assert fit["value"] == pytest.approx(-1.0)
    noisy = log_variance_slope([1, 4, 16, 64], [1.0, 0.3, 0.05, 0.02])
    assert noisy["ci_low"] < noisy["value"] < noisy["ci_high"]
    assert math.isnan(log_variance_slope([1, 4], [1.0, 0.25])["ci_low"])


# Draws ---------------------------------------------------------------------------------------


def test_minibatch_indices_are_distinct_within_a_row(digits):
    index = minibatch_indices(len(digits.train), 50, 7, torch.Generator().manual_seed(0))
    assert index.shape == (7, 50)
    assert all(len(set(row.tolist())) == 50 for row in index)
    with pytest.raises(ValueError, match="batch size"):
        minibatch_indices(len(digits.train), len(digits.train) + 1, 1, torch.Generator())


def _vae(digits, estimator: str = "reparam"):
    setting = Setting("gaussian-vae", SMALL_VAE)
    return build_model(setting, digits, CPU), build_estimator(setting, estimator, digits, CPU)


def test_vmap_and_loop_draws_have_the_same_distribution(digits):
    model, estimator = _vae(digits)
    draws = {}
    for vectorize in (True, False):
        torch.manual_seed(11)
        generator = torch.Generator().manual_seed(11)
        draws[vectorize] = gradient_samples(
            model, estimator, digits, 8, 600, generator, vectorize=vectorize
        )
    for name, batched in draws[True].items():
        looped = draws[False][name]
        assert batched.shape == looped.shape == (600, *dict(model.named_parameters())[name].shape)
        se = (batched.var(0) / 600 + looped.var(0) / 600).sqrt()
        varies = se > 0
        z = ((batched.mean(0) - looped.mean(0)).abs()[varies] / se[varies]).max().item()
        assert z < Z + 1.0, f"{name}: means differ by {z:.1f} standard errors"
    rows = {v: group_statistics(d, {"all": list(d)}) for v, d in draws.items()}
    a, b = (_by(rows[v], "all", "grad_variance") for v in (True, False))
    se_a, se_b = ((r["ci_high"] - r["ci_low"]) / (2 * 1.96) for r in (a, b))
    assert abs(a["value"] - b["value"]) < Z * math.hypot(se_a, se_b)


def test_streamed_summary_equals_the_summary_of_all_draws(digits):
    model, estimator = _vae(digits)
    results = []
    for fn in (gradient_samples, gradient_summary):
        torch.manual_seed(2)
        generator = torch.Generator().manual_seed(2)
        results.append(fn(model, estimator, digits, 4, 60, generator, noise_draws=3, chunk_size=9))
    whole = DrawSummary.from_draws(results[0], 3)
    streamed, path = results[1]
    assert path == "vmap" and streamed.minibatches == 20
    for name in whole.means:
        torch.testing.assert_close(streamed.means[name], whole.means[name], rtol=0, atol=0)
        torch.testing.assert_close(streamed.within[name], whole.within[name], rtol=0, atol=0)


@pytest.mark.parametrize("noise_draws", [1, 3])
def test_a_variance_cell_declares_the_memory_its_summary_holds(digits, tmp_path, noise_draws):
    """The memory a cell asks Ray for is what gradient_summary allocates (plus one chunk of
    draws), and building the model for it leaves torch's RNG where it was."""
    model, estimator = _vae(digits)
    generator = torch.Generator().manual_seed(2)
    summary, _ = gradient_summary(model, estimator, digits, 4, 60, generator,
                                  noise_draws=noise_draws)
    tables = [summary.means] + ([summary.within] if summary.within is not None else [])
    held = sum(t.numel() * t.element_size() for table in tables for t in table.values())
    assert variance.summary_bytes(model, 60, noise_draws) == held + variance.DRAW_MEMORY_BYTES
    assert variance._table_bytes(model, 60, noise_draws) == held
    torch.manual_seed(5)
    before = torch.get_rng_state()
    tasks = variance.variance_tasks(
        Setting("gaussian-vae", SMALL_VAE), ["reparam"], [4], 60, [0], digits, CPU, tmp_path,
        "test", noise_draws=noise_draws,
    )
    assert torch.equal(torch.get_rng_state(), before)
    cells = [t for t in tasks if t.cell is not None and not t.on_driver]
    assert cells and all(t.resources.memory_bytes == held + variance.DRAW_MEMORY_BYTES
                         for t in cells)


def test_a_summary_over_the_memory_bound_is_mapped_to_a_file_with_the_same_numbers(
    digits, monkeypatch
):
    model, estimator = _vae(digits)
    summaries = []
    for bound in (2**40, 0):
        monkeypatch.setattr(variance, "SUMMARY_MEMORY_BYTES", bound)
        torch.manual_seed(4)
        generator = torch.Generator().manual_seed(4)
        summaries.append(gradient_summary(model, estimator, digits, 4, 40, generator)[0])
    kept, mapped = summaries
    for name in kept.means:
        assert not kept.means[name].untyped_storage().filename
        assert mapped.means[name].untyped_storage().filename
        assert mapped.within[name].untyped_storage().filename
        torch.testing.assert_close(mapped.means[name], kept.means[name], rtol=0, atol=0)
        torch.testing.assert_close(mapped.within[name], kept.within[name], rtol=0, atol=0)
    assert variance.summary_bytes(model, 40, 2) == variance.DRAW_MEMORY_BYTES


def test_draws_use_the_mean_over_the_minibatch(digits):
    """With no noise, one draw is exactly ∇ of the minibatch mean loss at the drawn examples."""
    setting = Setting("bayes-mlp", SMALL_MLP)
    model = build_model(setting, digits, CPU)
    estimator = build_estimator(setting, "no-noise", digits, CPU)
    generator = torch.Generator().manual_seed(5)
    draws = gradient_samples(model, estimator, digits, 16, 1, generator, settle_steps=0)
    index = minibatch_indices(len(digits.train), 16, 1, torch.Generator().manual_seed(5))
    x, y = digits._minibatch("train", index[0], generator)
    model.zero_grad()
    estimator.surrogate(model(x, y, estimator)).mean().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(draws[name][0], param.grad)


class _Unbatchable(LocalReparameterization):
    """Reads a value on the host inside the forward pass, which vmap cannot batch."""

    def sample(self, node):
        out = super().sample(node)
        return out * (1.0 if float(out.detach().sum()) >= -math.inf else 0.0)


class _Diverging(LocalReparameterization):
    def sample(self, node):
        return super().sample(node) * torch.tensor(math.inf)


@pytest.mark.filterwarnings("ignore:vmap failed:RuntimeWarning")
def test_loop_fallback_where_vmap_fails_and_path_is_recorded(digits):
    model = build_model(Setting("bayes-mlp", SMALL_MLP), digits, CPU)
    paths = {}
    for estimator in (LocalReparameterization(), _Unbatchable()):
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        summary, paths[type(estimator)] = gradient_summary(
            model, estimator, digits, 4, 20, generator, noise_draws=2
        )
        assert summary is not None and summary.draws == 20
    assert paths == {LocalReparameterization: "vmap", _Unbatchable: "loop"}


def test_non_finite_draws_stop_and_report_divergence(digits):
    model = build_model(Setting("bayes-mlp", SMALL_MLP), digits, CPU)
    summary, _ = gradient_summary(
        model, _Diverging(), digits, 4, 20, torch.Generator().manual_seed(0)
    )
    assert summary is None


# Checkpoints ---------------------------------------------------------------------------------


def test_checkpoints_resume_to_the_same_parameters(digits, tmp_path):
    setting = Setting("gaussian-vae", SMALL_VAE, seed=3)
    training = TrainingConfig(batch_size=32, learning_rate=1e-2, max_steps_per_epoch=5)
    direct = load_or_train(setting, digits, CPU, 2, "reparam", tmp_path / "a", training)
    load_or_train(setting, digits, CPU, 1, "reparam", tmp_path / "b", training)
    resumed = load_or_train(setting, digits, CPU, 2, "reparam", tmp_path / "b", training)
    assert direct.steps == resumed.steps == 10
    for name, value in direct.model_state.items():
        torch.testing.assert_close(value, resumed.model_state[name], rtol=0, atol=0)
    assert len(list((tmp_path / "b" / "checkpoints").glob("*.pt"))) == 2
    assert not list((tmp_path / "b" / "checkpoints").glob(".partial-*"))
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "b" / "checkpoints").glob("*.pt")}
    reloaded = load_or_train(setting, digits, CPU, 2, "reparam", tmp_path / "b", training)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # loaded, not trained again
    for name, value in resumed.model_state.items():
        torch.testing.assert_close(value, reloaded.model_state[name], rtol=0, atol=0)
    initial = build_model(setting, digits, CPU).state_dict()
    assert not torch.equal(initial["encoder.0.weight"], direct.model_state["encoder.0.weight"])
    # The digest rows carry: equal for equal parameters, changed by one weight's last bit.
    assert direct.digest == resumed.digest == reloaded.digest and len(direct.digest) == 16
    first = load_or_train(setting, digits, CPU, 1, "reparam", tmp_path / "b", training)
    assert first.digest != direct.digest
    nudged = copy.deepcopy(direct)
    weight = nudged.model_state["decoder.1.bias"]
    weight[0] = torch.nextafter(weight[0], weight[0] + 1)
    assert nudged.digest != direct.digest


def test_training_on_from_a_checkpoint_in_memory_leaves_it_unchanged(digits, tmp_path):
    """In one process a checkpoint is handed to every task that trains on from it: Adam's
    moments loaded from it must be copies, or the first continuation moves them for the next."""
    from gradbench.execution.task import Context
    from gradbench.measure.checkpoints import train_state

    setting = Setting("gaussian-vae", SMALL_VAE, seed=3)
    training = TrainingConfig(batch_size=32, learning_rate=1e-2, max_steps_per_epoch=5)
    context = Context(digits, CPU, tmp_path)
    earlier = train_state(setting, "reparam", training, 1, context)
    moments = {k: v.clone() for k, v in earlier["optimizer"]["state"][0].items()}
    first = train_state(setting, "reparam", training, 2, context, earlier)
    second = train_state(setting, "reparam", training, 2, context, earlier)
    for name, value in moments.items():
        assert torch.equal(earlier["optimizer"]["state"][0][name], value), name
    for name, value in first["model"].items():
        assert torch.equal(value, second["model"][name]), name


def test_stable_seed_is_stable():
    assert stable_seed(0, "reparam", 100, 10) == stable_seed(0, "reparam", 100, 10)
    assert stable_seed(0, "reparam", 100, 10) != stable_seed(0, "reparam", 10, 100)
    assert stable_seed(1, "a") == 335275758381920300  # sha256, not hash(): same in every process


# Cells ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_rows(digits, tmp_path_factory):
    """bayes-mlp (32, 32) at its initialisation, α = 1 in every layer (strong weight noise)."""
    setting = Setting("bayes-mlp", SMALL_MLP | {"input_dropout": "0.5"}, seed=0)
    store = ResultStore(tmp_path_factory.mktemp("results"))
    return measure_variance(
        setting,
        ["local-reparam", "reparam", "no-noise"],
        [1, 4, 16, 64],
        200,
        [0],
        digits,
        CPU,
        store,
        Provenance.collect(CPU, "test"),
        replicates=100,  # intervals of these rows are not asserted
    )


def test_local_reparam_slope_is_minus_one_and_shared_noise_flattens(mlp_rows, digits):
    slopes = mlp_rows[mlp_rows["metric"] == SLOPE_METRIC]
    for group in ("all", "bottom", "top"):
        local = _by(slopes[slopes["estimator"] == "local-reparam"], group, SLOPE_METRIC)
        shared = _by(slopes[slopes["estimator"] == "reparam"], group, SLOPE_METRIC)
        floor = _by(slopes[slopes["estimator"] == "no-noise"], group, SLOPE_METRIC)
        assert local["ci_low"] <= -1.0 <= local["ci_high"], local
        assert shared["value"] > local["ci_high"], (shared, local)
        # Minibatches are drawn without replacement, so data variance alone falls as
        # (N − M) / (M (N − 1)): a little steeper than 1/M over these sizes. With four points
        # the fit's own interval ignores how noisy each variance is, so the tolerance comes from
        # the per-size intervals propagated through the least-squares slope.
        sizes = np.array([1, 4, 16, 64])
        n = len(digits.train)
        expected = stats.linregress(np.log(sizes), np.log((n - sizes) / (sizes * (n - 1)))).slope
        tolerance = 4 * _slope_standard_error(mlp_rows, "no-noise", group)
        assert abs(floor["value"] - expected) < tolerance < 0.5, (floor["value"], expected, tolerance)
        assert local["n"] == 4 and pd.isna(local["batch_size"])


def test_cell_rows_add_up_and_order_like_table_1(mlp_rows):
    sized = mlp_rows[mlp_rows["metric"] != SLOPE_METRIC]
    assert set(sized["metric"]) == set(METRICS)
    assert (sized["status"] == "ok").all() and (sized["draw_path"] == "vmap").all()
    assert (sized["n"] == 200).all() and (mlp_rows["experiment"] == "variance").all()
    assert set(sized["dataset"]) == {"digits"} and set(sized["epoch"]) == {0}
    wide = sized.pivot_table(
        index=["estimator", "batch_size", "param_group"], columns="metric", values="value"
    )
    parts = wide["grad_variance_noise"] + wide["grad_variance_data"]
    torch.testing.assert_close(
        torch.tensor(parts.to_numpy()),
        torch.tensor(wide["grad_variance"].to_numpy()),
        rtol=1e-9,
        atol=0,
    )
    # No noise: every draw on a minibatch is the same, so the noise variance is zero.
    floor = wide.loc["no-noise"]
    assert (floor["grad_variance_noise"].abs() <= 1e-9 * floor["grad_variance"]).all()
    # Kingma et al.'s ordering at M = 64: no noise < local reparameterization < shared sample.
    at_64 = wide.xs(64, level="batch_size")["grad_variance"]
    for group in ("bottom", "top"):
        floor, local, shared = (at_64[(e, group)] for e in ("no-noise", "local-reparam", "reparam"))
        assert floor < local < shared


def _vae_run(digits, root, force=False, estimators=("reparam",)):
    return measure_variance(
        Setting("gaussian-vae", SMALL_VAE, seed=7),
        list(estimators),
        [2, 8],
        24,
        [0, 1],
        digits,
        CPU,
        ResultStore(root),
        Provenance.collect(CPU, "test"),
        force,
        training=TrainingConfig(batch_size=32, max_steps_per_epoch=3),
        replicates=50,
    )


def test_same_seed_gives_identical_rows_and_runs_resume(digits, tmp_path):
    first = _vae_run(digits, tmp_path / "a")
    cells = sorted((tmp_path / "a" / "variance").glob("*.csv"))
    assert len(cells) == 2 * 3  # 2 epochs × (2 batch sizes + 1 slope cell)
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    again = _vae_run(digits, tmp_path / "a")
    assert {p: p.stat().st_mtime_ns for p in cells} == stamps
    fresh = _vae_run(digits, tmp_path / "b", force=True)
    columns = [
        "estimator",
        "param_group",
        "batch_size",
        "epoch",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "n",
        "status",
        "config_hash",
    ]
    for other in (again, fresh):
        pd.testing.assert_frame_equal(
            first[columns].reset_index(drop=True),
            other[columns].reset_index(drop=True),
            check_dtype=False,
        )
    assert set(first["epoch"]) == {0, 1}


def test_diverging_estimator_gives_diverged_rows_and_the_run_goes_on(digits, tmp_path, monkeypatch):
    real = variance.build_estimator

    def build(setting, name, dataset, device):
        built = real(setting, name, dataset, device)
        return _Diverging() if name == "local-reparam" else built

    monkeypatch.setattr(variance, "build_estimator", build)
    rows = measure_variance(
        Setting("bayes-mlp", SMALL_MLP),
        ["local-reparam", "no-noise"],
        [2, 4],
        10,
        [0],
        digits,
        CPU,
        ResultStore(tmp_path),
        Provenance.collect(CPU, "test"),
        replicates=20,
    )
    diverged = rows[rows["estimator"] == "local-reparam"]
    assert (diverged["status"] == "diverged").all() and diverged["value"].isna().all()
    assert (rows[rows["estimator"] == "no-noise"]["status"] == "ok").all()


# Command -------------------------------------------------------------------------------------


def test_cli_json_rows(tmp_path, capsys):
    status = main(
        [
            "variance",
            "--model",
            "gaussian-vae",
            "--model-arg",
            "hidden_sizes=8",
            "--model-arg",
            "latent_dim=2",
            "--dataset",
            "digits",
            "--estimators",
            "reparam",
            "--batch-sizes",
            "2,4,8",
            "--draws",
            "20",
            "--at-epochs",
            "0",
            "--bootstrap",
            "30",
            "--results",
            str(tmp_path),
            "--format",
            "json",
        ]
    )
    assert status == 0
    rows = pd.DataFrame(json.loads(capsys.readouterr().out))
    assert set(rows["metric"]) == {*METRICS, SLOPE_METRIC}
    groups = set(rows["param_group"])
    assert {"bottom", "top", "all", "encoder.0.weight", "decoder.1.bias"} <= groups
    slopes = rows[rows["metric"] == SLOPE_METRIC]
    assert slopes["batch_size"].isna().all() and (slopes["n"] == 3).all()
    sized = rows[rows["metric"] != SLOPE_METRIC]
    assert set(sized["batch_size"]) == {2, 4, 8} and (sized["n"] == 20).all()
    assert (rows["experiment"] == "variance").all() and (rows["dataset"] == "digits").all()
    assert {"ci_low", "ci_high", "status", "config_hash", "draw_path"} <= set(rows.columns)
    assert sized["checkpoint"].nunique() == 1 and sized["checkpoint"].str.len().eq(16).all()


def test_cli_table(tmp_path, capsys):
    status = main(
        [
            "variance",
            "--model",
            "bayes-mlp",
            "--model-arg",
            "hidden_sizes=8",
            "--dataset",
            "digits",
            "--estimators",
            "local-reparam,no-noise",
            "--batch-sizes",
            "2,4",
            "--draws",
            "10",
            "--at-epochs",
            "0",
            "--bootstrap",
            "20",
            "--results",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "minibatch mean" in out and "studentised bootstrap" in out and "local-reparam" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "nope"], "unknown model 'nope'; valid: " + ", ".join(MODELS)),
        (["--model", "bayes-mlp", "--estimators", "nope"], "unknown estimator 'nope'; valid:"),
        (["--model", "bayes-mlp", "--estimators", "lr"], "does not apply to model 'bayes-mlp'"),
        (["--model", "bayes-mlp", "--model-arg", "width=3"], "valid: hidden_sizes"),
        (["--model", "bayes-mlp", "--batch-sizes", "0"], "--batch-sizes"),
        (["--model", "bayes-mlp", "--draws", "7"], "multiple of the noise draws"),
    ],
)
def test_cli_errors_are_one_line_with_exit_2(argv, expected, tmp_path, capsys):
    status = main(["variance", "--dataset", "digits", "--results", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and expected in err, err


def test_a_stored_variance_cell_without_the_parameters_digest_counts_as_missing(tmp_path):
    """A variance cell names the digest column as required: a stored cell whose measured rows
    lack it (older rows) is computed again, even by a store that reuses stale cells; with it,
    the cell is reused."""
    store = ResultStore(tmp_path, reuse_stale=True)
    cell = Cell(variance.EXPERIMENT, "bayes-mlp", "reparam", {"seed": 0},
                required=(variance.DIGEST_COLUMN,))
    prov = Provenance.collect(CPU, "test")
    row = {"param_group": "top", "batch_size": 100, "epoch": 10, "metric": "grad_variance",
           "value": 1.0, "status": "ok"}
    store.save(cell, [row], prov)
    assert store.stored(cell, prov) is None
    store.save(cell, [row | {variance.DIGEST_COLUMN: "00ff"}], prov)
    assert store.stored(cell, prov)["checkpoint"].tolist() == ["00ff"]
    lost = {"param_group": "all", "metric": "failed", "value": math.nan, "status": "skipped"}
    store.save(cell, [lost], prov)
    assert store.stored(cell, prov) is None


def test_variance_tasks_require_the_digest(digits, tmp_path):
    tasks = variance.variance_tasks(Setting("bayes-mlp", SMALL_MLP), ["reparam"], [4], 4, [0],
                                    digits, CPU, tmp_path, "test")
    cells = [t.cell for t in tasks if t.cell is not None and not t.derived]
    assert cells and all(c.required == (variance.DIGEST_COLUMN,) for c in cells)
