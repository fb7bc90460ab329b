"""Reports from stored rows: tables, LaTeX, determinism, published figures, diverged cells.

The rows here are synthetic (built with ``results.stamp``, the store's own stamping), so every
expected number is known; ``tests/test_all.py`` checks the reports of a real smoke run.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from gradbench.catalogue import catalogue_rows
from gradbench.cli import main
from gradbench.estimators import ESTIMATORS
from gradbench.profiles import PROFILES, get_profile, override, with_options
from gradbench.report import build_reports, check_formats, check_writable
from gradbench.report import paper as pub
from gradbench.report.aggregate import Estimate
from gradbench.report.render import display, latex_escape
from gradbench.report.rows import DIVERGED, prepare_rows
from gradbench.report.table import Column, Table
from gradbench.report.tables import all_tables
from gradbench.report.variance_tables import order_notes
from gradbench.results import Cell, Provenance, ResultStore, stamp

BAYES = ("reparam-per-example", "reparam", "local-reparam", "no-noise")
CATEGORICAL = ("lr", "lr-baseline", "gumbel-softmax", "st-gumbel", "target-prop")
GAUSSIAN = ("lr", "lr-baseline", "reparam")
MODELS = {"bayes-mlp": BAYES, "categorical-vae": CATEGORICAL, "gaussian-vae": GAUSSIAN}
BATCH_SIZES = (10, 100)
EPOCHS = (0, 1)
DIVERGED_CELL = ("categorical-vae", "lr")


def provenance(profile: str = "smoke", created_at: str = "2025-01-02T03:04:05+00:00") -> Provenance:
    return Provenance(
        "cpu", "Test CPU (2 cores)", "2.0", 1, "abc123", "abc123", profile, created_at
    )


def variance_value(index: int, batch_size: int) -> float:
    """A known variance: 10^(index+1) / M."""
    return 10.0 ** (index + 1) / batch_size


def synthetic_rows(prov: Provenance | None = None) -> pd.DataFrame:
    """Stamped rows of every experiment; DIVERGED_CELL's variance and training diverge at epoch 1."""
    prov = prov or provenance()
    frames = []
    for model, names in MODELS.items():
        groups = ("top", "bottom") if model == "bayes-mlp" else ("encoder", "decoder")
        for index, name in enumerate(names):
            config = {"seed": 0, "dataset": "digits"}
            diverges = (model, name) == DIVERGED_CELL
            rows = []
            for epoch in EPOCHS:
                bad = diverges and epoch == 1
                for group in (*groups, "all"):
                    for size in BATCH_SIZES:
                        value = math.nan if bad else variance_value(index, size)
                        for metric, scale in (("grad_variance", 1.0), ("grad_variance_noise", 0.75),
                                              ("grad_variance_data", 0.25), ("snr", 0.01)):
                            rows.append({
                                "param_group": group, "batch_size": size, "epoch": epoch,
                                "metric": metric, "value": value * scale, "ci_low": value * 0.5,
                                "ci_high": value * 2.0, "n": 20, "checkpoint": f"e{epoch}",
                                "status": DIVERGED if bad else "ok",
                            })
                    rows.append({"param_group": group, "batch_size": None, "epoch": epoch,
                                 "metric": "log_variance_slope", "value": -1.0, "ci_low": -1.2,
                                 "ci_high": -0.8, "n": 2, "status": DIVERGED if bad else "ok"})
            frames.append(stamp(rows, Cell("variance", model, name, config), prov))
            seconds = 100.0 if name == "reparam-per-example" else 1.0 + index
            timing = [
                {"param_group": None, "batch_size": 100, "epoch": None, "metric": metric,
                 "value": value, "ci_low": value, "ci_high": value, "n": 3,
                 "extrapolated": True, "steps_timed": 5}
                for metric, value in (("seconds_per_epoch", seconds),
                                      ("seconds_per_step", seconds / 50),
                                      ("examples_per_second", 5000 / seconds))
            ]
            frames.append(stamp(timing, Cell("timing", model, name, config), prov))
            training = []
            for epoch in (0, 1, 2):
                bad = diverges and epoch == 2
                metrics = (("elbo", -100.0 + epoch), ("reconstruction_ll", -90.0 + epoch))
                if model == "bayes-mlp":
                    metrics = (("elbo", -0.5), ("error_rate", 0.1 / (epoch + 1)))
                for split in ("train", "valid", "test"):
                    for metric, value in metrics:
                        training.append({"param_group": split, "batch_size": 100, "epoch": epoch,
                                         "metric": metric, "value": math.nan if bad else value,
                                         "status": DIVERGED if bad else "ok"})
                training.append({"param_group": "train", "batch_size": 100, "epoch": epoch,
                                 "metric": "wall_clock_s", "value": 1.5 * epoch,
                                 "status": DIVERGED if bad else "ok"})
            frames.append(stamp(training, Cell("train", model, name, config), prov))
    targets = list(MODELS)
    for label in dict.fromkeys(n for names in MODELS.values() for n in names):
        cell = Cell("catalogue", "all", label, {"targets": targets})
        frames.append(stamp(catalogue_rows(label, targets), cell, prov))
    return pd.concat(frames, ignore_index=True)


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def assert_balanced_latex(text: str, n_columns: int) -> None:
    """One complete table float (caption, label, booktabs rules) around one tabular, every row
    with n_columns cells, no unescaped specials."""
    body = [line for line in text.splitlines() if not line.startswith("%")]
    assert body[0] == "\\begin{table}[htbp]" and body[-1] == "\\end{table}"
    assert any(line.startswith("\\caption{") for line in body[:6])
    assert any(re.fullmatch(r"\\label\{tab:gradbench-[a-z0-9-]+\}", line) for line in body[:6])
    start = next(i for i, line in enumerate(body) if line.startswith("\\begin{tabular}"))
    body = body[start:-1]
    spec = re.fullmatch(r"\\begin\{tabular\}\{([lr]+)\}", body[0])
    assert spec and len(spec.group(1)) == n_columns
    assert body[-1] == "\\end{tabular}"
    assert text.count("\\begin{tabular}") == text.count("\\end{tabular}") == 1
    assert body[1] == "\\toprule" and body[3] == "\\midrule" and body[-2] == "\\bottomrule"
    for line in body[2:3] + body[4:-2]:
        assert line.endswith(" \\\\")
        cells = re.split(r"(?<!\\)&", line[: -len(" \\\\")])
        assert len(cells) == n_columns, line
        for cell in cells:
            assert cell.count("$") % 2 == 0, cell
            assert not re.search(r"(?<!\\)[#_%]", cell.replace("\\times", "")), cell
            assert cell.count("{") == cell.count("}"), cell


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports")
    build_reports(synthetic_rows(), out, formats=("md", "tex", "csv", "png"))
    return out


