"""The results store verifies what it reads and has one writer per cell.

Every corruption of a stored cell (truncated, garbage, empty, random bytes, a column deleted) is
detected on read, named with its path and reason, moved into ``quarantine/`` (kept byte for
byte) and computed again by ``all``, whose rows then equal an uncorrupted run's; ``report``
refuses to build over it. Cells without a digest file (written before digests) are checked by
their schema. Rows whose values are not numbers, or absurd bounds, are ``diverged``. Two runs on
one folder share the work: each cell is computed once and the rows equal one run's.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gradbench.cli import main
from gradbench.data import DataConfig, load_dataset
from gradbench.execution.driver import execute
from gradbench.execution.in_process import InProcessExecutor
from gradbench.execution.task import Context, Task, cell_key
import gradbench.results as results_module
from gradbench.results import (
    PLAUSIBLE_NATS_PER_DIMENSION,
    QUARANTINE,
    STATUS_DIVERGED,
    STATUS_OK,
    Cell,
    CellDamaged,
    CellLock,
    Provenance,
    ResultStore,
    checkout_commit,
    code_version,
    digest_path,
    read_cell,
    row_options,
    source_hash,
    stamp,
)

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parent.parent
SMOKE = ("all", "--profile", "smoke", "--models", "gaussian-vae", "--estimators", "lr,reparam",
         "--experiments", "train", "--quiet", "--formats", "md", "--executor", "in-process")
TIMED = ("created_at", "cell_seconds", "peak_memory_bytes")
"""Columns that differ between two runs of one cell (the clock); with the wall-clock rows."""


def non_timing(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows without their clock columns and wall-clock metrics, in a stable order."""
    kept = rows[rows["metric"] != "wall_clock_s"].drop(columns=list(TIMED))
    order = ["experiment", "model", "estimator", "metric", "param_group", "epoch"]
    return kept.sort_values(order, kind="stable").reset_index(drop=True)


def run_all(results: Path, *extra: str) -> int:
    return main([*SMOKE, "--results", str(results), "--out", str(results.parent / "reports"),
                 *extra])


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uncorrupted smoke run's results folder (copied by each test that damages it)."""
    results = tmp_path_factory.mktemp("clean") / "results"
    assert run_all(results) == 0
    return results


def _last_line_cut(content: bytes) -> bytes:
    """The file cut in the middle of its last row: after the row's fifth field starts."""
    start = content.rstrip(b"\n").rfind(b"\n") + 1
    fields = [i for i, byte in enumerate(content[start:]) if byte == ord(",")]
    return content[: start + fields[4] + 2]


def _drop_column(name: str) -> Callable[[bytes], bytes]:
    def drop(content: bytes) -> bytes:
        frame = pd.read_csv(pd.io.common.BytesIO(content), dtype=str, keep_default_na=False)
        return frame.drop(columns=[name]).to_csv(index=False).encode()
    return drop


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "truncated mid-line": _last_line_cut,
    "truncated at half": lambda content: content[: len(content) // 2],
    "value column deleted": _drop_column("value"),
    "metric column deleted": _drop_column("metric"),
    "text garbage": lambda content: b"this is not a table\nat all, really\n",
    "empty file": lambda content: b"",
    "random bytes": lambda content: np.random.default_rng(0).bytes(len(content)),
    "status column deleted": _drop_column("status"),
    "code_version column deleted": _drop_column("code_version"),
}
"""The issue's nine corruptions of a stored cell file."""

SCHEMA_REASONS = {
    "truncated mid-line": "empty metric in row",
    "truncated at half": None,  # may end on a row's boundary: whole rows are schema-valid
    "value column deleted": "missing column(s) value",
    "metric column deleted": "missing column(s) metric",
    "text garbage": "missing column(s)",
    "empty file": "empty file",
    "random bytes": "not UTF-8 text",
    "status column deleted": "missing column(s) status",
    "code_version column deleted": "missing column(s) code_version",
}
"""What the schema alone says of each corruption (a cell without a digest file)."""


