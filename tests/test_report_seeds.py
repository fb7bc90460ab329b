"""Reports over several seeds: means, t-intervals, paired comparisons, ranks, wording, plots.

Every row here is synthetic and stamped by the store's own ``stamp``, with values chosen so that
each expected number can be worked out by hand (the t quantiles below are typed from a table,
not computed by the code under test).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradbench.report import build_reports
from gradbench.report.build import CONVENTIONS
from gradbench.report.aggregate import Estimate, compare, t_interval
from gradbench.report.plots import training_plots, variance_plots
from gradbench.report.rows import Outcome, outcomes, prepare_rows
from gradbench.report.table import Table
from gradbench.report.tables import all_tables
from gradbench.results import Cell, stamp
from tests.test_report import assert_balanced_latex, provenance

T_975 = {1: 12.706204736174707, 2: 4.302652729911275}
"""Student's t 0.975 quantiles by degrees of freedom (from a table)."""

MODEL = "categorical-vae"

# ELBO on the test split, per estimator, seeds 0, 1, 2. "lr" is best (highest mean, -110).
# "lr-baseline" is below lr by 0.5, 0.6, 0.4 at the three seeds: a paired t-test tells it from
# lr (p ≈ 0.013), an unpaired one cannot (the seeds' spread of 20 nats hides 0.5).
# "gumbel-softmax" differs from lr by +1, -1.5, -0.2: indistinguishable. "target-prop" (†, another
# objective) scores far higher and must never be chosen best.
ELBO = {
    "lr": [-100.0, -110.0, -120.0],
    "lr-baseline": [-100.5, -110.6, -120.4],
    "gumbel-softmax": [-99.0, -111.5, -120.2],
    "target-prop": [-50.0, -50.0, -50.0],
}


def training_cells(values: dict[str, list[float | None]], model: str = MODEL,
                   metric: str = "elbo", split: str = "test") -> pd.DataFrame:
    """One training cell per estimator and seed, the final (epoch 1) ``metric`` on ``split``;
    a None value stores that seed as a failed task instead."""
    frames = []
    for name, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            if value is None:
                rows = [{"param_group": "all", "metric": "failed", "value": math.nan, "n": 0,
                         "status": "failed", "error": "RuntimeError: out of memory"}]
            else:
                rows = [{"param_group": split, "batch_size": 100, "epoch": epoch,
                         "metric": metric, "value": value + epoch - 1} for epoch in (0, 1)]
                rows += [{"param_group": "train", "batch_size": 100, "epoch": epoch,
                          "metric": "wall_clock_s", "value": 2.0 * epoch} for epoch in (0, 1)]
            cell = Cell("train", model, name, {"seed": seed, "dataset": "digits"})
            frames.append(stamp(rows, cell, provenance()))
    return pd.concat(frames, ignore_index=True)


def variance_cells(values: dict[str, list[float]], model: str = MODEL) -> pd.DataFrame:
    """One variance cell per estimator and seed: ``grad_variance`` of the encoder at minibatch
    100 and epoch 1 (the decoder's 10 times larger), its stored interval ±10 %."""
    frames = []
    for name, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            rows = [
                {"param_group": group, "batch_size": size, "epoch": 1, "metric": "grad_variance",
                 "value": value * scale * 100 / size, "ci_low": 0.9 * value * scale * 100 / size,
                 "ci_high": 1.1 * value * scale * 100 / size, "n": 50, "checkpoint": f"s{seed}"}
                for group, scale in (("encoder", 1.0), ("decoder", 10.0)) for size in (10, 100)
            ]
            cell = Cell("variance", model, name, {"seed": seed, "dataset": "digits"})
            frames.append(stamp(rows, cell, provenance()))
    return pd.concat(frames, ignore_index=True)


def table_named(rows: pd.DataFrame, name: str) -> Table:
    return next(t for t in all_tables(prepare_rows(rows)) if t.name == name)


def tidy(table: Table) -> dict[tuple[str, str], dict[str, str]]:
    """The tidy CSV keyed by (estimator, quantity)."""
    lines = csv.DictReader(io.StringIO(table.tidy_csv()))
    return {(line["estimator"], line["quantity"]): line for line in lines}


def markdown_cells(table: Table) -> dict[str, list[str]]:
    """Each Markdown row's cells, keyed by its first cell."""
    body = table.markdown().splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in body]
    return {row[0]: row for row in cells}


@pytest.fixture(scope="module")
def elbo_table() -> Table:
    return table_named(training_cells(ELBO), "elbo_categorical_vae")