def test_formats_numbers_like_the_papers() -> None:
    assert display(7.8e3, "sci") == "7.8e3"
    assert display(9.0, "sci") == "9.0e0"
    assert display(5.9e-1, "sci") == "5.9e-1"
    assert display(7.8e3, "sci", latex=True) == "$7.8\\times10^{3}$"
    assert display(1635 / 7.4, "ratio") == "221x"
    assert display(0.0123, "percent") == "1.23 %"
    assert display(None, "sci") == "—"
    assert display(DIVERGED, "sci") == DIVERGED
    assert display(math.inf, "fixed2") == DIVERGED
    assert latex_escape("a_b & 5% #1 {x}") == "a\\_b \\& 5\\% \\#1 \\{x\\}"


def test_table_renders_markdown_latex_and_csv() -> None:
    table = Table("t", "title", (Column("name"), Column("v", "sci")), (("a_b", 1234.5), ("c", None)))
    assert table.markdown().splitlines()[2].startswith("| a_b")
    assert_balanced_latex(table.latex(), 2)
    assert table.csv() == "name,v\na_b,1234.5\nc,\n"


def test_every_report_file_is_written(built: Path) -> None:
    names = {p.stem for p in (built / "tables").glob("*.md")}
    assert names == {
        "timing_bayes_mlp", "timing_vaes", "variance_bayes_mlp", "variance_categorical_vae",
        "variance_gaussian_vae", "variance_slopes", "variance_decomposition",
        "elbo_categorical_vae", "elbo_gaussian_vae", "classification_bayes_mlp", "applicability",
        "diverged",
    }
    for name in names:
        for suffix in ("tex", "csv"):
            assert (built / "tables" / f"{name}.{suffix}").is_file()
    figures = {p.stem for p in (built / "figures").glob("*.png")}
    assert not list((built / "figures").glob("*.pdf"))
    for model in ("bayes_mlp", "categorical_vae", "gaussian_vae"):
        assert {f"variance_vs_batch_{model}", f"variance_parts_vs_batch_{model}",
                f"snr_vs_batch_{model}", f"training_{model}"} <= figures
    assert "timing" in figures
    assert (built / "README.md").is_file() and (built / "references.bib").is_file()