def _damage(results: Path, corruption: str, keep_digest: bool) -> tuple[Path, bytes]:
    target = next((results / "train").glob("gaussian-vae__reparam__*.csv"))
    damaged = CORRUPTIONS[corruption](target.read_bytes())
    target.write_bytes(damaged)
    if not keep_digest:
        digest_path(target).unlink()
    return target, damaged


@pytest.mark.parametrize("keep_digest", [True, False], ids=["digest", "schema-only"])
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_damaged_cell_is_named_set_aside_and_recomputed(
    corruption: str, keep_digest: bool, clean_run: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not keep_digest and SCHEMA_REASONS[corruption] is None:
        pytest.skip("a cut on a row boundary leaves whole rows: only the digest can tell")
    results = tmp_path / "results"
    shutil.copytree(clean_run, results)
    target, damaged = _damage(results, corruption, keep_digest)

    assert main(["report", "--results", str(results), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and str(target) in error, error
    assert not (tmp_path / "r").exists() and target.read_bytes() == damaged

    assert run_all(results) == 0
    captured = capsys.readouterr()
    assert f"damaged result cell {target}" in captured.err
    if not keep_digest:
        assert SCHEMA_REASONS[corruption] in captured.err
    assert "1 cells computed" in captured.out
    kept = list((results / QUARANTINE / "train").glob(f"*__{target.name}"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    reason = kept[0].with_name(kept[0].name + ".reason").read_text()
    assert reason.strip() and reason.strip() in captured.err
    recomputed = ResultStore(results).load(refuse_damaged=True)
    clean = ResultStore(clean_run).load(refuse_damaged=True)
    pd.testing.assert_frame_equal(non_timing(recomputed), non_timing(clean))
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "r")]) == 0


def test_a_digest_that_does_not_match_is_damage_even_when_the_schema_holds(
    clean_run: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    shutil.copytree(clean_run, results)
    target = next((results / "train").glob("gaussian-vae__reparam__*.csv"))
    frame = read_cell(target)
    frame.loc[0, "value"] = frame.loc[0, "value"] + 1.0  # one number changed, still a valid cell
    target.write_text(frame.to_csv(index=False))
    with pytest.raises(CellDamaged, match="contents do not match their digest"):
        read_cell(target)
    digest_path(target).unlink()
    assert read_cell(target).loc[0, "value"] == frame.loc[0, "value"]  # schema alone: accepted


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda f: f.assign(status="done"), "unknown status 'done'"),
        (lambda f: f.assign(value="high"), "not a number in column value, row 2: 'high'"),
        (lambda f: f.assign(experiment="timing"), "rows of experiment 'timing' in folder 'train'"),
        (lambda f: f.iloc[:0], "no rows"),
    ],
    ids=["status", "value", "experiment", "no-rows"],
)
def test_the_schema_checks_statuses_numbers_and_the_folder(
    edit: Callable[[pd.DataFrame], pd.DataFrame], reason: str, clean_run: Path, tmp_path: Path
) -> None:
    source = next((clean_run / "train").glob("gaussian-vae__lr__*.csv"))
    target = tmp_path / "train" / source.name
    target.parent.mkdir()
    target.write_text(edit(read_cell(source)).to_csv(index=False))
    with pytest.raises(CellDamaged, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_cell(target)


def test_cells_written_before_digests_still_load(tmp_path: Path) -> None:
    """A cell file with no digest beside it (written before digests: the committed reports
    hold such cells) is checked against the schema alone and loads."""
    committed = sorted(REPO.glob("reports/paper/results/variance/*.csv"))[:20]
    copies = []
    for path in committed:
        copy = tmp_path / "variance" / path.name
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, copy)
        copies.append(copy)
    assert len(copies) == 20 and not any(digest_path(c).exists() for c in copies)
    assert sum(len(read_cell(c)) for c in copies) > 100


def _provenance() -> Provenance:
    return Provenance.collect(CPU, "test")


