"""The reports' layout and ranking: bias judged by its interval and ranked by MSE with the exact
gradient first, biased estimators never best on variance alone, diverged cells never ranked, the
front page's first-screen answer, one page per section, LaTeX floats that compile, one colour
per estimator."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from gradbench.estimators import ESTIMATORS
from gradbench.report import build, plots
from gradbench.report.aggregate import BEST, Estimate, Rank
from gradbench.report.bias_tables import bias_table
from gradbench.report.build import (
    Section,
    cell_count,
    front_page,
    pages,
    placement,
    shared_notes,
)
from gradbench.report.plots import Plot
from gradbench.report.render import display
from gradbench.report.rows import prepare_rows, select
from gradbench.report.summary_tables import summary_table
from gradbench.report.table import Column, Compared, Comparison, Table, assemble
from gradbench.results import Cell, ResultStore
from tests.test_report import assert_balanced_latex, provenance

QUICK = Path(__file__).resolve().parents[1] / "reports" / "quick" / "results"
NORM_SQ = 4.0  # ‖g‖² of the synthetic oracle block, the same for every estimator


def bias_rows(cells: dict[str, list[tuple[float, float, float]]]) -> pd.DataFrame:
    """Bias rows of one model × epoch × group: per estimator and seed (r, rel. std, high), r the
    unclamped squared relative bias; stored as the measurement stores them (√max(r, 0), MSE =
    (r + rel. std²) ‖g‖², the interval's upper bound ``high``)."""
    rows = []
    for name, seeds in cells.items():
        for seed, (squared, spread, high) in enumerate(seeds):
            shown = math.sqrt(max(squared, 0.0))
            mse = (squared + spread**2) * NORM_SQ
            for metric, value, low, top in (
                ("relative_bias", shown, max(shown - high / 2, 0.0), max(high, shown)),
                ("relative_std", spread, spread * 0.9, spread * 1.1),
                ("mse", mse, mse * 0.8, mse * 1.2),
                ("cosine", 1.0, 0.99, 1.0),
            ):
                rows.append({"experiment": "bias", "model": "categorical-vae", "estimator": name,
                             "param_group": "encoder", "batch_size": 25, "epoch": 1,
                             "metric": metric, "value": value, "ci_low": low, "ci_high": top,
                             "n": 300, "seed": seed, "status": "ok",
                             "estimates_elbo_gradient": "True", "profile": "smoke",
                             "created_at": "2026-01-01T00:00:00+00:00", "config_hash": name})
    return prepare_rows(pd.DataFrame(rows))


BIAS_CELLS = {
    # exact: round-off bias, no variance: the least MSE, ranked first
    "exact": [(3e-18, 0.0, 2e-9)] * 3,
    # an unbiased estimator whose debiased squared bias is negative on two seeds (clamped to 0)
    "arm": [(-0.002, 0.5, 0.11), (-0.001, 0.6, 0.1), (0.0004, 0.55, 0.12)],
    # a biased one: its interval excludes 0
    "gumbel-softmax[temperature=0.1]": [(0.01, 0.3, 0.12), (0.012, 0.3, 0.13), (0.011, 0.3, 0.12)],
    # clamped to 0 on every seed, the t-interval wholly below 0
    "rloo": [(-0.0011, 0.4, 0.09), (-0.0010, 0.4, 0.08), (-0.0012, 0.4, 0.1)],
}


@pytest.fixture(scope="module")
def bias() -> Table:
    table = bias_table(bias_rows(BIAS_CELLS))
    assert table is not None
    return table


def _row(table: Table, name: str) -> int:
    column = table.headers.index("estimator")
    return next(i for i, row in enumerate(table.rows) if str(row[column]).startswith(name))


def test_bias_ranks_exact_first_by_mse(bias: Table) -> None:
    mse = bias.headers.index("MSE")
    assert bias.marks[(_row(bias, "exact"), mse)].kind == BEST
    rank = bias.rows[_row(bias, "exact")][bias.headers.index("avg. rank")]
    assert isinstance(rank, Rank) and rank.mean == 1.0
    assert not any(j == bias.headers.index("rel. bias") for _, j in bias.marks)


def test_bias_no_bold_zero_and_biased_only_where_the_interval_excludes_zero(bias: Table) -> None:
    assert "**0.000" not in bias.markdown()
    verdict = bias.headers.index("biased")
    found = {name: bias.rows[_row(bias, name)][verdict] for name in BIAS_CELLS}
    assert found == {"exact": "", "arm": "", "gumbel-softmax[temperature=0.1]": "biased",
                     "rloo": ""}


def test_bias_over_seeds_aggregates_unclamped_and_clamps_once(bias: Table) -> None:
    column = bias.headers.index("rel. bias")
    arm = bias.rows[_row(bias, "arm")][column]
    assert isinstance(arm, Estimate)
    squared = [s for s, _, _ in BIAS_CELLS["arm"]]
    assert sorted(arm.values.values()) == pytest.approx(sorted(squared))
    assert arm.mean == 0.0 and arm.high > 0.0  # the mean of r is negative: clamped once
    rloo = bias.rows[_row(bias, "rloo")][column]
    assert isinstance(rloo, Estimate)
    assert rloo.mean == 0.0 and rloo.high == pytest.approx(0.1)  # never [0, 0]
    biased = bias.rows[_row(bias, "gumbel-softmax")][column]
    assert isinstance(biased, Estimate)
    assert biased.mean == pytest.approx(math.sqrt(0.011))


def test_variance_alone_never_makes_a_biased_estimator_best() -> None:
    rows = [
        ["reinmax", Estimate({0: 1e-6, 1: 1.1e-6})],
        ["rloo", Estimate({0: 1e-4, 1: 1.2e-4})],
        ["lr", Estimate({0: 1e-1, 1: 1.3e-1})],
    ]
    assert not ESTIMATORS["reinmax"].unbiased
    comparison = Comparison((Compared("var", False, log=True),), "variance: lower is better",
                            (True, True, True), biased_apart=True)
    table = assemble("v", "variance", [Column("estimator", key=True), Column("var", "sci")],
                     rows, (), comparison)
    assert table.marks[(1, 1)].kind == BEST
    assert (0, 1) not in table.marks and table.rows[0][2] is None
    assert table.rows[0][0] == "reinmax ‡"
    apart = assemble("v", "variance", [Column("estimator", key=True), Column("var", "sci")],
                     rows, (), Comparison(comparison.columns, "", (True, True, True)))
    assert apart.marks[(0, 1)].kind == BEST  # compared like with like: bias measured alongside


def test_exact_ranks_first_and_diverged_cells_are_never_ranked() -> None:
    rows = [
        ["rloo", Estimate({0: 1.0, 1: 1.1})],
        ["exact", Estimate({0: 2.0, 1: 2.1})],
        ["lr", Estimate({}, lost={0: "diverged", 1: "diverged"})],
        ["arm", Estimate({0: math.inf, 1: 5.0})],
    ]
    comparison = Comparison((Compared("var", False),), "variance", (True,) * 4)
    table = assemble("v", "variance", [Column("estimator", key=True), Column("var", "sci")],
                     rows, (), comparison)
    assert table.marks[(1, 1)].kind == BEST and table.rows[1][2].mean == 1.0
    assert table.rows[0][2].mean == 2.0
    assert (2, 1) not in table.marks and table.rows[2][2] is None
    assert (3, 1) not in table.marks and table.rows[3][2].per_seed == {1: 3.0}
    zero = [["rloo", Estimate({0: 1.0, 1: 1.1})], ["exact", Estimate({0: 0.0, 1: 0.0})]]
    logged = assemble("v", "variance", [Column("estimator", key=True), Column("var", "sci")], zero,
                      (), Comparison((Compared("var", False, log=True),), "variance", (True, True)))
    assert logged.marks[(1, 1)].kind == BEST and logged.rows[1][2].mean == 1.0


def test_one_seed_shows_its_own_interval() -> None:
    cell = Estimate({0: 2.0e-3}, 1.0e-3, 3.0e-3)
    assert display(cell, "sci") == "2.0e-3 ± 1.0e-3"


def test_latex_is_a_float_that_compiles(tmp_path: Path) -> None:
    rows = [["target-prop †", Estimate({0: 1e-6, 1: 2e-6})], ["rloo", Estimate({0: 1e-4, 1: 2e-4})],
            ["lr", Estimate({0: 1e-2, 1: 2e-2})], ["st-gumbel", Estimate({0: 1e-3, 1: 2e-3})]]
    table = assemble("var_x", "Variance of x_y (50 % bias ≈ 0)",
                     [Column("estimator", key=True), Column("var", "sci")], rows, ("a note",),
                     Comparison((Compared("var", False, log=True),), "v", (False, True, True, True),
                                biased_apart=True))
    text = table.latex()
    assert_balanced_latex(text, 3)
    assert "\\textbf{\\boldmath$" in text and "\\underline{$" in text
    assert "\\label{tab:gradbench-var-x}" in text
    if shutil.which("pdflatex") is None:
        pytest.skip("no TeX engine: the structure was checked")
    (tmp_path / "table.tex").write_text(text)
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        "\\input{table.tex}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_each_table_and_figure_on_one_page_and_shared_notes_said_once() -> None:
    first = Table("variance_a", "A", (Column("x"),), (("1",),), ("shared note", "own a"))
    second = Table("bias", "B", (Column("x"),), (("1",),), ("shared note", "own b"))
    figure = plt.figure()
    plot = Plot("variance_vs_batch_a", "V", "caption", figure)  # matches two sections' names
    placed = placement([first, second], [plot])
    homes = [s.page for s, (_, p) in placed.items() if plot in p]
    assert homes == ["batch_size.md"]
    assert shared_notes([first, second]) == ["shared note"]
    rows = prepare_rows(pd.DataFrame())
    made = pages(rows, [first, second], [plot], ("md",), ("png",))
    plt.close(figure)
    assert made["conventions.md"].count("shared note") == 1
    assert "shared note" not in made["variance.md"] + made["bias.md"]
    assert "own a" in made["variance.md"]
    pointer = ("*1 more note on this table, shared with others: "
               "[conventions](conventions.md#notes-shared-by-several-tables).*")
    assert made["variance.md"].count(pointer) == made["bias.md"].count(pointer) == 1
    assert "## Notes shared by several tables" in made["conventions.md"]
    assert sum(text.count("(figures/variance_vs_batch_a.png)") for text in made.values()) == 2
    assert sum(text.count("![V](figures/variance_vs_batch_a.png)") for text in made.values()) == 1
    assert isinstance(placed, dict) and all(isinstance(s, Section) for s in placed)


def test_an_item_that_two_sections_claim_lands_on_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    claim = (Section("a.md", "A", "", lambda name: True), Section("b.md", "B", "", lambda name: True))
    monkeypatch.setattr(build, "SECTIONS", claim)
    table = Table("t", "T", (Column("x"),), (("1",),))
    assert [s.page for s in build.placement([table], [])] == ["a.md"]


@pytest.fixture(scope="module")
def quick() -> pd.DataFrame:
    if not QUICK.is_dir():
        pytest.skip("the committed quick rows are not here")
    return prepare_rows(ResultStore(QUICK).load())


def test_front_page_answers_on_its_first_screen_and_stays_short(quick: pd.DataFrame) -> None:
    text = front_page(quick, {}, None)
    assert len(text.splitlines()) < 280
    first_screen = "\n".join(text.splitlines()[:25])
    variance = select(quick, experiment="variance", model="categorical-vae",
                      metric="grad_variance", param_group="encoder", batch_size=100)
    at = variance[variance["epoch"] == variance["epoch"].max()]
    means = at.groupby("estimator")["value"].mean()
    unbiased = [n for n in means.index if ESTIMATORS[n.partition("[")[0]].unbiased]
    expected = min(unbiased, key=lambda n: means[n])
    table, headlines = summary_table(quick, "categorical-vae")
    answer = next(h for h in headlines if h.group == "encoder")
    assert answer.estimator == expected
    assert (f"**categorical-vae**, encoder, M = 100, after {int(answer.epoch)} epochs: lowest "
            f"gradient variance among unbiased estimators: **{expected}**, "
            f"{display(answer.cell, 'sci')} (95 %") in first_screen
    assert "±" in display(answer.cell, "sci")


def test_every_estimator_keeps_one_distinct_colour(quick: pd.DataFrame) -> None:
    names = [f"estimator-{i}" for i in range(22)]
    styles = plots.estimator_styles(pd.DataFrame({"estimator": names}))
    assert len({s.color for s in styles.values()}) == 22
    subset = quick[quick["model"] == "categorical-vae"]
    styles = plots.estimator_styles(subset)
    drawn: dict[str, set[str]] = {}
    figures = [*plots.variance_plots(subset, styles), *plots.training_plots(subset, styles)]
    for plot in figures:
        for axis in plot.figure.axes:
            for line in axis.get_lines():
                label = re.sub(r" \(.*", "", str(line.get_label()))
                if label in styles:
                    drawn.setdefault(label, set()).add(line.get_color())
        plt.close(plot.figure)
    assert drawn and all(colors == {styles[name].color} for name, colors in drawn.items())


def test_side_by_side_panels_hold_their_legends_without_blank(quick: pd.DataFrame) -> None:
    """Each legend ends before the next panel's labels begin, within half an inch of them."""
    checked = 0
    for plot in plots.variance_plots(quick):
        renderer = plot.figure.canvas.get_renderer()
        axes = plot.figure.axes
        for axis, following in zip(axes, axes[1:]):
            assert axis.get_legend() is not None, plot.name
            legend = axis.get_legend().get_window_extent(renderer)
            labels = following.get_tightbbox(renderer)
            blank = (labels.x0 - legend.x1) / plot.figure.dpi
            assert 0 < blank < 0.5, (plot.name, blank)
            checked += 1
        plt.close(plot.figure)
    assert checked >= 3


ARM = Path(__file__).resolve().parents[1] / "reports" / "arm" / "results"


def test_a_long_training_curve_keeps_few_markers_and_a_short_one_all(quick: pd.DataFrame) -> None:
    """A 1,000-epoch curve (the arm report's) shows at most 2 × MARKERS_PER_CURVE markers; a
    3-epoch one (quick) a marker on every point."""
    if not ARM.is_dir():
        pytest.skip("the committed arm rows are not here")
    arm = prepare_rows(ResultStore(ARM).load())
    for rows, long in ((arm, True), (quick[quick["model"] == "bernoulli-vae"], False)):
        (plot,) = [p for p in plots.training_plots(rows) if "bernoulli" in p.name]
        lines = [line for axis in plot.figure.axes for line in axis.get_lines()
                 if len(line.get_xdata()) > 1]
        assert lines
        for line in lines:
            every = line.get_markevery() or 1
            shown = math.ceil(len(line.get_xdata()) / every)
            assert shown <= 2 * plots.MARKERS_PER_CURVE if long else every == 1, (every, shown)
        plt.close(plot.figure)


README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_commands_and_its_example_runs() -> None:
    text = README.read_text()
    first_screen = text.splitlines()[:25]
    cpu = first_screen.index(
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
    assert first_screen[cpu + 1] == "pip install -e . && python -m gradbench all"
    assert "\n## Python API\n" in text and len(text.splitlines()) < 200
    section = text.split("\n## Add an estimator\n", 1)[1].split("\n## ", 1)[0]
    example = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(example) == 1
    namespace: dict[str, object] = {"__name__": "__main__"}  # run as a script: its check runs
    try:
        exec(compile(example[0], str(README), "exec"), namespace)
        result = namespace["result"]
        for name, exact in result.exact.items():  # unbiased: the mean within 4 standard errors
            for want, mean, error in zip(exact, result.mean[name], result.stderr[name]):
                assert abs(mean - want) < 4 * error
    finally:
        ESTIMATORS.pop("half-baseline", None)


def test_each_stored_row_carries_its_cells_finish_time_and_cells_count_once(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    started = provenance(created_at="2000-01-01T00:00:00+00:00")  # the run's start
    before = datetime.now(timezone.utc).replace(microsecond=0)
    for seed in (0, 1):
        cell = Cell("train", "gaussian-vae", "reparam", {"seed": seed})
        store.save(cell, [{"metric": "elbo", "value": -100.0, "param_group": "test"},
                          {"metric": "elbo", "value": -99.0, "param_group": "valid"}], started)
    rows = store.load()
    stamped = {datetime.fromisoformat(v) for v in rows["created_at"]}
    assert all(before <= when <= datetime.now(timezone.utc) for when in stamped)
    assert cell_count(prepare_rows(rows)) == 2
