"""``gradbench all`` end to end: one smoke run shared by the module, then its reports.

The smoke profile (scikit-learn's digits, tiny networks, few draws, one epoch) runs every
applicable model × estimator once into a temporary folder; the tests read what it wrote,
rebuild the reports with ``gradbench report``, resume it, and check the error cases.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import matplotlib.image
import pandas as pd
import pytest
import torch

import gradbench.measure.training as training
from gradbench.catalogue import applicability
from gradbench.cli import main
from gradbench.data import DataConfig, load_dataset
from gradbench.estimators import ESTIMATORS, estimator_class
from gradbench.experiment import Setting
from gradbench.experiments.plan import oracle_problem
from gradbench.profiles import get_profile
from gradbench.report import paper as pub
from gradbench.results import ResultStore, code_version, digest_path
from gradbench.report.tables import label_key
from tests.test_report import assert_balanced_latex


def shown(model: str) -> list[str]:
    """The smoke profile's estimators of a model as tables list them: registry order, variants
    together, † on those whose direction is not an ELBO gradient."""
    labels = sorted(get_profile("smoke").estimator_labels(model), key=label_key)
    return [label if estimator_class(label).estimates_elbo_gradient else f"{label} †"
            for label in labels]


def shown_by_variance(model: str) -> list[str]:
    """As :func:`shown`, biased estimators marked ‡ (a variance table ranks them apart)."""
    return [label if estimator_class(label.removesuffix(" †")).unbiased else f"{label} ‡"
            for label in shown(model)]

SMOKE_MODELS = get_profile("smoke").models
VAES = tuple(m for m in SMOKE_MODELS if m != "bayes-mlp")
TABLES = {
    "timing_bayes_mlp", "timing_vaes", "variance_slopes", "variance_decomposition",
    "classification_bayes_mlp", "applicability", "schedules", "bias",
    "work_normalised_variance",
} | {f"variance_{m.replace('-', '_')}" for m in SMOKE_MODELS} | {
    f"elbo_{m.replace('-', '_')}" for m in VAES
} | {
    f"training_sweep_{m.replace('-', '_')}_{name.replace('-', '_')}"
    for m in VAES
    for name, count in Counter(
        label.partition("[")[0] for label in get_profile("smoke").estimator_labels(m)).items()
    if count > 1
}
FIGURES = {"timing"} | {
    f"{kind}_{model.replace('-', '_')}"
    for kind in ("variance_vs_batch", "variance_parts_vs_batch", "snr_vs_batch", "training")
    for model in SMOKE_MODELS
}


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def run_all(*argv: str) -> int:
    """``all`` in this process (the suite shares its cores), without progress output."""
    return main(["all", "--quiet", "--executor", "in-process", *argv])


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One ``all --profile smoke`` run: (results, reports, its stdout)."""
    root = tmp_path_factory.mktemp("smoke")
    results, reports = root / "results", root / "reports"
    capture = io.StringIO()
    with redirect_stdout(capture):
        status = run_all("--profile", "smoke", "--results", str(results), "--out", str(reports))
    assert status == 0
    return results, reports, capture.getvalue()


def test_smoke_writes_every_report_file(smoke: tuple[Path, Path, str]) -> None:
    _, reports, _ = smoke
    tables = {p.stem for p in (reports / "tables").glob("*.md")}
    assert TABLES <= tables <= TABLES | {"diverged"}
    for name in tables:
        for suffix in ("tex", "csv"):
            assert (reports / "tables" / f"{name}.{suffix}").is_file()
    assert {p.stem for p in (reports / "figures").glob("*.png")} == FIGURES
    assert {p.stem for p in (reports / "figures").glob("*.pdf")} == FIGURES
    assert (reports / "README.md").is_file() and (reports / "references.bib").is_file()