def test_variance_table_is_table_1_with_published_figures_beside(built: Path) -> None:
    rows = read_csv(built / "tables" / "variance_bayes_mlp.csv")
    assert [r["estimator"] for r in rows] == ["local-reparam", "reparam-per-example", "reparam",
                                              "no-noise † ‡"]
    label = pub.published_label(pub.KINGMA_2015, "top, 10 ep")
    assert label == "published top, 10 ep (Kingma et al. 2015, their hardware)"
    assert list(rows[0]) == [
        "estimator", "Kingma et al. row", "top, 0 ep", "top, 1 ep", "bottom, 0 ep", "bottom, 1 ep",
        "avg. rank", label, pub.published_label(pub.KINGMA_2015, "top, 100 ep"),
        pub.published_label(pub.KINGMA_2015, "bottom, 10 ep"),
        pub.published_label(pub.KINGMA_2015, "bottom, 100 ep"),
    ]
    by_name = {r["estimator"].split(" ")[0]: r for r in rows}
    index = BAYES.index("reparam")
    assert float(by_name["reparam"]["top, 1 ep"]) == variance_value(index, 100)
    assert float(by_name["local-reparam"][label]) == 7.8e3
    assert float(by_name["no-noise"][pub.published_label(pub.KINGMA_2015, "bottom, 100 ep")]) == 9.0
    assert by_name["reparam-per-example"]["Kingma et al. row"] == "separate weight samples"


def test_timing_table_has_speedup_and_the_papers_seconds(built: Path) -> None:
    rows = {r["estimator"]: r for r in read_csv(built / "tables" / "timing_bayes_mlp.csv")}
    assert list(rows) == list(BAYES)
    assert float(rows["local-reparam"]["s/epoch (ours)"]) == 1.0 + BAYES.index("local-reparam")
    speedup = "speed-up vs reparam-per-example (ours)"
    assert float(rows["local-reparam"][speedup]) == pytest.approx(100.0 / 3.0)
    published = pub.published_label(pub.KINGMA_2015, "s/epoch")
    assert float(rows["reparam-per-example"][published]) == 1635.0
    assert float(rows["local-reparam"][published]) == 7.4
    assert rows["local-reparam"]["extrapolated"] == "yes (5 steps)"