def test_rows_carry_their_binarization_and_the_provenance_names_it(tmp_path: Path) -> None:
    """A cell's rows keep the binarization its configuration defines, through the store, and
    the report's provenance names it per dataset; rows stored without one (older cells, the
    catalogue's) leave the dataset's name alone."""
    from gradbench.report.build import datasets
    from gradbench.report.rows import prepare_rows

    store = ResultStore(tmp_path)
    rows = [{"metric": "elbo", "param_group": "test", "value": -90.0}]
    cells = (("arm", "mnist", "dynamic"), ("disarm", "mnist", "dynamic"), ("lr", "digits", None),
             ("rloo", "binarized-mnist", "threshold"))
    for estimator, dataset, binarization in cells:
        config = {"seed": 0, "dataset": dataset}
        if binarization:
            config["binarization"] = binarization
        cell = Cell("train", "bernoulli-vae", estimator, config)
        store.write(cell, stamp(rows, cell, _provenance()))
    loaded = prepare_rows(store.load())
    assert set(loaded.loc[loaded["dataset"] == "mnist", "binarization"]) == {"dynamic"}
    assert datasets(loaded) == (
        "binarized-mnist (binary as published), digits, mnist (dynamic binarization)")


def test_rows_carry_the_model_options_their_network_was_built_with(tmp_path: Path) -> None:
    """Two cells that differ only in the model's architecture store rows that say which network
    each measured (the resolved options, through the store); a cell without options (the
    catalogue's) and rows stored before the column read as None."""
    from gradbench.report.rows import prepare_rows

    store = ResultStore(tmp_path)
    rows = [{"metric": "elbo", "param_group": "test", "value": -100.0}]
    for estimator, architecture in (("arm", "linear"), ("disarm", "nonlinear")):
        options = {"architecture": architecture, "latent_dim": 200, "prior": "learned"}
        cell = Cell("train", "bernoulli-vae", estimator,
                    {"seed": 0, "model_options": options})
        store.write(cell, stamp(rows, cell, _provenance()))
    bare = Cell("train", "bernoulli-vae", "lr", {"seed": 0})
    store.write(bare, stamp(rows, bare, _provenance()).drop(columns="model_options"))
    loaded = prepare_rows(store.load()).set_index("estimator")
    stored = {name: row_options(text) for name, text in loaded["model_options"].items()}
    assert stored == {
        "arm": {"architecture": "linear", "latent_dim": 200, "prior": "learned"},
        "disarm": {"architecture": "nonlinear", "latent_dim": 200, "prior": "learned"},
        "lr": None,
    }


def test_values_that_are_not_numbers_or_absurd_bounds_are_diverged() -> None:
    cell = Cell("train", "gaussian-vae", "reparam", {"seed": 0})
    bound = PLAUSIBLE_NATS_PER_DIMENSION * 64
    rows = [
        {"metric": "iw_bound", "param_group": "test", "value": math.nan},
        {"metric": "elbo", "param_group": "test", "value": -math.inf},
        {"metric": "elbo", "param_group": "train", "value": -1.01 * bound},
        {"metric": "elbo", "param_group": "valid", "value": -0.99 * bound},
        {"metric": "train_loss", "param_group": "train", "value": 7.1e28},
        {"metric": "snr", "param_group": "all", "value": math.nan},
        {"metric": "failed", "param_group": "all", "value": math.nan, "status": "failed"},
    ]
    frame = stamp(rows, cell, _provenance(), input_dim=64)
    assert list(frame["status"]) == [STATUS_DIVERGED, STATUS_DIVERGED, STATUS_DIVERGED,
                                     STATUS_OK, STATUS_OK, STATUS_OK, "failed"]
    assert frame["error"].iloc[0] == "the value is NaN"
    assert frame["error"].iloc[1] == "the value is infinite"
    assert "64 dimensions" in frame["error"].iloc[2]
    unknown_dimension = stamp(rows[2:3], cell, _provenance())
    assert list(unknown_dimension["status"]) == [STATUS_OK]