def test_summary_says_what_was_written_where(smoke: tuple[Path, Path, str]) -> None:
    results, reports, output = smoke
    stored = len(list(results.glob("*/*.csv")))
    assert (f"profile smoke, dataset digits, device cpu, seeds 0, executor in-process: "
            f"{stored} cells computed in") in output
    assert f"results: {results}/" in output
    assert f"{reports / 'README.md'}" in output
    assert f"tables:  {len(TABLES)} in {reports / 'tables'}/" in output


def positive_numbers(row: dict[str, str], columns: list[str]) -> bool:
    return all(math.isfinite(float(row[c])) and float(row[c]) > 0 for c in columns)


def test_variance_tables_have_estimator_rows_and_checkpoint_columns(smoke) -> None:
    _, reports, _ = smoke
    rows = read_csv(reports / "tables" / "variance_bayes_mlp.csv")
    names = [r["estimator"] for r in rows]
    assert names[:4] == ["local-reparam", "reparam-per-example", "reparam", "no-noise † ‡"]
    assert sorted(names) == sorted(shown_by_variance("bayes-mlp"))
    ours = ["top, 0 ep", "top, 1 ep", "bottom, 0 ep", "bottom, 1 ep"]
    theirs = [pub.published_label(pub.KINGMA_2015, f"{g}, {e} ep")
              for g in ("top", "bottom") for e in (10, 100)]
    assert list(rows[0]) == ["estimator", "Kingma et al. row", *ours, "avg. rank", *theirs]
    assert all(positive_numbers(r, ours + theirs) for r in rows[:4])
    assert all(positive_numbers(r, ours) for r in rows)
    for model in VAES:
        rows = read_csv(reports / "tables" / f"variance_{model.replace('-', '_')}.csv")
        assert [r["estimator"] for r in rows] == shown_by_variance(model)
        ours = ["encoder, 0 ep", "encoder, 1 ep", "decoder, 0 ep", "decoder, 1 ep"]
        assert list(rows[0]) == ["estimator", *ours, "avg. rank"]
        assert all(positive_numbers(r, ours) for r in rows)
    slopes = read_csv(reports / "tables" / "variance_slopes.csv")
    estimators = sum(len(shown(m)) for m in SMOKE_MODELS)
    assert len(slopes) == estimators * 3 * 2
    decomposition = read_csv(reports / "tables" / "variance_decomposition.csv")
    assert len(decomposition) == estimators * 2


def test_timing_and_elbo_tables(smoke) -> None:
    _, reports, _ = smoke
    timing = read_csv(reports / "tables" / "timing_bayes_mlp.csv")
    names = [r["estimator"] for r in timing]
    assert names[:4] == ["reparam-per-example", "reparam", "local-reparam", "no-noise"]
    assert sorted(names) == sorted(e.removesuffix(" †") for e in shown("bayes-mlp"))
    assert all(positive_numbers(r, ["s/epoch (ours)"]) for r in timing)
    published = pub.published_label(pub.KINGMA_2015, "s/epoch")
    assert [r[published] for r in timing][:4] == ["1635", "", "7.4", ""]
    vaes = read_csv(reports / "tables" / "timing_vaes.csv")
    assert [(r["model"], r["estimator"]) for r in vaes] == [
        (m, e.removesuffix(" †")) for m in sorted(VAES) for e in shown(m)
    ]
    elbo = read_csv(reports / "tables" / "elbo_categorical_vae.csv")
    assert [r["estimator"] for r in elbo] == shown("categorical-vae")  # both thesis τ rows shown
    measured = [f"{m}, {s}" for m in ("recon. log-lik.", "ELBO") for s in ("train", "valid", "test")]
    assert set(measured + ["IW bound, test"]) <= set(elbo[0])
    assert all(float(r["ELBO, test"]) < 0 for r in elbo)
    gaussian = read_csv(reports / "tables" / "elbo_gaussian_vae.csv")
    assert [r["estimator"] for r in gaussian] == shown("gaussian-vae")
    classification = read_csv(reports / "tables" / "classification_bayes_mlp.csv")
    assert all(0 <= float(r["error, test"]) <= 1 for r in classification)
    matrix = read_csv(reports / "tables" / "applicability.csv")
    assert len(matrix) == len(applicability())