def test_diverged_cells_show_diverged_not_numbers(built: Path) -> None:
    variance = {r["estimator"]: r for r in read_csv(built / "tables" / "variance_categorical_vae.csv")}
    assert variance["lr"]["encoder, 1 ep"] == DIVERGED
    assert float(variance["lr"]["encoder, 0 ep"]) == variance_value(0, 100)
    assert float(variance["lr-baseline"]["encoder, 1 ep"]) == variance_value(1, 100)
    elbo = {r["estimator"]: r for r in read_csv(built / "tables" / "elbo_categorical_vae.csv")}
    assert elbo["lr"]["ELBO, test"] == DIVERGED
    assert float(elbo["gumbel-softmax"]["ELBO, test"]) == -98.0
    listed = read_csv(built / "tables" / "diverged.csv")
    assert {(r["experiment"], r["model"], r["estimator"]) for r in listed} == {
        ("train", "categorical-vae", "lr"), ("variance", "categorical-vae", "lr")
    }
    assert "| lr " in (built / "tables" / "variance_categorical_vae.md").read_text()
    assert DIVERGED in (built / "tables" / "variance_categorical_vae.tex").read_text()


def test_elbo_table_puts_the_thesis_beside_ours(built: Path) -> None:
    table = read_csv(built / "tables" / "elbo_categorical_vae.csv")
    rows = {r["estimator"].removesuffix(" †"): r for r in table}
    train = pub.published_label(pub.NITTA_2017, "recon. log-lik., train", False)
    valid = pub.published_label(pub.NITTA_2017, "recon. log-lik., valid", False)
    assert float(rows["target-prop"][train]) == -70.102
    assert float(rows["gumbel-softmax"][valid]) == -64.401
    assert float(rows["gumbel-softmax (tau=0.1) (published only)"][train]) == -68.883
    assert rows["gumbel-softmax (tau=0.1) (published only)"]["ELBO, test"] == ""
    assert rows["lr-baseline"][train] == ""
    assert float(rows["st-gumbel"]["recon. log-lik., valid"]) == -88.0
    assert "published" in train and "Nitta 2017" in train


def test_every_latex_table_is_balanced(built: Path) -> None:
    for path in sorted((built / "tables").glob("*.tex")):
        header = next(csv.reader(io.StringIO((path.with_suffix(".csv")).read_text())))
        assert_balanced_latex(path.read_text(), len(header))


def test_pngs_are_readable_images(built: Path) -> None:
    import matplotlib.image

    for path in sorted((built / "figures").glob("*.png")):
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_readme_has_provenance_conventions_and_citation(built: Path) -> None:
    text = (built / "README.md").read_text()
    for expected in ("| git commit | abc123 |", "| profile | smoke |", "| dataset | digits |",
                     "| torch version | 2.0 |", "| seeds | 0 |", "Test CPU (2 cores)",
                     "2025-01-02T03:04:05+00:00", "[conventions](conventions.md)",
                     "## How to cite", "references.bib", "[Gradient variance](variance.md)"):
        assert expected in text, expected
    assert "gradient of the *mean*" in (built / "conventions.md").read_text()
    variance = (built / "variance.md").read_text()
    assert "tables/variance_bayes_mlp.tex" in variance
    assert "figures/variance_vs_batch_bayes_mlp.png" in (built / "batch_size.md").read_text()
    bib = (built / "references.bib").read_text()
    assert all(source.key in bib for source in pub.SOURCES)


def test_tables_are_deterministic_and_ignore_row_order(built: Path, tmp_path: Path) -> None:
    shuffled = synthetic_rows().sample(frac=1.0, random_state=1)
    build_reports(shuffled, tmp_path, formats=("md", "tex", "csv"))
    for path in sorted((built / "tables").iterdir()):
        twin = tmp_path / "tables" / path.name
        assert twin.read_bytes() == path.read_bytes(), path.name
    assert (tmp_path / "references.bib").read_bytes() == (built / "references.bib").read_bytes()