@pytest.fixture(scope="module")
def context() -> Context:
    return Context(load_dataset(DataConfig(dataset="digits"), CPU), CPU, Path("."))


def _rows(value: float, context: Context, *needed: Any) -> list[dict[str, Any]]:
    return [{"param_group": "test", "metric": "iw_bound", "value": value}]


def _task(name: str, value: float) -> Task:
    cell = Cell("train", "toy", name, {"seed": 0})
    return Task(cell_key(cell), partial(_rows, value), cell=cell)


def test_the_driver_stores_a_nan_bound_as_diverged_and_an_absurd_one_by_the_data_dimension(
    tmp_path: Path, context: Context
) -> None:
    store = ResultStore(tmp_path)
    limit = PLAUSIBLE_NATS_PER_DIMENSION * context.dataset.input_dim
    tasks = [_task("not-a-number", math.nan), _task("absurd", -7.1e28), _task("edge", -limit * 1.001),
             _task("fine", -limit * 0.999)]
    execute(tasks, store, _provenance(), InProcessExecutor(), context)
    status = {t.cell.estimator: store.read(t.cell)["status"].iloc[0] for t in tasks}
    assert status == {"not-a-number": STATUS_DIVERGED, "absurd": STATUS_DIVERGED,
                      "edge": STATUS_DIVERGED, "fine": STATUS_OK}


def test_a_results_folder_that_cannot_be_written_stops_the_run_before_any_cell(
    clean_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "train").write_text("a file where the experiment's folder goes")
    assert run_all(results) == 2
    error = capsys.readouterr().err
    assert f"cannot write results to '{results / 'train'}'" in error
    assert len(error.strip().splitlines()) == 1 and not list(results.glob("*/*.csv"))


def test_a_write_that_fails_after_the_work_keeps_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    real = ResultStore.write
    attempts: list[str] = []

    def full_disk(self: ResultStore, cell: Cell, frame: pd.DataFrame) -> Path:
        if cell.experiment == "train" and cell.estimator == "reparam":
            attempts.append(cell.filename)
            raise OSError(28, "No space left on device")
        return real(self, cell, frame)

    monkeypatch.setattr(ResultStore, "write", full_disk)
    results = tmp_path / "results"
    assert run_all(results) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "No space left on device" in captured.err
    assert len(attempts) == 3
    dumped = tmp_path / "tmp" / "gradbench-unsaved" / attempts[0]
    assert str(dumped) in captured.err
    rows = pd.read_csv(dumped)
    assert set(rows["estimator"]) == {"reparam"} and (rows["metric"] == "elbo").any()
    assert not (results / attempts[0]).exists()
    monkeypatch.setattr(ResultStore, "write", real)
    assert run_all(results) == 0 and (results / attempts[0]).exists()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_is_held_by_one_process_and_a_dead_owner_s_lock_is_taken_over(
    tmp_path: Path
) -> None:
    lock = CellLock(tmp_path / ".cell.csv.lock")
    assert lock.acquire() and lock.mine() and lock.acquire()  # held: taking it again is a no-op
    lock.release()
    assert lock.owner() is None
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.path.write_text(f'{{"pid": {sleeper.pid}, "host": "{os.uname().nodename}"}}')
        assert not lock.stale() and not lock.acquire()
        lock.path.write_text('{"pid": 1, "host": "another-machine"}')
        assert not lock.stale() and not lock.acquire()  # cannot tell: another host's lock stays
        lock.path.write_text(f'{{"pid": {_dead_pid()}, "host": "{os.uname().nodename}"}}')
        assert lock.stale() and lock.acquire() and lock.mine()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_cell_another_run_holds_is_collected_not_computed(
    tmp_path: Path, context: Context
) -> None:
    store = ResultStore(tmp_path)
    provenance = _provenance()
    tasks = [_task("a", -1.0), _task("b", -2.0), _task("c", -3.0)]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    held = store.lock(tasks[1].cell)
    held.path.parent.mkdir(parents=True)
    held.path.write_text(f'{{"pid": {sleeper.pid}, "host": "{os.uname().nodename}"}}')

    def other_run_finishes() -> None:
        time.sleep(1.0)
        store.save(tasks[1].cell, [{"param_group": "test", "metric": "iw_bound", "value": -9.0}],
                   provenance)
        held.path.unlink()

    other = threading.Thread(target=other_run_finishes)
    other.start()
    try:
        driver = execute(tasks, store, provenance, InProcessExecutor(), context)
    finally:
        other.join()
        sleeper.kill()
        sleeper.wait()
    assert driver.computed == 2 and driver.collected == 1
    assert store.read(tasks[1].cell)["value"].iloc[0] == -9.0  # the other run's rows, kept
    assert not list(tmp_path.glob("*/.*.lock"))


