"""Tasks, schedules and the in-process executor: what runs, what is stored, what a rerun does.

Seeds: ``all --seeds`` runs every cell once per seed, keyed by the seed; a failed task is stored
as a failed row and the run goes on; ``--dry-run`` estimates what is left.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import gradbench.measure.training as training
from gradbench.cli import main
from gradbench.data import DataConfig, load_dataset
from gradbench.device import torch_threads
from gradbench.execution.driver import execute
from gradbench.execution.estimate import makespan, stored_seconds
from gradbench.execution import limits
from gradbench.execution.in_process import InProcessExecutor
from gradbench.execution.schedule import ordered, plan_schedule
from gradbench.execution.task import Context, Resources, Task, cell_key
from gradbench.results import STATUS_FAILED, STATUS_SKIPPED, Cell, Provenance, ResultStore

CPU = torch.device("cpu")
TRAIN = ("--profile", "smoke", "--models", "gaussian-vae", "--estimators", "lr,reparam",
         "--experiments", "train", "--quiet", "--formats", "md", "--executor", "in-process")


@pytest.fixture(scope="module")
def context() -> Context:
    return Context(load_dataset(DataConfig(dataset="digits"), CPU), CPU, Path("."))


def _rows(value: float, context: Context, *needed: Any) -> list[dict[str, Any]]:
    total = value + sum(float(frame["value"].sum()) for frame in needed)
    return [{"param_group": "all", "metric": "m", "value": total}]


def _raise(context: Context) -> list[dict[str, Any]]:
    raise RuntimeError("boom\nsecond line")


def _cell(name: str) -> Cell:
    return Cell("variance", "toy", name, {"seed": 0})


def _task(name: str, run: Any, needs: tuple[str, ...] = (), derived: bool = False) -> Task:
    cell = _cell(name)
    return Task(cell_key(cell), run, needs, cell, derived=derived)


def test_tasks_are_ordered_after_what_they_need_and_bad_graphs_raise() -> None:
    a, b = _task("a", partial(_rows, 1.0)), _task("b", partial(_rows, 2.0))
    c = _task("c", partial(_rows, 0.0), (a.key, b.key), derived=True)
    assert [t.key for t in ordered([c, b, a, b])] == [a.key, b.key, c.key]
    with pytest.raises(ValueError, match="which no task makes"):
        ordered([c, a])
    loop = Task("x", partial(_rows, 0.0), ("y",))
    with pytest.raises(ValueError, match="need each other"):
        ordered([loop, Task("y", partial(_rows, 0.0), ("x",))])


def test_an_intermediate_task_runs_just_before_the_first_cell_that_needs_it() -> None:
    """Checkpoints listed first still run late: the cells at 10 epochs come before the
    checkpoint at 100 is trained, so an interrupted run has stored them."""
    early = Task("checkpoint 10", partial(_rows, 0.0))
    late = Task("checkpoint 100", partial(_rows, 0.0), (early.key,))
    at_10 = [_task(f"{name} at 10", partial(_rows, 1.0), (early.key,)) for name in "ab"]
    at_100 = _task("a at 100", partial(_rows, 1.0), (late.key,))
    keys = [t.key for t in ordered([early, late, *at_10, at_100])]
    assert keys == [early.key, at_10[0].key, at_10[1].key, late.key, at_100.key]


def test_every_experiments_cells_at_one_checkpoint_run_before_the_next_checkpoint() -> None:
    """Two experiments listed one after the other (variance at 10 and 100, then the paired
    variance at 10 and 100): the paired cell at 10 runs before the checkpoint at 100."""
    early = Task("checkpoint 10", partial(_rows, 0.0))
    late = Task("checkpoint 100", partial(_rows, 0.0), (early.key,))
    first = [_task(f"variance at {e}", partial(_rows, 1.0), (c.key,))
             for e, c in ((10, early), (100, late))]
    second = [_task(f"paired at {e}", partial(_rows, 1.0), (c.key,))
              for e, c in ((10, early), (100, late))]
    keys = [t.key for t in ordered([early, late, *first, early, late, *second])]
    assert keys == [early.key, first[0].key, second[0].key, late.key, first[1].key,
                    second[1].key]


def test_stored_cells_are_skipped_and_derived_cells_redone_when_a_need_reruns(
    tmp_path: Path, context: Context
) -> None:
    store = ResultStore(tmp_path)
    provenance = Provenance.collect(CPU, "test")
    a, b = _task("a", partial(_rows, 1.0)), _task("b", partial(_rows, 2.0))
    c = _task("c", partial(_rows, 0.0), (a.key, b.key), derived=True)
    driver = execute([a, b, c], store, provenance, InProcessExecutor(), context)
    assert driver.computed == 3 and not driver.failed
    assert float(store.read(c.cell)["value"].iloc[0]) == 3.0
    assert plan_schedule([a, b, c], store, provenance).tasks == []
    store.path(a.cell).unlink()
    schedule = plan_schedule([a, b, c], store, provenance)
    assert [t.key for t in schedule.tasks] == [a.key, c.key]  # c redone, b read from the store
    a_changed = _task("a", partial(_rows, 10.0))
    execute([a_changed, b, c], store, provenance, InProcessExecutor(), context)
    assert float(store.read(c.cell)["value"].iloc[0]) == 12.0


def _checkpoint(context: Context) -> pd.DataFrame:
    return pd.DataFrame({"value": [1.0]})


@pytest.mark.parametrize("made", [True, False])
def test_cells_at_an_intermediate_are_redone_when_the_run_makes_it_anew(
    made: bool, tmp_path: Path, context: Context
) -> None:
    """Two cells measured at one checkpoint: with one of them lost, a run that trains the
    checkpoint anew (its file lost too, or another machine's) measures both again, one set of
    parameters for both; a checkpoint loaded from its file (on the driver) leaves the other
    stored. A derived cell of theirs follows."""
    store = ResultStore(tmp_path)
    provenance = Provenance.collect(CPU, "test")
    point = Task("checkpoints/x.pt", _checkpoint, on_driver=not made)
    a, b = (Task(cell_key(_cell(n)), partial(_rows, 1.0), (point.key,), _cell(n),
                 at_intermediate=True) for n in ("a", "b"))
    c = _task("c", partial(_rows, 0.0), (a.key, b.key), derived=True)
    other = _task("other", partial(_rows, 5.0))
    execute([point, a, b, c, other], store, provenance, InProcessExecutor(), context)
    assert plan_schedule([point, a, b, c, other], store, provenance).tasks == []
    store.path(a.cell).unlink()
    schedule = plan_schedule([point, a, b, c, other], store, provenance)
    expected = [point.key, a.key, b.key, c.key] if made else [point.key, a.key, c.key]
    assert [t.key for t in schedule.tasks] == expected
    assert set(schedule.stored) == ({other.key} if made else {b.key, other.key})


def test_a_checkpoint_trained_on_the_way_to_a_later_one_keeps_its_cells(
    tmp_path: Path, context: Context
) -> None:
    """Checkpoints at 10 and 100 epochs, both files lost: a lost cell at 100 trains both, and
    measures the other cell at 100 again, not the cell at 10."""
    store = ResultStore(tmp_path)
    provenance = Provenance.collect(CPU, "test")
    early = Task("checkpoints/10.pt", _checkpoint)
    late = Task("checkpoints/100.pt", lambda context, before: before, (early.key,))
    at_early, a, b = (Task(cell_key(_cell(n)), partial(_rows, 1.0), (point.key,), _cell(n),
                           at_intermediate=True)
                      for n, point in (("e", early), ("a", late), ("b", late)))
    tasks = [early, late, at_early, a, b]
    execute(tasks, store, provenance, InProcessExecutor(), context)
    store.path(a.cell).unlink()
    schedule = plan_schedule(tasks, store, provenance)
    assert [t.key for t in schedule.tasks] == [early.key, late.key, a.key, b.key]
    assert set(schedule.stored) == {at_early.key}


def test_a_failed_task_is_stored_as_failed_its_dependents_too_and_a_rerun_retries(
    tmp_path: Path, context: Context
) -> None:
    store = ResultStore(tmp_path)
    provenance = Provenance.collect(CPU, "test")
    bad, good = _task("bad", _raise), _task("good", partial(_rows, 1.0))
    after = _task("after", partial(_rows, 0.0), (bad.key,), derived=True)
    driver = execute([bad, good, after], store, provenance, InProcessExecutor(), context)
    assert len(driver.failed) == 2 and "RuntimeError: boom" in driver.failed[0]
    failed = store.read(bad.cell)
    assert list(failed["status"]) == [STATUS_FAILED] and failed["error"].iloc[0] == "RuntimeError: boom"
    assert store.read(after.cell)["error"].iloc[0] == "a task it needs failed"
    assert store.stored(bad.cell, provenance) is None  # failed: not finished
    assert store.stored(good.cell, provenance) is not None
    fixed = _task("bad", partial(_rows, 5.0))
    driver = execute([fixed, good, after], store, provenance, InProcessExecutor(), context)
    assert driver.computed == 2 and not driver.failed
    assert float(store.read(after.cell)["value"].iloc[0]) == 5.0


def test_makespan_respects_needs_and_whole_node_tasks() -> None:
    a = Task("a", _raise)
    b = Task("b", _raise)
    c = Task("c", _raise, ("a",))
    whole = Task("w", _raise, resources=Resources(whole_node=True))
    costs = {"a": (10.0, ""), "b": (4.0, ""), "c": (5.0, ""), "w": (3.0, "")}
    assert makespan([a, b, c], costs, 1) == 19.0
    assert makespan([a, b, c], costs, 2) == 15.0  # c waits for a
    assert makespan([a, b, whole], costs, 2) == 13.0  # w waits for both slots


def test_seeds_run_every_cell_per_seed_and_a_seed_alone_reuses_its_cells(tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = (*TRAIN, "--results", str(results), "--out", str(tmp_path / "reports"))
    assert main(["all", *args, "--seeds", "0,1"]) == 0
    rows = ResultStore(results).load("train")
    assert sorted(rows["seed"].unique()) == [0, 1]
    assert len(list((results / "train").glob("*.csv"))) == 4
    elbo = rows[(rows["metric"] == "elbo") & (rows["param_group"] == "test")]
    by_seed = elbo.groupby(["estimator", "seed"])["value"].last().unstack()
    assert (by_seed[0] != by_seed[1]).all()  # seeds change the numbers
    stamps = {p: p.stat().st_mtime_ns for p in results.rglob("*.csv")}
    assert main(["all", *args, "--seeds", "1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.csv")} == stamps


def test_a_failing_cell_is_recorded_the_run_goes_on_and_a_rerun_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    args = (*TRAIN, "--results", str(results), "--out", str(tmp_path / "reports"))
    real = training.training_rows

    def failing(setting: Any, name: str, *rest: Any) -> Any:
        if name == "lr":
            raise FloatingPointError("simulated failure")
        return real(setting, name, *rest)

    monkeypatch.setattr(training, "training_rows", failing)
    assert main(["all", *args]) == 1
    captured = capsys.readouterr()
    assert "FloatingPointError: simulated failure" in captured.err
    assert "failed (1, stored as failed rows; rerun to retry)" in captured.out
    rows = ResultStore(results).load("train")
    assert set(rows[rows["estimator"] == "lr"]["status"]) == {STATUS_FAILED}
    assert set(rows[rows["estimator"] == "reparam"]["status"]) == {"ok"}
    monkeypatch.setattr(training, "training_rows", real)
    assert main(["all", *args]) == 0
    rows = ResultStore(results).load("train")
    assert set(rows["status"]) == {"ok"} and "error" not in rows or rows["error"].isna().all()


def test_dry_run_estimates_what_is_left_from_stored_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    args = (*TRAIN, "--results", str(results), "--out", str(tmp_path / "reports"))
    assert main(["all", *args, "--dry-run", "--jobs", "2", "--executor", "process-pool"]) == 0
    out = capsys.readouterr().out
    assert "to run: 4 cells" in out and out.count("(calibrated)") == 2  # 2 catalogue cells
    assert "in one process;" in out and "with 2 workers" in out
    assert not results.exists()
    assert main(["all", *args]) == 0
    capsys.readouterr()
    assert main(["all", *args, "--dry-run"]) == 0
    assert "to run: 0 cells" in capsys.readouterr().out
    assert main(["all", *args, "--dry-run", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "to run: 2 cells" in out and out.count("(stored") == 2
    stored = ResultStore(results).load("train").drop_duplicates("config_hash")
    seconds = stored.set_index("estimator")["cell_seconds"].astype(float)
    assert all(math.isfinite(s) and s > 0 for s in seconds)
    for name, value in seconds.items():
        assert f"{value:9.1f} s  (stored    )  train gaussian-vae / {name} / seed 1" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--executor", "dask"],
         "unknown executor 'dask'; valid: auto, in-process, process-pool, ray"),
        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
        (["--jobs", "0"], "--jobs must be positive, got 0"),
        (["--seeds", "0,0"], "seeds must be distinct non-negative integers"),
        (["--seeds", "x"], "bad value 'x' for profile setting seeds"),
    ],
)
def test_bad_execution_flags_exit_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["all", *TRAIN, "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o"),
                   *argv])
    error = capsys.readouterr().err
    assert status == 2 and message in error and len(error.strip().splitlines()) == 1, error


def test_failed_rows_are_not_finished_cells(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    provenance = Provenance.collect(CPU, "test")
    cell = _cell("x")
    store.save(cell, [{"param_group": "all", "metric": "m", "value": 1.0}], provenance)
    assert isinstance(store.stored(cell, provenance), pd.DataFrame)
    store.save(cell, [{"metric": "failed", "status": STATUS_FAILED, "error": "e"}], provenance)
    assert store.stored(cell, provenance) is None


def test_cells_over_the_time_limit_are_stored_as_skipped_with_their_estimate(
    tmp_path: Path, context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell estimated over the limit, and one that needs a checkpoint estimated over it, are
    stored as skipped (estimate and reason in the row), the checkpoint is not trained, the rest
    runs; skipped cells are unfinished, so a rerun with a larger limit computes them."""
    store = ResultStore(tmp_path)
    provenance = Provenance.collect(CPU, "test")
    ran: list[str] = []

    def checkpoint(context: Context) -> pd.DataFrame:
        ran.append("checkpoint")
        return pd.DataFrame({"value": [0.5]})

    slow_checkpoint = Task("ckpt", checkpoint)
    quick, slow = _task("quick", partial(_rows, 1.0)), _task("slow", partial(_rows, 2.0))
    needs_slow = _task("after", partial(_rows, 0.0), (slow_checkpoint.key,))
    over_both = _task("slope", partial(_rows, 9.0), (quick.key, slow.key), derived=True)
    tasks = [slow_checkpoint, quick, slow, needs_slow, over_both]
    hours = {quick.key: 0.5, slow.key: 3.0, slow_checkpoint.key: 5.0, needs_slow.key: 0.1}
    monkeypatch.setattr(limits, "estimate", lambda tasks, *rest: {
        t.key: (hours[t.key] * 3600, "calibrated") for t in tasks if t.key in hours
    })
    kept, lines = limits.skip_too_long(tasks, store, provenance, context.dataset, CPU, 2.0)
    assert len(lines) == 3 and "estimated 3.0 h" in lines[0] and "estimated 5.0 h" in lines[1]
    assert lines[2].startswith(over_both.key) and over_both.key not in {t.key for t in kept}
    driver = execute(kept, store, provenance, InProcessExecutor(), context)
    assert not driver.failed and ran == []  # the checkpoint nobody runs is not trained
    assert not store.has(over_both.cell)  # a derived cell over a skipped one stores no row
    assert float(store.read(quick.cell)["value"].iloc[0]) == 1.0
    for task, estimate_hours in ((slow, 3.0), (needs_slow, 5.0)):
        row = store.read(task.cell).iloc[0]
        assert row["status"] == STATUS_SKIPPED and row["metric"] == "estimated_seconds"
        assert row["value"] == estimate_hours * 3600 and "max_cell_hours = 2" in row["error"]
        assert store.stored(task.cell, provenance) is None
    kept, lines = limits.skip_too_long(tasks, store, provenance, context.dataset, CPU, 10.0)
    assert lines == []
    driver = execute(kept, store, provenance, InProcessExecutor(), context)
    assert ran == ["checkpoint"] and driver.computed == 3
    assert float(store.read(over_both.cell)["value"].iloc[0]) == 9.0 + 1.0 + 2.0
    assert float(store.read(needs_slow.cell)["value"].iloc[0]) == 0.5


def test_calibration_times_one_torch_thread_by_its_cpu_time(monkeypatch, context) -> None:
    """On the CPU the calibration runs at one torch thread and reads this thread's CPU clock,
    never the wall clock (which other processes inflate)."""
    from gradbench.execution import estimate
    from gradbench.experiment import Setting

    ticks = iter(range(1000))
    monkeypatch.setattr(estimate.time, "thread_time", lambda: float(next(ticks)))
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: pytest.fail("wall clock read"))
    threads: list[int] = []
    real = estimate.build_model

    def recording(*args: Any) -> Any:
        model = real(*args)
        forward = model.forward

        def counted(*inputs: Any) -> Any:
            threads.append(torch.get_num_threads())
            return forward(*inputs)

        model.forward = counted
        return model

    monkeypatch.setattr(estimate, "build_model", recording)
    work = estimate.Work(Setting("gaussian-vae", {"hidden_sizes": "8", "latent_dim": "2"}),
                         "reparam", 10, 100)
    with torch_threads(2):
        intercept, slope = estimate._calibrate(work, context.dataset, CPU)
        assert torch.get_num_threads() == 2
    assert (intercept, slope) == (1.0, 0.0)  # every gradient took one tick of the fake clock
    assert threads and set(threads) == {1}


