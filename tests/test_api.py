"""gradbench as a library: the run API, the experiments' registry, per-profile report folders,
strict data, dry-run validation, the banner and progress lines, and the executors' rows."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, fields, replace
from importlib.metadata import EntryPoint
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import gradbench
from gradbench import api
from gradbench.cli import main
from gradbench.commands.flags import flag
from gradbench.execution import progress
from gradbench.execution.progress import ProgressLines
from gradbench.execution.task import Task
from gradbench.experiments import registry
from gradbench.experiments.base import Experiment
from gradbench.experiments.metrics import DECLARED, GRAD_VARIANCE, Metric
from gradbench.profiles import PROFILES, Profile, settable, setting_default
from gradbench.report.build import build_reports
from gradbench.report.table import Column, Table

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"models": ["gaussian-vae"], "estimators": ["lr", "reparam"], "executor": "in-process",
         "progress": False}
"""A run of seconds: the smoke profile's Gaussian VAE with two estimators, in this process."""
MEASURED = ["experiment", "model", "estimator", "param_group", "batch_size", "epoch", "metric",
            "seed", "value", "ci_low", "ci_high"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> api.RunResult:
    """The small run's variance and training, through ``gradbench.run``."""
    root = tmp_path_factory.mktemp("api")
    with redirect_stdout(io.StringIO()):
        return gradbench.run("smoke", **SMALL, experiments=["variance", "train"],
                             out=str(root / "report"), formats="md")


def test_run_returns_the_stored_rows_and_where_they_are(small_run: api.RunResult) -> None:
    rows = small_run.rows
    assert small_run.status == 0 and small_run.computed == small_run.cells > 0
    assert set(rows["experiment"]) == {"catalogue", "variance", "train"}
    assert set(rows["estimator"].dropna()) == {"lr", "reparam"}
    assert small_run.results == small_run.report / "results"
    assert len(pd.concat(pd.read_csv(p) for p in small_run.results.rglob("*.csv"))) == len(rows)
    assert (small_run.report / "tables" / "variance_gaussian_vae.md").is_file()
    again = gradbench.run("smoke", **SMALL, experiments=["variance", "train"],
                          out=str(small_run.report), formats="md", verbose=False)
    assert again.computed == 0 and len(again.rows) == len(rows)


def test_every_stored_metric_is_declared_by_its_experiment(small_run: api.RunResult) -> None:
    experiments = registry.experiments()
    for (experiment, metric), _ in small_run.rows.groupby(["experiment", "metric"]):
        assert metric in experiments[experiment].METRICS, (experiment, metric)


def python_example(readme: str) -> str:
    """The Python block of the README's "Python API" section."""
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with redirect_stdout(printed):
        exec(python_example((ROOT / "README.md").read_text()), {})  # noqa: S102 - our README
    output = printed.getvalue()
    assert "reparam" in output and "ci_low" in output
    assert (tmp_path / "results" / "example" / "train").is_dir()
    assert not (tmp_path / "reports").exists()  # report=False claims no folder


def test_notebook_helpers_return_tidy_rows_of_their_experiment() -> None:
    rows = gradbench.measure_variance("reparam,lr", "gaussian-vae", variance_draws=8,
                                      variance_epochs=(0,), variance_batch_sizes=(1, 10))
    assert set(rows["experiment"]) == {"variance"} and set(rows["estimator"]) == {"reparam", "lr"}
    variance = rows[(rows["metric"] == GRAD_VARIANCE) & (rows["param_group"] == "all")]
    assert sorted(variance["batch_size"].unique()) == [1, 10]
    assert (variance["ci_low"] <= variance["value"]).all()
    assert (variance["value"] <= variance["ci_high"]).all()
    trained = gradbench.train(["reparam"], "gaussian-vae", train_epochs=1, seed=3)
    assert set(trained["seed"]) == {3} and "elbo" in set(trained["metric"])


def test_experiments_are_found_in_the_registry() -> None:
    found = registry.experiments()
    assert list(found) == ["catalogue", "timing", "variance", "paired-variance", "bias", "train"]
    assert registry.selectable() == ("timing", "variance", "paired-variance", "bias", "train")
    for experiment in found.values():
        assert experiment.METRICS and all(m in DECLARED for m in experiment.METRICS)
        assert all(registry.metrics()[m].better in ("lower", "higher", "neither")
                   for m in experiment.METRICS)
        assert set(experiment.settings()) <= set(settable())
        assert experiment.config(PROFILES["smoke"]) is not None
    owned = {name for e in found.values() for name in e.settings()}
    assert {"variance_draws", "bias_draws", "timing_steps", "eval_iw_samples"} <= owned


@dataclass(frozen=True)
class EchoSettings:
    """The echo experiment reads no setting."""


def echo_table(rows: pd.DataFrame) -> Table | None:
    """The echo experiment's table: each echoed value by estimator."""
    echoed = rows[rows["experiment"] == "echo"]
    if echoed.empty:
        return None
    return Table("echo_values", "Echoed values", (Column("estimator", key=True), Column("value")),
                 tuple((row.estimator, f"{row.value:g}") for row in echoed.itertuples()))


class Echo(Experiment):
    """A plugin's experiment: one metric, one table, no tasks."""

    name = "echo"
    title = "Echoes"
    summary = "a plugin's experiment"
    Config = EchoSettings
    METRICS = ("echo",)
    TABLES = (echo_table,)

    def run_tasks(self, plan, dataset, device, root) -> list[Task]:  # noqa: ANN001
        return []


@pytest.fixture
def echo_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The echo experiment installed through its entry point, its metric declared."""
    point = EntryPoint("echo", f"{__name__}:Echo", registry.ENTRY_POINT_GROUP)
    monkeypatch.setitem(DECLARED, "echo", Metric("echo", "", "neither", False, "an echo"))
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [point] if group == registry.ENTRY_POINT_GROUP else [])
    registry.experiments.cache_clear()
    yield
    registry.experiments.cache_clear()


def test_a_plugins_experiment_is_found_through_its_entry_point(echo_installed: None) -> None:
    assert list(registry.experiments())[-1] == "echo"
    assert "echo" in registry.selectable() and "echo" in registry.metrics()


def test_a_plugins_experiment_has_its_own_page_in_the_report(
    echo_installed: None, small_run: api.RunResult, tmp_path: Path
) -> None:
    echoes = small_run.rows.head(2).assign(experiment="echo", metric="echo", value=[3.5, 7.0])
    built = build_reports(pd.concat([small_run.rows, echoes]), tmp_path / "report", formats=["md"])
    assert [t.name for t in built.tables if t.name == "echo_values"] == ["echo_values"]
    page = (tmp_path / "report" / "echo.md").read_text()
    assert page.startswith("# Echoes") and "## Echoed values" in page
    assert "| 3.5 " in page and "| 7 " in page
    front = (tmp_path / "report" / "README.md").read_text()
    assert "- [Echoes](echo.md) (1 table): a plugin's experiment" in front
    others = [p.read_text() for p in (tmp_path / "report").glob("*.md") if p.name != "echo.md"]
    assert not any("Echoed values" in text for text in others)


def test_every_setting_has_one_flag_one_default_and_one_doc(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["all", "--help"])
    help_text = capsys.readouterr().out
    for name in settable():
        assert flag(name) in help_text, name
    for spec in fields(Profile):
        assert spec.metadata.get("doc"), spec.name
    assert setting_default("eval_iw_samples") == Profile.__dataclass_fields__[
        "eval_iw_samples"].default
    flags = api.resolve_profile("smoke", {"variance_draws": "5"})
    assert flags == api.resolve_profile("smoke", {"variance_draws": 5})
    assert flags.variance_draws == 5 and flags.name == "smoke+custom"


@pytest.mark.parametrize(
    ("command", "flag_name", "setting"),
    [("variance", "--draws", "variance_draws"), ("variance", "--at-epochs", "variance_epochs"),
     ("variance", "--bootstrap", "variance_replicates"),
     ("train", "--iw-samples", "eval_iw_samples")],
)
def test_measurement_commands_default_to_the_profiles_declaration(
    command: str, flag_name: str, setting: str
) -> None:
    from gradbench.cli import build_parser

    parser = build_parser()
    args = parser.parse_args([command, "--model", "gaussian-vae", "--estimators", "lr"])
    value = getattr(args, flag_name[2:].replace("-", "_"))
    declared = setting_default(setting)
    assert value == (",".join(map(str, declared)) if isinstance(declared, tuple) else declared)


def test_each_profile_writes_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = api.run("smoke", **SMALL, experiments=["train"], formats="md", verbose=False)
    assert result.report == Path("reports/smoke") and result.results == Path(
        "reports/smoke/results")
    assert json.loads((tmp_path / "reports/smoke/run.json").read_text()) == {
        "profile": "smoke", "dataset": "digits", "binarization": "threshold",
        "models": ["gaussian-vae"],
        "model_options": {"gaussian-vae": {"hidden_sizes": [32], "latent_dim": 4,
                                           "init_std": 0.01}}}
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["smoke"]
    custom = api.run("smoke", **SMALL, experiments=["train"], formats="md", verbose=False,
                     train_epochs=2)
    assert custom.report == Path("reports/smoke+custom")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "gaussian-vae,bernoulli-vae"], "holds the report of another run (models"),
        (["--dataset", "mnist"], "(profile 'smoke', this run 'smoke+custom')"),
    ],
)
def test_a_folder_of_another_runs_report_is_refused_unless_overwrite(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    base = ["all", "--profile", "smoke", "--executor", "in-process", "--quiet",
            "--experiments", "train", "--estimators", "lr", "--formats", "md", "--out", str(out)]
    assert main([*base, "--models", "gaussian-vae"]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    for dry in ([], ["--dry-run"]):
        assert main([*base, *argv, *dry]) == 2
        error = capsys.readouterr().err
        assert message in error and "--overwrite" in error and len(error.splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    if "--models" in argv:
        assert main([*base, *argv, "--overwrite"]) == 0
        assert json.loads((out / "run.json").read_text())["models"] == [
            "bernoulli-vae", "gaussian-vae"]
        assert main([*base, "--models", "bernoulli-vae"]) == 0, "some of its models add to it"
        assert json.loads((out / "run.json").read_text())["models"] == [
            "bernoulli-vae", "gaussian-vae"]


def test_a_profile_of_the_same_name_with_another_network_or_data_is_refused(
    tmp_path: Path,
) -> None:
    """A Profile object named like the folder's (the API takes one as it is) that builds
    another network or binarizes otherwise is another run; a ``run.json`` written before it
    recorded the data and options reads them as its profile's and takes a run of its own."""
    out = tmp_path / "out"
    api.run("smoke", **SMALL, experiments=["train"], formats="md", verbose=False, out=out)
    options = {"gaussian-vae": {"hidden_sizes": (32,), "latent_dim": 3}}
    for other, message in (
        (replace(PROFILES["smoke"], model_options=options),
         "(gaussian-vae options {'hidden_sizes': [32], 'latent_dim': 4, 'init_std': 0.01}, "
         "this run {'hidden_sizes': [32], 'latent_dim': 3, 'init_std': 0.01})"),
        (replace(PROFILES["smoke"], binarization="dynamic"),
         "(binarization 'threshold', this run 'dynamic')"),
    ):
        with pytest.raises(api.FolderTaken, match=re.escape(message)):
            api.run(other, **SMALL, experiments=["train"], formats="md", verbose=False, out=out)
    for older in ({"profile": "smoke", "dataset": "digits", "models": ["gaussian-vae"]},
                  {"profile": "smoke", "dataset": "digits", "binarization": "threshold",
                   "models": ["gaussian-vae"],  # init_std: an option added since
                   "model_options": {"gaussian-vae": {"hidden_sizes": [32], "latent_dim": 4}}}):
        (out / "run.json").write_text(json.dumps(older))
        api.run("smoke", **SMALL, experiments=["train"], formats="md", verbose=False, out=out)
    assert json.loads((out / "run.json").read_text()) == api.manifest(
        replace(PROFILES["smoke"], models=("gaussian-vae",)))


def test_the_committed_paper_report_refuses_another_profile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["all", "--profile", "smoke", "--out", str(ROOT / "reports" / "paper"),
                 "--dry-run", "--executor", "in-process"]) == 2
    assert "(profile 'paper', this run 'smoke')" in capsys.readouterr().err