def test_schedules_state_the_temperature_and_beta_reached(smoke) -> None:
    """The smoke profile's last checkpoint is its whole run: every schedule ends at its target."""
    _, reports, _ = smoke
    rows = read_csv(reports / "tables" / "schedules.csv")
    final = {(r["estimator"], r["measurement"], r["epoch"]): r for r in rows}
    last = "1"
    assert float(final[("gumbel-softmax[temperature=0.1]", "variance checkpoint", last)][
        "temperature"]) == pytest.approx(0.1)
    assert float(final[("gumbel-softmax[temperature=0.5]", "variance checkpoint", last)][
        "temperature"]) == pytest.approx(0.5)
    assert float(final[("target-prop †", "variance checkpoint", last)]["beta"]) == pytest.approx(
        estimator_class("target-prop")().beta_max)
    assert float(final[("target-prop †", "training", "0")]["beta"]) == 0.0
    assert float(final[("gumbel-softmax[temperature=0.1]", "training", "0")]["temperature"]) == 1.0


def test_latex_is_balanced_and_pngs_are_readable(smoke) -> None:
    _, reports, _ = smoke
    for path in sorted((reports / "tables").glob("*.tex")):
        header = next(csv.reader(io.StringIO(path.with_suffix(".csv").read_text())))
        assert_balanced_latex(path.read_text(), len(header))
    for path in sorted((reports / "figures").glob("*.png")):
        assert matplotlib.image.imread(path).shape[0] > 100
    for path in sorted((reports / "figures").glob("*.pdf")):
        assert path.read_bytes().startswith(b"%PDF")


def test_readme_has_provenance(smoke) -> None:
    _, reports, _ = smoke
    text = (reports / "README.md").read_text()
    for expected in ("| profile | smoke |", "| dataset | digits (threshold binarization) |",
                     "| seeds | 0 |",
                     f"| torch version | {torch.__version__} |", "| git commit |", "| device | cpu (",
                     "| cells finished (UTC, first to last) |", "## How to cite",
                     "[conventions](conventions.md)"):
        assert expected in text, expected
    rows = ResultStore(smoke[0]).load()
    assert set(rows["dataset"]) == {"digits"} and set(rows["profile"]) == {"smoke"}


def test_report_reproduces_the_tables_byte_for_byte(smoke, tmp_path: Path) -> None:
    results, reports, _ = smoke
    out = tmp_path / "again"
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    for path in sorted((reports / "tables").iterdir()):
        assert (out / "tables" / path.name).read_bytes() == path.read_bytes(), path.name
    for name in ("README.md", "references.bib"):
        assert (out / name).read_bytes() == (reports / name).read_bytes()
    assert {p.name for p in (out / "figures").iterdir()} == {
        p.name for p in (reports / "figures").iterdir()
    }


