"""Tests of the paired single / separate weight-sample variance (gradbench.measure.paired_variance)
against per-example gradients formed one by one, and against unpaired draws of the two
estimators themselves; and of the paired-variance experiment in a run: its cells at the variance
checkpoints, on weight-noise models only, and the report's paired note."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import gradbench
from gradbench import api
from gradbench.cli import main
from gradbench.data import DataConfig, load_dataset
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.measure import paired_variance
from gradbench.measure.paired_variance import (
    UnitSums,
    headline_layers,
    noise_parts,
    paired_statistics,
    paired_sums,
    single_sample_draw,
)
from gradbench.measure.variance import DIGEST_COLUMN, gradient_samples
from gradbench.profiles import SMOKE
from gradbench.report.rows import prepare_rows
from gradbench.report import paper as pub
from gradbench.report.comparison_tables import paired_size_notes
from gradbench.report.variance_tables import (
    paired_excess,
    paired_excess_notes,
    paired_notes,
    variance_table,
)
from gradbench.results import Cell, Provenance, stamp

CPU = torch.device("cpu")
SMALL_MLP = {"hidden_sizes": "8", "input_dropout": "0.5"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(dataset="digits"), CPU)


@pytest.fixture(scope="module")
def model(digits):
    return build_model(Setting("bayes-mlp", SMALL_MLP, seed=0), digits, CPU)


def _per_example_gradients(model, x, y, noises):
    """G_m [M, layers...]: the gradient of CE_m / M in each layer's θ with W = θ + σ ∘ ε, one
    example at a time (the KL, constant in the noise, left out)."""
    layers = list(model.layers)
    out = []
    for m in range(x.shape[0]):
        h = x[m : m + 1]
        for index, (layer, noise) in enumerate(zip(layers, noises)):
            std = layer.weight_variance().sqrt()
            h = h @ (layer.weight_mean + std * noise) + layer.bias
            if index < len(layers) - 1:
                h = torch.relu(h)
        loss = F.cross_entropy(h, y[m : m + 1]) / x.shape[0]
        out.append(torch.autograd.grad(loss, [layer.weight_mean for layer in layers]))
    return out


def test_noise_parts_equal_per_example_sums(model, digits):
    x, y = digits.sample_batch("train", 6, torch.Generator().manual_seed(1))
    noises = []
    draws = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        noises.append([torch.randn_like(layer.weight_mean) for layer in model.layers])
        torch.manual_seed(seed)
        draws.append(single_sample_draw(model, x, y))
    first, second = (_per_example_gradients(model, x, y, n) for n in noises)
    for layer in range(len(model.layers)):
        d = torch.stack([first[m][layer] - second[m][layer] for m in range(x.shape[0])])
        single, separate = noise_parts(draws[0][layer], draws[1][layer])
        torch.testing.assert_close(separate, 0.5 * d.square().sum(0), rtol=1e-4, atol=1e-10)
        torch.testing.assert_close(single, 0.5 * d.sum(0).square(), rtol=1e-4, atol=1e-10)
        # The draw's own minibatch gradient is the sum of its examples' terms (KL aside).
        kl = draws[0][layer].gradient - sum(first[m][layer] for m in range(x.shape[0]))
        torch.testing.assert_close(
            draws[1][layer].gradient - sum(second[m][layer] for m in range(x.shape[0])), kl,
            rtol=1e-4, atol=1e-6,
        )


def test_noise_parts_refuse_draws_of_different_shapes(model, digits):
    generator = torch.Generator().manual_seed(0)
    small = single_sample_draw(model, *digits.sample_batch("train", 3, generator))
    large = single_sample_draw(model, *digits.sample_batch("train", 4, generator))
    with pytest.raises(ValueError, match="draws of different shapes"):
        noise_parts(small[0], large[0])


def test_statistics_recover_known_parts():
    # Units built so that the noise and data parts are known exactly in expectation.
    torch.manual_seed(0)
    units = 4000
    single = torch.distributions.Chi2(4.0).sample((units,)) * 0.5  # mean 2
    separate = torch.distributions.Chi2(4.0).sample((units,)) * 0.25  # mean 1
    data = 3.0  # spread = data + single / 2 in expectation
    spread = torch.distributions.Chi2(2.0).sample((units,)) * 0.5 * (data + single.mean() / 2)
    rows = {r["metric"]: r for r in paired_statistics(
        UnitSums(single.tolist(), separate.tolist(), spread.tolist(), 1), seed=1)}
    truth = {"grad_variance_single": 5.0, "grad_variance_separate": 4.0,
             "grad_variance_data": 3.0, "variance_ratio": 1.25}
    for metric, value in truth.items():
        assert rows[metric]["ci_low"] <= value <= rows[metric]["ci_high"], (metric, rows[metric])
        assert rows[metric]["ci_high"] - rows[metric]["ci_low"] < 0.2 * value, rows[metric]


def test_paired_variances_agree_with_unpaired_draws_of_both_estimators(model, digits):
    groups = headline_layers(model)
    sums = paired_sums(model, digits, 16, 300, groups, torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    for name, estimator in (("single", "reparam"), ("separate", "reparam-per-example")):
        draws = gradient_samples(
            model, build_estimator(Setting("bayes-mlp", SMALL_MLP), estimator, digits, CPU),
            digits, 16, 2000, torch.Generator().manual_seed(6),
        )
        for group, layer in groups.items():
            rows = {r["metric"]: r for r in paired_statistics(sums[group])}
            values = draws[f"layers.{layer}.weight_mean"].flatten(1).double()
            unpaired = float(values.var(0).mean())
            # The unpaired variance's own standard error, about √(2 / R) relative.
            slack = 4.0 * math.sqrt(2.0 / values.shape[0]) * unpaired
            paired = rows[f"grad_variance_{name}"]
            assert paired["ci_low"] - slack <= unpaired <= paired["ci_high"] + slack, (
                group, name, unpaired, paired)
    for group in groups:
        ratio = {r["metric"]: r for r in paired_statistics(sums[group])}["variance_ratio"]
        assert ratio["ci_low"] > 1.0, (group, ratio)  # a shared sample adds the covariance


def test_headline_layers_are_the_models_groups_of_one_layers_mean_weights(model):
    assert headline_layers(model) == {"top": len(model.layers) - 1, "bottom": 0}
    with pytest.raises(ValueError, match="group 'all' of bayes-mlp is not one weight-noise"):
        headline_layers(model, ["top", "all"])


def test_rows_carry_groups_and_cost(model, digits):
    rows = paired_variance.paired_variance_rows(model, digits, 8, 5, {"top": 1}, seed=0,
                                                replicates=50)
    assert {r["metric"] for r in rows} == set(paired_variance.METRICS)
    assert all(r["param_group"] == "top" and r["n"] == 10 and r["cell_seconds"] > 0
               for r in rows)


def test_the_variance_table_says_whether_the_paired_ratio_settles_the_order():
    frames = []
    for group, (value, low, high) in (("top", (1.5, 1.2, 1.9)), ("bottom", (1.1, 0.9, 1.3))):
        rows = [{"param_group": group, "batch_size": 100, "epoch": 10, "metric": metric,
                 "value": value, "ci_low": low, "ci_high": high, "n": 2000}
                for metric in ("variance_ratio", "grad_variance_single")]
        frames.append(stamp(rows, Cell(paired_variance.EXPERIMENT, "bayes-mlp", "reparam",
                                       {"group": group, "seed": 0}),
                            Provenance.collect(CPU, "test")))
    variance = [{"param_group": "top", "batch_size": 100, "epoch": 10,
                 "metric": "grad_variance", "value": 1.0, "ci_low": 0.9, "ci_high": 1.1, "n": 10,
                 "checkpoint": "aa"}]
    frames.append(stamp(variance, Cell("variance", "bayes-mlp", "local-reparam", {"seed": 0}),
                        Provenance.collect(CPU, "test")))
    rows = prepare_rows(pd.concat(frames, ignore_index=True))
    assert paired_notes(rows, "bayes-mlp") == (
        "Paired single / separate weight samples (both variances from the same two weight draws "
        "on each of the same minibatches, at one checkpoint), the ratio of variances with its "
        "95 % interval: [bottom, M = 100, 10 ep, seed 0] 1.100 [0.900, 1.300] over 2000 "
        "minibatches: order not settled; [top, M = 100, 10 ep, seed 0] 1.500 [1.200, 1.900] "
        "over 2000 minibatches: single above separate.",
    )
    assert paired_notes(rows, "bayes-mlp")[0] in variance_table(rows, "bayes-mlp").notes
    assert paired_notes(rows, "categorical-vae") == ()
    unseeded = prepare_rows(pd.concat(frames, ignore_index=True).drop(columns="seed"))
    assert "[top, M = 100, 10 ep] 1.500 [1.200, 1.900]" in paired_notes(unseeded, "bayes-mlp")[0]


def paired_ratio_rows(excess: dict[int, float], group: str = "top") -> pd.DataFrame:
    """Paired ratios R = 1 + (M − 1) e_M on ``group`` at 10 epochs, seed 0, each with an
    interval of half-width 2 % of R − 1 (the excess known to about 1 %)."""
    frames = []
    for size, e in excess.items():
        value = 1 + (size - 1) * e
        half = 0.02 * (value - 1)
        rows = [{"param_group": group, "batch_size": size, "epoch": 10,
                 "metric": "variance_ratio", "value": value, "ci_low": value - half,
                 "ci_high": value + half, "n": 2000}]
        frames.append(stamp(rows, Cell(paired_variance.EXPERIMENT, "bayes-mlp", "reparam",
                                       {"batch_size": size, "group": group, "seed": 0}),
                            Provenance.collect(CPU, "test")))
    return prepare_rows(pd.concat(frames, ignore_index=True))


def test_the_excess_per_example_pair_is_checked_constant_in_the_minibatch_size():
    rows = paired_ratio_rows({10: 1e-3, 100: 1e-3, 1000: 1e-3})
    (excess,) = paired_excess(rows, "bayes-mlp")
    assert [m for m, *_ in excess.per_size] == [10, 100, 1000]
    assert excess.mean == pytest.approx(1e-3) and excess.low < 1e-3 < excess.high
    assert excess.p_value == pytest.approx(1.0)
    (note,) = paired_excess_notes(rows, "bayes-mlp")
    assert "[top, 10 ep, seed 0] M = 10: 1.0e-3" in note and "constant in M (p = 1.00)" in note
    # a separate-sample variance too small at M = 1000 raises R there: the law breaks
    broken = paired_ratio_rows({10: 1e-3, 100: 1e-3, 1000: 1.3e-3})
    notes = paired_excess_notes(broken, "bayes-mlp")
    assert "NOT constant in M" in notes[0]
    assert notes[1].startswith("The excess per example pair differs across M at top, 10 ep")
    # p ≈ 0.007: a failure alone, not once a second (clean) test shares the 1 % (Bonferroni)
    marginal = paired_ratio_rows({10: 1.039e-3, 100: 1e-3})
    (alone,) = paired_excess(marginal, "bayes-mlp")
    assert 0.005 < alone.p_value < 0.01
    assert "NOT constant" in paired_excess_notes(marginal, "bayes-mlp")[0]
    both = prepare_rows(pd.concat([marginal, paired_ratio_rows({10: 1e-3, 100: 1e-3}, "bottom")],
                                  ignore_index=True))
    assert len(paired_excess_notes(both, "bayes-mlp")) == 1


def test_table_1s_ratio_is_placed_at_the_minibatch_size_our_excess_gives_it():
    (note,) = paired_size_notes(paired_ratio_rows({100: 1e-3, 1000: 1e-3}))
    published = pub.KINGMA_2015_TABLE1["reparam"][("top", 10)] / pub.KINGMA_2015_TABLE1[
        "reparam-per-example"][("top", 10)]
    assert f"top, 10 ep: R = {published:.2f} at M = {1 + (published - 1) / 1e-3:,.0f} [" in note


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory: pytest.TempPathFactory) -> api.RunResult:
    """A smoke run of bayes-mlp's variance (one estimator) and paired-variance at M = 1, 10."""
    root = tmp_path_factory.mktemp("paired-run")
    with redirect_stdout(io.StringIO()):
        return gradbench.run("smoke", models=["bayes-mlp"], estimators="local-reparam",
                             experiments=["variance", "paired-variance"], executor="in-process",
                             variance_batch_sizes=(1, 10), out=str(root / "report"),
                             formats="md", verbose=False)