def test_t_interval_matches_a_hand_computation() -> None:
    values = [-100.0, -101.0, -103.0]
    mean = (-100.0 - 101.0 - 103.0) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = T_975[2] * sd / math.sqrt(3)
    assert t_interval(values) == pytest.approx((mean, mean - half, mean + half), rel=1e-9)
    assert t_interval([1.0, 3.0])[2] == pytest.approx(2.0 + T_975[1] * math.sqrt(2) / math.sqrt(2))


def test_cells_show_mean_and_t_half_width_over_three_seeds(elbo_table: Table) -> None:
    gumbel = ELBO["gumbel-softmax"]
    mean = statistics.fmean(gumbel)
    half = T_975[2] * statistics.stdev(gumbel) / math.sqrt(3)
    line = tidy(elbo_table)[("gumbel-softmax", "ELBO, test")]
    assert float(line["mean"]) == pytest.approx(mean, rel=1e-9)
    assert float(line["ci_low"]) == pytest.approx(mean - half, rel=1e-9)
    assert float(line["ci_high"]) == pytest.approx(mean + half, rel=1e-9)
    assert (line["n"], line["seeds"], line["interval"]) == ("3", "0 1 2", "95% t over seeds")
    cell = markdown_cells(elbo_table)["gumbel-softmax"][2]
    assert cell == f"{mean:.2f} ± {half:.2f} ≈"
    wide = {line["estimator"]: line for line in csv.DictReader(io.StringIO(elbo_table.csv()))}
    assert float(wide["lr"]["ELBO, test"]) == pytest.approx(statistics.fmean(ELBO["lr"]))


def test_paired_test_separates_rows_an_unpaired_test_would_not(elbo_table: Table) -> None:
    lines = tidy(elbo_table)
    best, paired, tied = (lines[(name, "ELBO, test")] for name in
                          ("lr", "lr-baseline", "gumbel-softmax"))
    assert (best["best"], best["indistinguishable"]) == ("true", "false")
    assert (paired["best"], paired["indistinguishable"]) == ("false", "false")
    assert (tied["best"], tied["indistinguishable"]) == ("false", "true")
    assert float(paired["p_value"]) < 0.05 < float(tied["p_value"])
    from scipy import stats

    assert stats.ttest_ind(ELBO["lr-baseline"], ELBO["lr"]).pvalue > 0.9  # unpaired: no difference
    cells = markdown_cells(elbo_table)
    assert cells["lr"][2].startswith("**") and cells["lr"][2].endswith("**")
    assert "**" not in cells["lr-baseline"][2] and "≈" not in cells["lr-baseline"][2]
    assert cells["gumbel-softmax"][2].endswith(" ≈")


def test_other_objective_rows_are_never_best(elbo_table: Table) -> None:
    cells = markdown_cells(elbo_table)
    assert cells["target-prop †"][2] == "-50.00 ± 0.00"
    assert cells["target-prop †"][3] == "—"  # no rank either
    line = tidy(elbo_table)[("target-prop †", "ELBO, test")]
    assert line["best"] == line["indistinguishable"] == ""
    assert any("kept out of the comparison" in note for note in elbo_table.notes)


def test_average_rank_and_its_standard_error(elbo_table: Table) -> None:
    # Ranks per seed (1 = highest ELBO): seed 0 gumbel 1, lr 2, lr-baseline 3; seed 1 lr 1,
    # lr-baseline 2, gumbel 3; seed 2 lr 1, gumbel 2, lr-baseline 3.
    expected = {"lr": [2, 1, 1], "lr-baseline": [3, 2, 3], "gumbel-softmax": [1, 3, 2]}
    lines = tidy(elbo_table)
    cells = markdown_cells(elbo_table)
    for name, ranks in expected.items():
        line = lines[(name, "avg. rank")]
        mean, se = statistics.fmean(ranks), statistics.stdev(ranks) / math.sqrt(3)
        assert float(line["mean"]) == pytest.approx(mean)
        assert float(line["se"]) == pytest.approx(se)
        assert line["n"] == "3"
        assert cells[name][3] == f"{mean:.2f} ({se:.2f})"
    assert elbo_table.headers[3] == "avg. rank"


def test_notes_state_the_direction_and_the_conventions_the_test(elbo_table: Table) -> None:
    notes = " ".join(elbo_table.notes)
    assert "Compared: ELBO: higher is better." in notes
    assert "seed" not in notes  # what seeds, intervals and ranks mean: once, on conventions.md
    said = " ".join(CONVENTIONS)
    assert "a cell is the mean over its n seeds ± the half-width of the 95 % t-interval" in said
    assert "paired t-test over seeds (scipy.stats.ttest_rel, two-sided, α = 0.05" in said
    assert "standard error sd/√n" in said