def test_newest_row_wins_and_profiles_are_separated() -> None:
    old = synthetic_rows(provenance(created_at="2025-01-01T00:00:00+00:00"))
    new = synthetic_rows(provenance(created_at="2025-02-01T00:00:00+00:00"))
    new["value"] = new["value"] * 2
    new["config_hash"] = "new"
    rows = prepare_rows(pd.concat([old, new], ignore_index=True))
    assert len(rows) == len(prepare_rows(new))
    assert set(rows["config_hash"]) == {"new"}
    other = synthetic_rows(provenance(profile="quick", created_at="2024-01-01T00:00:00+00:00"))
    both = pd.concat([old, other], ignore_index=True)
    assert set(prepare_rows(both)["profile"]) == {"smoke"}
    assert set(prepare_rows(both, profile="quick")["profile"]) == {"quick"}


def test_applicability_and_marks_come_from_stored_rows(monkeypatch) -> None:
    """A report of stored rows does not change when the live registry does."""
    rows = prepare_rows(synthetic_rows())
    before = {t.name: t.markdown() for t in all_tables(rows)}
    assert "target-prop †" in before["variance_categorical_vae"]
    assert "no-noise †" in before["variance_bayes_mlp"]
    assert "Not an estimate of the ELBO's gradient" in "".join(
        note for t in all_tables(rows) if t.name == "variance_categorical_vae" for note in t.notes
    )
    import gradbench.estimators.target_prop as target_prop

    monkeypatch.setattr(target_prop.TargetPropagation, "estimates_elbo_gradient", True)
    monkeypatch.setitem(ESTIMATORS, "newcomer", ESTIMATORS["lr"])
    after = {t.name: t.markdown() for t in all_tables(rows)}
    assert after == before
    matrix = [t for t in all_tables(rows) if t.name == "applicability"][0]
    assert "newcomer" not in matrix.headers
    assert set(matrix.headers) == {"model", *(n for names in MODELS.values() for n in names)}


def test_no_rows_still_gives_an_index(tmp_path: Path) -> None:
    tables = all_tables(prepare_rows(pd.DataFrame()))
    assert tables == []
    build_reports(pd.DataFrame(), tmp_path)
    assert "No stored results" in (tmp_path / "README.md").read_text()


def test_unwritable_output_and_unknown_format_are_clear_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write reports to"):
        check_writable(blocker / "reports")
    with pytest.raises(ValueError, match="unknown format 'docx'; valid: md, tex, csv, png, pdf"):
        check_formats(["md", "docx"])