def test_the_experiment_measures_at_the_variance_checkpoints(paired_run: api.RunResult) -> None:
    rows = paired_run.rows
    paired = rows[rows["experiment"] == paired_variance.EXPERIMENT]
    variance = rows[(rows["experiment"] == "variance") & rows[DIGEST_COLUMN].notna()]
    assert set(paired["metric"]) == set(paired_variance.METRICS)
    assert set(paired["param_group"]) == {"top", "bottom"}
    assert set(paired["batch_size"]) == {10}  # at M = 1 single and separate are one estimator
    assert (paired["n"] == 2 * SMOKE.paired_variance_units).all()
    assert (paired["status"] == "ok").all() and paired[DIGEST_COLUMN].notna().all()
    digests = {}
    for epoch in SMOKE.variance_epochs:
        ours = set(paired.loc[paired["epoch"] == epoch, DIGEST_COLUMN])
        assert ours == set(variance.loc[variance["epoch"] == epoch, DIGEST_COLUMN]), epoch
        assert len(ours) == 1
        digests[epoch] = ours.pop()
    assert len(set(digests.values())) == len(SMOKE.variance_epochs)  # trained between them
    note = (paired_run.report / "variance.md").read_text()
    assert "Paired single / separate weight samples" in note
    for epoch in SMOKE.variance_epochs:
        for group in ("top", "bottom"):
            assert f"[{group}, M = 10, {epoch} ep, seed 0]" in note, (group, epoch)