def test_latex_marks_the_best_in_bold_and_the_indistinguishable(elbo_table: Table) -> None:
    tex = elbo_table.latex()
    rows = {line.split(" & ")[0]: line.split(" & ") for line in tex.splitlines() if " & " in line}
    mean, half = statistics.fmean(ELBO["lr"]), T_975[2] * 10.0 / math.sqrt(3)
    assert rows["lr"][2] == f"\\textbf{{\\boldmath${mean:.2f} \\pm {half:.2f}$}}"
    assert rows["gumbel-softmax"][2].endswith("$^{\\approx}$")
    assert "textbf" not in rows["lr-baseline"][2] and "approx" not in rows["lr-baseline"][2]
    assert_balanced_latex(tex, len(elbo_table.headers))


def test_variances_are_paired_on_log_values() -> None:
    """B is twice A at every seed: on log values a constant difference, told apart at once; on
    raw values the differences 1, 10, 100 would leave it indistinguishable (p ≈ 0.37)."""
    values = {"lr": [1.0, 10.0, 100.0], "lr-baseline": [2.0, 20.0, 200.0],
              "rloo": [1.5, 7.0, 140.0]}
    table = table_named(variance_cells(values), "variance_categorical_vae")
    lines = tidy(table)
    assert lines[("lr", "encoder, 1 ep")]["best"] == "true"
    assert lines[("lr-baseline", "encoder, 1 ep")]["indistinguishable"] == "false"
    assert lines[("rloo", "encoder, 1 ep")]["indistinguishable"] == "true"
    raw = compare([Estimate(dict(enumerate(v))) for v in values.values()], [True] * 3, False)
    assert raw[1].kind == "tied"  # the same rows on raw values: not told apart
    assert any("lower is better" in note for note in table.notes)
    assert "variances and seconds on log values" in " ".join(CONVENTIONS)


def test_one_seed_keeps_todays_cells_and_says_1_seed() -> None:
    table = table_named(training_cells({k: v[:1] for k, v in ELBO.items()}),
                        "elbo_categorical_vae")
    cells = markdown_cells(table)
    assert cells["gumbel-softmax"][2] == "**-99.00**"
    assert cells["lr"][2] == "-100.00"  # 1 nat below the best, and no test can say more
    assert cells["lr"][3] == "2.00"  # rank without SE
    assert "seeds" not in " ".join(table.notes)
    lr = tidy(table)[("lr", "ELBO, test")]
    assert lr["interval"] == "" and lr["n"] == "1"
    assert lr["indistinguishable"] == lr["p_value"] == ""  # no test was run


def test_seed_counts_that_differ_are_shown_per_cell_and_lost_seeds_are_not_averaged() -> None:
    values: dict[str, list[float | None]] = {
        "lr": [-100.0, -110.0, -120.0],
        "lr-baseline": [-90.0, -100.0],  # two seeds only: the best mean, but fewer seeds
        "gumbel-softmax": [-10.0, -10.0, None],  # seed 2 failed: never averaged, never best
    }
    rows = training_cells(values)
    table = table_named(rows, "elbo_categorical_vae")
    cells = markdown_cells(table)
    half = T_975[1] * statistics.stdev([-90.0, -100.0]) / math.sqrt(2)
    assert cells["lr-baseline"][2] == f"**-95.00 ± {half:.2f} (n=2)**"
    assert cells["lr"][2].endswith("(n=3)")
    assert cells["gumbel-softmax"][2] == "-10.00 ± 0.00 (n=2, 1 failed)"
    listed = table_named(rows, "diverged")
    assert listed.rows == (("train", MODEL, "gumbel-softmax", 2.0, "failed", None,
                            "RuntimeError: out of memory"),)


def test_a_diverged_seed_is_never_ranked() -> None:
    rows = training_cells({"lr": [-100.0, -100.0], "lr-baseline": [-90.0, -90.0]})
    broken = (rows["estimator"] == "lr-baseline") & (rows["seed"] == 1) & (rows["epoch"] == 1)
    rows.loc[broken, ["value", "status"]] = [math.inf, "diverged"]
    lines = tidy(table_named(rows, "elbo_categorical_vae"))
    assert float(lines[("lr-baseline", "avg. rank")]["mean"]) == pytest.approx(1.0)  # seed 0 only
    assert lines[("lr-baseline", "avg. rank")]["n"] == "1"
    assert float(lines[("lr", "avg. rank")]["mean"]) == pytest.approx(1.5)  # 2, then 1
    assert lines[("lr-baseline", "ELBO, test")]["lost"] == "1:diverged"
    assert lines[("lr", "ELBO, test")]["best"] == "true"  # lr-baseline lost a seed