def test_rerun_resumes_without_recomputing(smoke, tmp_path: Path) -> None:
    results, reports, _ = smoke
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.csv")}
    out = tmp_path / "rerun"
    assert run_all("--profile", "smoke", "--results", str(results), "--out", str(out),
                   "--formats", "md") == 0
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.csv")} == before
    for path in sorted((reports / "tables").glob("*.md")):
        assert (out / "tables" / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_cell_made_by_other_code_is_recomputed(tmp_path: Path) -> None:
    """A stored cell whose code_version is not the running code's is made again, unless
    --reuse-stale, and then the report lists both code versions."""
    results, reports = tmp_path / "results", tmp_path / "reports"
    args = ("--profile", "smoke", "--models", "gaussian-vae", "--experiments", "train",
            "--estimators", "lr,reparam", "--results", str(results), "--formats", "md")
    assert run_all(*args, "--out", str(reports)) == 0
    cells = sorted((results / "train").glob("*.csv"))
    assert len(cells) == 2
    stale, fresh = cells
    frame = pd.read_csv(stale)
    assert set(frame["code_version"]) == {code_version()}
    frame["code_version"] = "deadbeef" * 5
    frame.to_csv(stale, index=False)
    digest_path(stale).unlink()  # a cell from before digests: checked by its schema alone
    kept = {p: p.stat().st_mtime_ns for p in cells}
    assert run_all(*args, "--reuse-stale", "--out", str(reports)) == 0
    assert {p: p.stat().st_mtime_ns for p in cells} == kept
    header = (reports / "README.md").read_text()
    assert "deadbeef" * 5 in header and "more than one code version" in header
    assert run_all(*args, "--out", str(reports)) == 0
    assert stale.stat().st_mtime_ns != kept[stale] and fresh.stat().st_mtime_ns == kept[fresh]
    assert set(pd.read_csv(stale)["code_version"]) == {code_version()}
    assert "more than one code version" not in (reports / "README.md").read_text()


def test_interrupted_run_keeps_finished_cells(tmp_path: Path, monkeypatch, capsys) -> None:
    results = tmp_path / "results"
    args = ("--profile", "smoke", "--models", "gaussian-vae", "--experiments", "train",
            "--results", str(results), "--out", str(tmp_path / "reports"), "--formats", "md")
    real = training.training_rows

    def interrupted(setting: Any, name: str, *rest: Any) -> Any:
        if name.startswith("lr-baseline"):
            raise KeyboardInterrupt
        return real(setting, name, *rest)

    monkeypatch.setattr(training, "training_rows", interrupted)
    assert run_all(*args) == 130
    assert "interrupted" in capsys.readouterr().err
    finished = {p: p.stat().st_mtime_ns for p in (results / "train").glob("*.csv")}
    assert [p.name.split("__")[1] for p in finished] == ["lr"]
    monkeypatch.setattr(training, "training_rows", real)
    assert run_all(*args) == 0
    after = {p: p.stat().st_mtime_ns for p in (results / "train").glob("*.csv")}
    labels = get_profile("smoke").estimator_labels("gaussian-vae")
    assert len(after) == len(labels) and all(after[p] == t for p, t in finished.items())


def test_diverging_estimators_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    results, reports = tmp_path / "results", tmp_path / "reports"
    assert run_all("--profile", "smoke", "--models", "gaussian-vae", "--experiments", "train",
                   "--set", "train_learning_rate=1e30", "--results", str(results),
                   "--out", str(reports), "--formats", "md,csv") == 0
    rows = ResultStore(results).load("train")
    assert set(rows["profile"]) == {"smoke+custom"}
    assert set(rows["estimator"]) == set(get_profile("smoke").estimator_labels("gaussian-vae"))
    assert set(rows.groupby("estimator")["status"].agg(lambda s: (s == "diverged").any())) == {True}
    elbo = read_csv(reports / "tables" / "elbo_gaussian_vae.csv")
    assert {r["ELBO, test"] for r in elbo} == {"diverged"}
    listed = read_csv(reports / "tables" / "diverged.csv")
    assert {r["estimator"] for r in listed} == set(rows["estimator"])
    assert "[Diverged, failed and skipped cells](lost_cells.md)" in (reports / "README.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--profile", "fast"], "unknown profile 'fast'; valid: smoke, quick, paper"),
        (["--models", "vae"], "unknown model 'vae'; valid: "),
        (["--estimators", "reinforce"], "unknown estimator 'reinforce'; valid: " + ", ".join(ESTIMATORS)),
        (["--formats", "md,docx"], "unknown format 'docx'; valid: md, tex, csv, png, pdf"),
        (["--experiments", "bogus"],
         "unknown experiment 'bogus'; valid: timing, variance, paired-variance, bias, train"),
        (["--set", "epochs=3"], "unknown profile setting 'epochs'; valid: "),
        (["--models", "gaussian-vae", "--estimators", "target-prop"],
         "estimator(s) target-prop do not apply to model(s) gaussian-vae; applicable: "),
        (["--model-arg", "gaussian-vae:depth=3"], "unknown option"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    status = run_all("--profile", "smoke", "--results", str(results),
                     "--out", str(tmp_path / "out"), *argv)
    error = capsys.readouterr().err
    assert status == 2
    assert message in error and len(error.strip().splitlines()) == 1, error
    assert not results.exists() or not any(results.rglob("*.csv"))


def test_unwritable_output_fails_before_any_computation(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    results = tmp_path / "results"
    assert run_all("--profile", "smoke", "--results", str(results),
                   "--out", str(blocker / "reports")) == 2
    assert "cannot write reports to" in capsys.readouterr().err
    assert not results.exists()


def test_missing_data_says_where_it_looked(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GRADBENCH_MNIST_MIRRORS", "http://127.0.0.1:9")
    monkeypatch.delenv("GRADBENCH_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    status = run_all("--profile", "smoke", "--dataset", "mnist", "--data-dir",
                     str(tmp_path / "empty"), "--results", str(tmp_path / "results"),
                     "--out", str(tmp_path / "out"))
    error = capsys.readouterr().err
    assert status == 2
    assert "Looked in" in error and str(tmp_path / "empty") in error and "--data-dir" in error
    assert not any((tmp_path / "results").rglob("*.csv"))


@pytest.mark.parametrize(("options", "exact"), [({"n_vars": 4, "n_classes": 8}, True),
                                                ({"n_vars": 30, "n_classes": 10}, False)])
def test_bias_runs_on_the_runs_own_configuration_where_it_is_enumerable(options, exact) -> None:
    """ReinMax's 8 × 4 (4,096 configurations) is measured against its own exact gradient; the
    thesis' 30 × 10 falls back to the model's small oracle configuration."""
    dataset = load_dataset(DataConfig(dataset="digits"), torch.device("cpu"))
    setting = Setting("categorical-vae", {"hidden_sizes": (8,), **options})
    assert (oracle_problem(setting, dataset) is None) is exact


def test_work_normalised_variance_uses_each_estimators_evaluations(smoke) -> None:
    """Evaluations come from the run's catalogue (rloo 4, arm 2, rebar 3, lr 1), and the matched
    columns are the variance times evaluations and times seconds per gradient."""
    _, reports, _ = smoke
    rows = read_csv(reports / "tables" / "work_normalised_variance.csv")
    evaluations = {r["estimator"]: float(r["evaluations"]) for r in rows}
    assert {k: evaluations[k] for k in ("rloo", "arm", "rebar", "lr")} == {
        "rloo": 4.0, "arm": 2.0, "rebar": 3.0, "lr": 1.0
    }
    for row in rows:
        variance, seconds = float(row["variance"]), float(row["s / gradient"])
        assert float(row["variance × evaluations"]) == pytest.approx(
            variance * float(row["evaluations"]), rel=1e-8
        )
        assert float(row["variance × s"]) == pytest.approx(variance * seconds, rel=1e-8)


def test_a_pair_that_cannot_run_is_skipped_with_its_reason(tmp_path: Path, capsys) -> None:
    """exact on a 30 × 10 latent (10^30 configurations): the probe drops the pair, says why,
    and the run goes on with the others."""
    status = run_all(
        "--profile", "smoke", "--models", "categorical-vae", "--estimators", "exact,lr",
        "--model-arg", "categorical-vae:n_vars=30", "--model-arg", "categorical-vae:n_classes=10",
        "--experiments", "timing", "--results", str(tmp_path / "results"),
        "--out", str(tmp_path / "reports"),
    )
    assert status == 0
    err = capsys.readouterr().err
    assert "skipping estimator exact (categorical-vae)" in err and "max_configurations" in err
    rows = ResultStore(tmp_path / "results").load()
    timed = set(rows[rows["experiment"] == "timing"]["estimator"].dropna())
    assert "lr" in timed and "exact" not in timed