def test_ray_asks_for_a_task_s_memory_on_the_cpu_capped_at_a_node_s() -> None:
    from gradbench.execution.ray_executor import RayExecutor

    executor = RayExecutor()
    big = Task("big", partial(_rows, 1.0), resources=Resources(memory_bytes=12 * 2**30))
    small = Task("small", partial(_rows, 1.0))
    assert executor._options(big, 2, "cpu", 16 * 2**30)["memory"] == 12 * 2**30
    assert executor._options(big, 2, "cpu", 8 * 2**30)["memory"] == 8 * 2**30
    assert "memory" not in executor._options(big, 2, "cuda", 16 * 2**30)
    assert "memory" not in executor._options(big, 2, "cpu", 0)
    assert "memory" not in executor._options(small, 2, "cpu", 16 * 2**30)


def test_ray_hands_a_whole_node_task_over_alone_when_nothing_else_runs_or_waits() -> None:
    """Whole-node (timing) tasks wait while one-core tasks run or are ready, then go one at a
    time, and nothing else is handed over while one runs."""
    from gradbench.execution.ray_executor import _submittable

    core, other = _task("core", partial(_rows, 1.0)), _task("other", partial(_rows, 1.0))
    whole = Task("whole", partial(_rows, 1.0), resources=Resources(whole_node=True))
    second = Task("second", partial(_rows, 1.0), resources=Resources(whole_node=True))
    assert _submittable([core, whole], []) == [core]
    assert _submittable([whole, second], [core]) == []
    assert _submittable([whole, second], []) == [whole]
    assert _submittable([other], [whole]) == []
    checkpoint = Task("checkpoint", partial(_rows, 1.0))
    assert _submittable([core, other, checkpoint], []) == [checkpoint, core, other]


def test_stored_seconds_come_from_cells_that_ran_not_skipped_or_failed_ones(tmp_path: Path) -> None:
    """A skipped cell's row took seconds to write, not to measure: a rerun estimated from it
    would start a cell estimated over the limit (the paper's 14-hour cells, skipped in 4.5 s)."""
    store = ResultStore(tmp_path)
    provenance = Provenance.collect(CPU, "test")
    key = ("variance", "toy", "x", -1)
    skipped = {"param_group": "all", "metric": "estimated_seconds", "value": 5e4,
               "status": STATUS_SKIPPED}
    store.save(_cell("x"), [skipped], provenance, seconds=4.5)
    failed = {"metric": "failed", "status": STATUS_FAILED, "error": "e"}
    store.save(Cell("variance", "toy", "x", {"seed": 1}), [failed], provenance, seconds=2.0)
    assert key not in stored_seconds(store)
    ran = {"param_group": "all", "metric": "m", "value": 1.0}
    store.save(Cell("variance", "toy", "x", {"seed": 2}), [ran], provenance, seconds=300.0)
    assert stored_seconds(store)[key] == 300.0