def test_the_index_says_how_many_seeds(tmp_path: Path) -> None:
    build_reports(training_cells(ELBO), tmp_path / "three", formats=("md", "csv"))
    text = (tmp_path / "three" / "README.md").read_text()
    assert "**3 seeds** (0, 1, 2)" in text and "| seeds | 0, 1, 2 |" in text
    assert "tables/elbo_categorical_vae.tidy.csv" in (tmp_path / "three" / "training.md").read_text()
    tidy_file = tmp_path / "three" / "tables" / "elbo_categorical_vae.tidy.csv"
    assert {"mean", "ci_low", "ci_high", "n"} <= set(tidy_file.read_text().splitlines()[0].split(","))
    build_reports(training_cells({k: v[:1] for k, v in ELBO.items()}), tmp_path / "one",
                  formats=("md",))
    assert "**1 seed** (0)" in (tmp_path / "one" / "README.md").read_text()


def test_the_index_says_which_cells_have_which_seeds(tmp_path: Path) -> None:
    """Cells measured with different seeds: the header counts the cells of each seed set (the
    commonest first) instead of calling every cell a mean over all the seeds."""
    values = {"lr": [-100.0, -110.0, -120.0], "lr-baseline": [-100.5, -110.6, -120.4],
              "gumbel-softmax": [-99.0], "target-prop": [-50.0, -50.0]}
    build_reports(training_cells(values), tmp_path, formats=("md",))
    text = (tmp_path / "README.md").read_text()
    assert ("**1 to 3 seeds** (0, 1, 2), cell by cell: 2 cells of 3 seeds (0, 1, 2); 1 cell of 1 "
            "seed (0); 1 cell of 2 seeds (0, 1); every number ± the 95 % t-interval over seeds (a "
            "one-seed cell: its own stored interval)") in text
    assert "| seeds | 0, 1, 2 (by cell: 0, 1, 2 in 2 cells; 0 in 1 cell; 0, 1 in 1 cell) |" in text
    assert "every cell is the mean over seeds" not in text


def _bands(figure) -> list[np.ndarray]:
    return [path.vertices for axis in figure.axes for c in axis.collections
            for path in c.get_paths()]


def test_plots_draw_the_t_band_over_seeds() -> None:
    values = {"lr": [1.0, 1.2, 1.4], "lr-baseline": [3.0, 3.5, 2.5]}
    rows = prepare_rows(variance_cells(values))
    plot = next(variance_plots(rows))
    assert "mean over 3 seeds" in plot.caption and "t-interval over seeds" in plot.caption
    vertices = _bands(plot.figure)[0]
    _, low, high = t_interval(values["lr"])
    assert np.min(vertices[:, 1]) == pytest.approx(low) and np.max(vertices[:, 1]) == pytest.approx(
        high * 10)  # minibatch 10: the variance (and its band) is 10 times that at 100
    training = prepare_rows(training_cells(ELBO))
    curves = next(training_plots(training))
    assert _bands(curves.figure) and "mean over 3 seeds" in curves.caption


def test_one_seed_plots_keep_the_stored_interval() -> None:
    rows = prepare_rows(variance_cells({"lr": [1.0]}))
    plot = next(variance_plots(rows))
    assert "1 seed" in plot.caption
    vertices = _bands(plot.figure)[0]
    assert np.min(vertices[:, 1]) == pytest.approx(0.9) and np.max(vertices[:, 1]) == pytest.approx(
        11.0)
    curves = next(training_plots(prepare_rows(training_cells({"lr": [-100.0]}))))
    assert not _bands(curves.figure)


def test_a_model_and_estimator_no_paper_names_get_every_table() -> None:
    """The report package names no model: a new one gets its variance and ELBO tables with the
    default groups, its estimators compared and ranked like any other."""
    values = {"lr": [1.0, 1.1, 0.9], "newcomer": [2.0, 2.2, 1.8]}
    rows = pd.concat([variance_cells(values, model="sigmoid-belief-net"),
                      training_cells({"lr": [-90.0, -91.0, -92.0], "newcomer": [-95.0] * 3},
                                     model="sigmoid-belief-net")], ignore_index=True)
    names = {t.name: t for t in all_tables(prepare_rows(rows))}
    assert {"variance_sigmoid_belief_net", "elbo_sigmoid_belief_net"} <= set(names)
    variance = names["variance_sigmoid_belief_net"]
    assert variance.headers[0] == "estimator" and variance.headers[-1] == "avg. rank"
    assert sorted(variance.headers[1:-1]) == ["decoder, 1 ep", "encoder, 1 ep"]  # its groups
    lines = tidy(variance)
    assert lines[("lr", "encoder, 1 ep")]["best"] == "true"
    assert float(lines[("newcomer", "avg. rank")]["mean"]) == 2.0
    assert tidy(names["elbo_sigmoid_belief_net"])[("lr", "ELBO, test")]["best"] == "true"