def _spawn_all(results: Path, estimators: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "gradbench", *SMOKE[:5], "--estimators", estimators,
            *SMOKE[7:], "--results", str(results), "--out", str(results.parent / "reports")]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_runs_on_one_folder_compute_each_cell_once_with_one_run_s_rows(
    tmp_path: Path
) -> None:
    estimators = "lr,reparam,rloo,muprop"
    alone = _spawn_all(tmp_path / "alone" / "results", estimators)
    out, err = alone.communicate(timeout=300)
    assert alone.returncode == 0, err
    shared = tmp_path / "shared" / "results"
    runs = [_spawn_all(shared, estimators) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [e for _, e in outputs]
    computed = [int(out.split(" cells computed")[0].rsplit(" ", 1)[1]) for out, _ in outputs]
    cells = list(shared.glob("*/*.csv"))
    assert sum(computed) == len(cells) == 8  # 4 catalogue cells, 4 training cells
    assert not list(shared.glob("*/.*.lock"))
    pd.testing.assert_frame_equal(
        non_timing(ResultStore(shared).load(refuse_damaged=True)),
        non_timing(ResultStore(tmp_path / "alone" / "results").load(refuse_damaged=True)),
    )


def test_the_code_version_covers_the_sources_that_make_rows_and_not_the_reports() -> None:
    """A new module under ``report/`` (or the command line) and an edit of the progress lines
    keep the code version, so a commit to the reports keeps stored cells, resumable states and
    checkpoints current; a new module under ``measure/`` changes it."""
    package = Path(results_module.__file__).resolve().parent
    before = source_hash()
    for folder, changes in (("report", False), ("commands", False), ("measure", True)):
        probe = package / folder / "_version_probe.py"
        probe.write_text("VALUE = 1\n")
        try:
            assert (source_hash() != before) is changes, folder
        finally:
            probe.unlink()
    assert source_hash() == before
    progress = package / "execution" / "progress.py"
    text = progress.read_bytes()
    try:
        progress.write_bytes(text + b"\n")
        assert source_hash() == before, "execution/progress.py"
    finally:
        progress.write_bytes(text)
    assert source_hash() == before
    assert code_version() == f"src.{before}"


def test_the_commit_is_dirty_for_changed_sources_and_not_for_stored_rows(tmp_path: Path) -> None:
    """Rows stored in the checkout (a tracked results file rewritten by a run) keep the commit
    clean; an uncommitted change to the package's files makes it ``-dirty``."""
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    package, rows = tmp_path / "pkg", tmp_path / "reports" / "rows.csv"
    package.mkdir()
    rows.parent.mkdir()
    (package / "module.py").write_text("VALUE = 1\n")
    rows.write_text("a\n1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, check=True,
                          capture_output=True, text=True).stdout.strip()
    assert checkout_commit(package) == head
    rows.write_text("a\n2\n")
    assert checkout_commit(package) == head
    (package / "module.py").write_text("VALUE = 2\n")
    assert checkout_commit(package) == f"{head}-dirty"
    assert checkout_commit(tmp_path / "elsewhere" / "pkg") == "unknown"