def test_the_committed_reports_have_their_manifests() -> None:
    committed = [name for name in PROFILES if (ROOT / "reports" / name / "README.md").is_file()
                 and name != "smoke"]
    assert {"paper", "quick", "arm"} <= set(committed)
    for name in committed:
        # as a run reads them: an option added since (bernoulli-vae's leaky_slope) reads as its
        # default
        recorded = api.recorded_manifest(ROOT / "reports" / name / "run.json")
        assert recorded == api.manifest(PROFILES[name])
        assert (ROOT / "reports" / name / "results").is_dir()


@pytest.fixture
def no_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No MNIST anywhere: an empty cache, an unreachable mirror; returns an empty folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("GRADBENCH_MNIST_MIRRORS", "http://127.0.0.1:9")
    monkeypatch.delenv("GRADBENCH_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_a_profile_asking_for_mnist_runs_on_mnist_or_exits_2(
    no_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["all", "--profile", "quick", "--data-dir", str(no_mnist), "--dry-run",
                   "--out", str(tmp_path / "out"), "--executor", "in-process"])
    error = capsys.readouterr().err
    assert status == 2 and "Looked in" in error and str(no_mnist) in error


def test_a_data_dir_that_does_not_exist_exits_2(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nonexistent"
    assert main(["all", "--profile", "smoke", "--data-dir", str(missing), "--dry-run",
                 "--out", str(tmp_path / "out"), "--executor", "in-process"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"gradbench all: error: --data-dir {missing}: no such folder")


@pytest.mark.parametrize("command", ["variance", "train", "timing"])
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dataset", "auto"],
         "unknown dataset 'auto'; valid: mnist, fashion-mnist, digits, binarized-mnist"),
        (["--data-dir", "/nonexistent-gradbench-data"],
         "--data-dir /nonexistent-gradbench-data: no such folder"),
    ],
)
def test_the_measurement_commands_take_the_data_they_name(
    command: str, flags: list[str], message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No ``auto``, no fallback: a dataset that is not one, or a folder that does not exist,
    exits 2 with one line before any work."""
    status = main([command, "--model", "gaussian-vae", "--estimators", "lr", *flags,
                   "--results", str(tmp_path / "results")])
    error = capsys.readouterr().err.strip()
    assert (status, error) == (2, f"gradbench {command}: error: {message}")
    assert not (tmp_path / "results").exists()


def test_the_measurement_commands_default_to_the_profiles_dataset(
    no_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["variance", "--model", "gaussian-vae", "--estimators", "lr", "--data-dir",
                   str(no_mnist), "--results", str(tmp_path / "results")])
    error = capsys.readouterr().err
    assert status == 2 and error.startswith("gradbench variance: error: mnist not found")
    assert "Looked in" in error and str(no_mnist) in error


@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--jobs", "0"], "--jobs must be positive, got 0"),
        (["--executor", "rey"],
         "unknown executor 'rey'; valid: auto, in-process, process-pool, ray"),
        (["--estimators", "lr,lr"], "estimator 'lr' given twice"),
        (["--experiments", "train,train"], "experiment 'train' given twice"),
        (["--set", "variance_draws=0"], "variance_draws must be positive"),
    ],
)
def test_a_dry_run_validates_exactly_as_a_run(
    argv: list[str], message: str, dry: list[str], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    status = main(["all", "--profile", "smoke", "--quiet", "--out", str(out),
                   "--executor", "in-process", *argv, *dry])
    error = capsys.readouterr().err
    assert status == 2 and message in error and len(error.strip().splitlines()) == 1, error
    assert not out.exists()


def test_the_banner_comes_before_the_first_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[str] = []
    real = api.execute

    def first_cell(*args, **kwargs):  # noqa: ANN002, ANN003
        seen.append(capsys.readouterr().err)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "execute", first_cell)
    api.run("smoke", **SMALL, experiments=["train"], out=str(tmp_path / "out"), formats="md")
    banner = seen[0]
    for expected in ("profile smoke", "dataset digits", "1 model × 2 estimators (2 pairs) × 1 "
                     "seed;", "4 cells to run (0 stored)", "on one process", "on 1 worker",
                     f"results: {tmp_path / 'out' / 'results'}/", f"report:  {tmp_path / 'out'}/"):
        assert expected in banner, expected


def test_progress_lines_say_cells_done_and_the_time_to_finish() -> None:
    now = [0.0]
    stream = io.StringIO()
    lines = ProgressLines({"a": 10.0, "b": 30.0}, cells=2, interval=60.0, stream=stream,
                          clock=lambda: now[0])
    now[0] = 20.0
    lines.finished(Task("a", print, cell=None))
    assert stream.getvalue() == ""  # not a minute yet
    now[0] = 60.0
    lines.finished(Task("a2", print))
    assert stream.getvalue() == "gradbench: 0/2 cells, 1m 00s spent, about 3m 00s to finish\n"


def test_a_quick_first_task_does_not_scale_the_time_to_finish() -> None:
    """A catalogue cell estimated at 0.02 s, then a 1,580 s cell: until a tenth of the estimate
    is done the time to finish is the run's estimate less the time spent, not 0.02 s's pace."""
    now = [0.0]
    stream = io.StringIO()
    lines = ProgressLines({"catalogue": 0.02, "train": 1580.0}, cells=2, interval=60.0,
                          stream=stream, clock=lambda: now[0], wall_seconds=1580.0)
    now[0] = 0.1
    lines.finished(Task("catalogue", print))
    now[0] = 240.0
    lines.tick()
    now[0] = 2000.0
    lines.tick()
    assert stream.getvalue().splitlines() == [
        "gradbench: 0/2 cells, 4m 00s spent, about 22m 20s to finish by the estimate",
        "gradbench: 0/2 cells, 33m 20s spent, past the estimate of 26m 20s",
    ]


def test_a_long_cell_gets_progress_lines_while_it_runs() -> None:
    """No task finishes for 0.6 s: the heartbeat still prints about one line per interval."""
    stream = io.StringIO()
    lines = ProgressLines({"long": 100.0}, cells=1, interval=0.1, stream=stream)

    @dataclass
    class Sleeping:
        name: str = "sleeping"

        def execute(self, schedule: object, driver: object) -> None:
            time.sleep(0.6)

    progress.WithProgressLines(Sleeping(), lines).execute(None, None)  # type: ignore[arg-type]
    printed = stream.getvalue().splitlines()
    assert 3 <= len(printed) <= 7, printed
    assert all(line.startswith("gradbench: 0/1 cells, ") for line in printed)


def test_without_a_terminal_a_run_prints_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    options = {**SMALL, "progress": True}
    api.run("smoke", **options, experiments=["train"], out=str(tmp_path / "out"), formats="md")
    err = capsys.readouterr().err
    assert re.search(r"gradbench: 4/4 cells, [0-9.]+s spent", err), err
    assert "\r" not in err


def test_a_process_pool_gives_the_rows_of_this_process(tmp_path: Path) -> None:
    """Every measured value equal (seconds aside: wall-clock differs between processes)."""
    seconds = [name for name, metric in registry.metrics().items() if metric.unit == "s"]
    frames = []
    for executor in ("in-process", "process-pool"):
        result = api.run("smoke", **{**SMALL, "executor": executor}, jobs=2, verbose=False,
                         experiments=["variance", "train"], report=False,
                         results=str(tmp_path / executor))
        rows = result.rows[~result.rows["metric"].isin(seconds)]
        frames.append(rows[MEASURED].sort_values(MEASURED[:8]).reset_index(drop=True))
    assert len(frames[0]) > 500
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_no_metric_name_is_spelled_in_more_than_one_module() -> None:
    """Declared once (gradbench/experiments/metrics.py) and imported where used; an estimator's
    option that shares a name with a metric (gumbel-softmax's temperature) is not a metric, nor
    is the example in a docstring of estimators/base.py."""
    spelled: dict[str, list[str]] = {}
    for path in sorted((ROOT / "gradbench").rglob("*.py")):
        code = "\n".join(line for line in path.read_text().splitlines()
                         if not line.lstrip().startswith(("#", "for option, value in")))
        for name in DECLARED:
            if re.search(rf"[\"']{re.escape(name)}[\"']", code):
                spelled.setdefault(name, []).append(path.name)
    assert {name: files for name, files in spelled.items() if len(files) > 1} == {
        "temperature": ["base.py", "metrics.py"]}


def test_calibrated_cells_are_mapped_by_their_experiments_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one gradient costing 1 s and one evaluation draw 0.5 s, a training cell is
    estimated at the train fit's factors on its gradients and draws plus its seconds; its
    checkpoint-free plan has no other cost."""
    from gradbench.execution import estimate

    monkeypatch.setattr(estimate, "_calibrate", lambda work, dataset, device: (1.0, 0.0))
    monkeypatch.setattr(estimate, "_draw_rate", lambda work, dataset, device: 0.5)
    prepared = api.prepare("smoke", {**SMALL, "experiments": ["train"], "dry_run": True,
                                     "out": str(tmp_path / "out")})
    fit = estimate.CALIBRATED_CELLS["train"]
    trained = [t for t in prepared.schedule.tasks if t.work is not None]
    assert len(trained) == 2
    for task in trained:
        assert task.work.evaluation_draws > 0
        expected = (fit.gradient_scale * task.work.gradients
                    + fit.evaluation_scale * 0.5 * task.work.evaluation_draws + fit.overhead_s)
        assert prepared.costs[task.key] == (pytest.approx(expected), "calibrated")


def test_a_small_cell_is_not_estimated_at_a_large_profiles_fixed_cost(tmp_path: Path) -> None:
    """A smoke training cell took 0.14 s on average (a smoke run in one process, a busy
    machine); the fit on the quick report alone estimated each at 3.5 s or more."""
    prepared = api.prepare("smoke", {**SMALL, "experiments": ["train"], "dry_run": True,
                                     "out": str(tmp_path / "out")})
    trained = [prepared.costs[t.key][0] for t in prepared.schedule.tasks if t.work is not None]
    assert len(trained) == 2 and all(0 < seconds < 1.0 for seconds in trained), trained


@pytest.mark.parametrize("executor", ["in-process", "process-pool"])
def test_a_run_resumes_when_a_summarys_inputs_are_partly_stored(
    executor: str, tmp_path: Path
) -> None:
    """The variance slope needs every batch size's cell: with one of them lost (an interrupted
    run), the next run plans, estimates and computes that cell and the slope alone."""
    options = {**SMALL, "estimators": ["reparam"], "executor": executor, "jobs": 2,
               "experiments": ["variance"], "report": False, "verbose": False,
               "results": str(tmp_path / "results")}
    first = api.run("smoke", **options)
    cells = {path: pd.read_csv(path) for path in (tmp_path / "results" / "variance").glob("*.csv")}
    largest = max((frame["batch_size"].max(), str(path)) for path, frame in cells.items()
                  if frame["batch_size"].notna().any())
    lost = Path(largest[1])
    lost.unlink()
    dry = api.run("smoke", **options, dry_run=True)
    assert dry.cells == 2 and dry.estimated_workers_seconds > 0
    again = api.run("smoke", **options)
    assert again.status == 0 and again.computed == 2 and len(again.rows) == len(first.rows)
    pd.testing.assert_frame_equal(pd.read_csv(lost)[MEASURED], cells[lost][MEASURED])


def test_cells_at_a_checkpoint_trained_anew_are_all_measured_again(tmp_path: Path) -> None:
    """With the checkpoints lost (another machine trains other parameters), losing one variance
    cell makes the run train its checkpoint again and measure every cell at it again, so they
    keep one digest; the paired-variance cells at that checkpoint too."""
    options = {**SMALL, "models": ["bayes-mlp"], "estimators": ["local-reparam", "reparam"],
               "experiments": ["variance", "paired-variance"], "report": False,
               "verbose": False, "results": str(tmp_path / "results")}
    api.run("smoke", **options)
    folders = [tmp_path / "results" / name for name in ("variance", "paired-variance")]

    def at_epoch(epoch: float) -> list[Path]:
        return sorted(path for folder in folders for path in folder.glob("*.csv")
                      if set(pd.read_csv(path)["epoch"].dropna()) == {epoch})

    trained, initial = at_epoch(1.0), at_epoch(0.0)
    assert len(trained) > 4 and len(initial) > 4  # the smoke profile's checkpoints: 0 (no
    # training: the seeded initialisation) and 1 epoch
    before = {path: path.stat().st_mtime_ns for path in trained + initial}
    shutil.rmtree(tmp_path / "results" / "checkpoints")
    next(path for path in trained if "local-reparam" in path.name).unlink()
    again = api.run("smoke", **options)
    assert again.computed == len(trained)
    assert all(path.stat().st_mtime_ns > before[path] for path in trained if path.exists())
    assert all(path.stat().st_mtime_ns == before[path] for path in initial)
    digests = again.rows.loc[again.rows["epoch"] == 1.0, "checkpoint"].dropna()
    assert digests.nunique() == 1