def test_the_report_entry_points_keep_their_names() -> None:
    import gradbench.report as report
    import gradbench.report.build as build

    for name in ("build_reports", "check_writable", "check_formats", "Report", "TABLE_FORMATS",
                 "FIGURE_FORMATS", "TABLES_DIR", "FIGURES_DIR"):
        assert getattr(report, name) is getattr(build, name)


def test_a_skipped_cell_is_listed_with_its_estimate_and_named_in_its_table_cell() -> None:
    """A cell skipped as too long for the device (gradbench.execution.limits) is never averaged
    in: its table cell says ``skipped`` and the list of lost cells gives its reason."""
    rows = training_cells({"lr": [-100.0, -110.0], "lr-baseline": [-100.5, -110.6]})
    reason = "estimated 9.5 h on this cpu for train (calibrated), over the profile's limit"
    skipped = stamp(
        [{"param_group": "all", "metric": "estimated_seconds", "value": 34200.0, "n": 0,
          "status": "skipped", "error": reason}],
        Cell("train", MODEL, "gumbel-softmax", {"seed": 0, "dataset": "digits"}), provenance(),
    )
    rows = pd.concat([rows, skipped], ignore_index=True)
    cells = markdown_cells(table_named(rows, "elbo_categorical_vae"))
    assert cells["gumbel-softmax"][2] == "skipped"
    listed = table_named(rows, "diverged")
    assert ("train", MODEL, "gumbel-softmax", 0.0, "skipped", None, reason) in listed.rows


def test_a_skipped_variance_cell_loses_only_its_own_minibatch_size() -> None:
    """A variance cell skipped at M = 1000 carries its minibatch size and epoch (``stamp``), so the
    estimator's measured M = 100 stays in the tables; the skip is listed at its epoch."""
    rows = variance_cells({"lr": [1.0, 2.0], "reparam": [0.5, 0.6]})
    reason = "estimated 23.0 h on this cpu for variance M=1000, over the profile's limit"
    config = {"seed": 0, "dataset": "digits", "batch_size": 1000, "epoch": 1}
    skipped = stamp(
        [{"param_group": "all", "metric": "estimated_seconds", "value": 82800.0, "n": 0,
          "status": "skipped", "error": reason}],
        Cell("variance", MODEL, "lr", config), provenance(),
    )
    assert skipped[["batch_size", "epoch"]].iloc[0].tolist() == [1000, 1]
    rows = prepare_rows(pd.concat([rows, skipped], ignore_index=True))
    at = {size: outcomes(rows, "variance", MODEL, "lr", metric="grad_variance",
                         param_group="encoder", batch_size=size, epoch=1) for size in (100, 1000)}
    assert [o.status for o in at[100].values()] == ["ok", "ok"]
    assert at[100][0].value == 1.0 and at[1000] == {0: Outcome("skipped")}
    anywhere = outcomes(rows, "variance", MODEL, "lr", metric="log_variance_slope", epoch=1)
    assert anywhere == {0: Outcome("skipped")}  # a quantity over every size loses it too
    cells = markdown_cells(table_named(rows, f"variance_{MODEL.replace('-', '_')}"))
    assert cells["lr"][1] not in ("skipped", "—", "")
    listed = table_named(rows, "diverged")
    assert listed.rows == (("variance", MODEL, "lr", 0.0, "skipped", 1.0, reason),)


def test_plots_draw_only_cells_of_one_checkpoint_digest() -> None:
    # seed 0: lr and newcomer at digest s0, a third estimator at another digest (other
    # parameters): the plot draws the two that share the digest, as the table compares them
    frames = variance_cells({"lr": [1.0], "newcomer": [2.0]})
    other = variance_cells({"lr-baseline[baseline=ema]": [3.0]})
    other["checkpoint"] = "elsewhere"
    plot = next(variance_plots(prepare_rows(pd.concat([frames, other], ignore_index=True))))
    labels = {line.get_label().split(" (")[0] for axis in plot.figure.axes
              for line in axis.get_lines()}
    assert {"lr", "newcomer"} <= labels
    assert "lr-baseline[baseline=ema]" not in labels