def _paired_cells(tmp_path: Path, **settings: object) -> list[tuple[str, int, int]]:
    """(model, M, epoch) of the paired cells a dry run of the smoke profile plans."""
    prepared = api.prepare("smoke", {"experiments": ["paired-variance"], "dry_run": True,
                                     "out": str(tmp_path / "out"), **settings})
    return sorted((t.cell.model, t.cell.config["batch_size"], t.cell.config["epoch"])
                  for t in prepared.schedule.tasks
                  if t.cell is not None and t.cell.experiment == paired_variance.EXPERIMENT)


def test_only_weight_noise_models_get_paired_cells_and_zero_units_turn_it_off(
    tmp_path: Path,
) -> None:
    models = ["bayes-mlp", "gaussian-vae"]
    assert _paired_cells(tmp_path, models=models) == [
        ("bayes-mlp", size, epoch) for size in (10, 100) for epoch in SMOKE.variance_epochs]
    assert _paired_cells(tmp_path, models=models, paired_variance_units=0) == []


def test_too_few_units_exit_2_with_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    results = tmp_path / "results"
    status = main(["all", "--quiet", "--executor", "in-process", "--profile", "smoke",
                   "--models", "bayes-mlp", "--experiments", "paired-variance",
                   "--paired-variance-units", "1", "--results", str(results),
                   "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert status == 2
    assert "paired_variance_units must be 0 (off) or at least 2, got 1" in error
    assert len(error.strip().splitlines()) == 1, error
    assert not results.exists() or not any(results.rglob("*.csv"))