def test_report_command_rebuilds_the_same_tables(built: Path, tmp_path: Path, capsys) -> None:
    store = ResultStore(tmp_path / "results")
    rows = synthetic_rows()
    for key, part in rows.groupby(["experiment", "model", "estimator"], sort=True):
        store.write(Cell(key[0], key[1], key[2], {"seed": 0, "dataset": "digits"}), part)
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store.root), "--out", str(out),
                 "--formats", "md,tex,csv"]) == 0
    assert "written to" in capsys.readouterr().out
    for path in sorted((built / "tables").iterdir()):
        assert (out / "tables" / path.name).read_bytes() == path.read_bytes(), path.name
    assert not (out / "figures").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--results", "{tmp}/none"], "no stored results in"),
        (["report", "--results", "{tmp}/results", "--profile", "paper"],
         "no results of profile 'paper'"),
        (["report", "--results", "{tmp}/results", "--formats", "svg"],
         "unknown format 'svg'; valid: md, tex, csv, png, pdf"),
    ],
)
def test_report_command_errors(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    store = ResultStore(tmp_path / "results")
    rows = synthetic_rows()
    store.write(Cell("train", "gaussian-vae", "lr", {}), rows[rows["experiment"] == "train"])
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


def test_profiles_are_plain_values_that_flags_override() -> None:
    assert list(PROFILES) == ["smoke", "quick", "paper", "arm", "arm-nonlinear",
                             "arm-nonlinear-script", "disarm-dynamic"]
    smoke = get_profile("smoke")
    changed = override(smoke, {"train_epochs": "3", "variance_batch_sizes": "2,20",
                               "subset": "none", "dataset": "mnist"})
    assert (changed.train_epochs, changed.variance_batch_sizes) == (3, (2, 20))
    assert changed.subset is None and changed.dataset == "mnist" and smoke.train_epochs == 1
    with pytest.raises(ValueError, match="unknown profile setting 'epochs'; valid: .*train_epochs"):
        override(smoke, {"epochs": "3"})
    with pytest.raises(ValueError, match="bad value 'x' for profile setting train_epochs"):
        override(smoke, {"train_epochs": "x"})
    with pytest.raises(ValueError, match="unknown profile 'fast'; valid: smoke, quick, paper"):
        get_profile("fast")
    options = with_options(smoke, {"gaussian-vae:latent_dim": "3"}, "model", ("gaussian-vae",))
    assert options["gaussian-vae"] == {"hidden_sizes": (32,), "latent_dim": "3"}
    assert smoke.model_options["gaussian-vae"]["latent_dim"] == 4
    paper = get_profile("paper")
    assert (paper.train_epochs, paper.variance_epochs, paper.train_learning_rate) == (50, (10, 100), 3e-4)


def _estimate(value: float, low: float, high: float) -> Estimate:
    return Estimate({0: value}, low, high)


def test_order_notes_say_where_a_papers_order_is_kept_and_reversed() -> None:
    claimed = pub.ClaimedOrder(pub.KINGMA_2015, ("a", "b", "c"), {("b", "c"): "why"})
    columns = {
        "kept, 1 ep": {"a": _estimate(1.0, 0.5, 1.5), "b": _estimate(2.0, 1.8, 2.2),
                       "c": _estimate(3.0, 2.5, 3.5)},
        "loose, 1 ep": {"a": _estimate(1.0, 0.5, 1.5), "b": _estimate(3.0, 2.0, 4.0),
                        "c": _estimate(2.5, 2.0, 3.4)},
        "missed, 1 ep": {"a": _estimate(2.5, 2.0, 3.0), "b": _estimate(4.0, 3.6, 4.4),
                         "c": _estimate(2.0, 1.5, 2.5)},
        "part, 1 ep": {"a": _estimate(1.0, 0.5, 1.5), "c": _estimate(2.0, 1.5, 2.5)},
        "lost, 1 ep": {"a": Estimate({}, lost={0: "skipped"}), "b": _estimate(2.0, 1.8, 2.2),
                       "c": _estimate(3.0, 2.5, 3.5)},
    }
    order, missed = order_notes(claimed, columns)
    assert order == (
        "Kingma et al. 2015's order, variance rising a < b < c: kept in [kept, 1 ep]; reversed "
        "in [loose, 1 ep] (b 3.0e0 ≥ c 2.5e0, intervals overlapping), [missed, 1 ep] (b 4.0e0 ≥ "
        "c 2.0e0, intervals disjoint); not every row measured in [part, 1 ep], [lost, 1 ep]."
    )
    assert missed.startswith("In expectation b is not above c for any network (why); reversed "
                             "with disjoint intervals in [missed, 1 ep], so there")
    columns.pop("missed, 1 ep")
    assert len(order_notes(claimed, columns)) == 1
    columns["kept, 1 ep"]["a"] = _estimate(2.0, math.nan, math.nan)
    assert "[kept, 1 ep] (a 2.0e0 ≥ b 2.0e0, no intervals)" in order_notes(claimed, columns)[0]


def test_variance_table_checks_kingmas_order(built: Path) -> None:
    readme = (built / "variance.md").read_text()
    value = {name: display(variance_value(i, 100), "sci") for i, name in enumerate(BAYES)}
    assert (
        "order, variance rising no-noise < local-reparam < reparam-per-example < reparam: kept in "
        f"no column; reversed in [top, 0 ep] (no-noise {value['no-noise']} ≥ local-reparam "
        f"{value['local-reparam']}, intervals disjoint; local-reparam {value['local-reparam']} ≥ "
        f"reparam-per-example {value['reparam-per-example']}, intervals disjoint), [top, 1 ep]"
    ) in readme
    assert "In expectation reparam-per-example is not above" not in readme
