"""Tests of the wall-clock measurement: its rows, extrapolation, repeats, speed-ups, the command.

No assertion is about how fast anything is; only about what is recorded and how figures relate.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from gradbench import cli
from gradbench.data import DataConfig, Dataset, load_dataset
from gradbench.experiment import Setting, build_model
from gradbench.measure import timing
from gradbench.measure.timing import (
    TimingConfig,
    is_contended,
    machine_busy_seconds,
    measure_load,
    speedup_rows,
    steps_per_epoch,
    timing_cell,
    timing_rows,
)
from gradbench.results import COLUMNS
from gradbench.models import MODELS

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "gaussian-vae": {"hidden_sizes": "32", "latent_dim": "4"},
    "categorical-vae": {"hidden_sizes": "32", "n_vars": "4", "n_classes": "3"},
    "bayes-mlp": {"hidden_sizes": "32"},
}
METRICS = ["seconds_per_epoch", "seconds_per_step", "seconds_per_gradient", "examples_per_second"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DataConfig(dataset="digits"), CPU)


def _by_metric(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in rows}


@pytest.mark.parametrize(
    "model, estimator",
    [
        ("bayes-mlp", "reparam-per-example"),
        ("gaussian-vae", "lr"),
        ("categorical-vae", "target-prop"),
    ],
)
def test_partial_epoch_is_extrapolated_and_marked(
    digits: Dataset, model: str, estimator: str
) -> None:
    config = TimingConfig(batch_size=100, steps=3, repeats=3, warmup_steps=1)
    rows = _by_metric(timing_rows(Setting(model, SMALL[model]), estimator, digits, CPU, config))
    floor = ["deterministic_seconds_per_step", timing.STEP_RATIO] if model == "bayes-mlp" else []
    assert list(rows) == METRICS + floor
    epoch = steps_per_epoch(digits, 100)
    assert epoch == len(digits.train) // 100 > 3
    for metric, row in rows.items():
        assert math.isfinite(row["value"]) and row["value"] > 0, metric
        assert 0 < row["ci_low"] <= row["value"] <= row["ci_high"], metric
        assert row["n"] == 3 and row["steps_timed"] == 3 and row["status"] == "ok"
        assert row["batch_size"] == 100 and row["epoch"] is None
        assert row["extrapolated"] is (metric == "seconds_per_epoch")
    per_epoch, per_step = rows["seconds_per_epoch"], rows["seconds_per_step"]
    for key in ("value", "ci_low", "ci_high"):
        assert per_epoch[key] == pytest.approx(per_step[key] * epoch, rel=1e-12)
    # with an odd number of repeats the median rate is the rate of the median step
    examples = rows["examples_per_second"]["value"]
    assert examples == pytest.approx(100 / per_step["value"], rel=1e-12)


def test_step_is_timed_against_the_deterministic_network_in_the_same_repeats(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bayes-mlp's rows add the deterministic network's step (plain layers, fused Adam) and the
    estimator's step over it, repeat by repeat: with the reference's clock fixed at 1 ms a step,
    the ratio is the estimator's seconds per step over 1 ms."""
    calls = []

    def one_millisecond_a_step(reference, optimizer, batches, device) -> float:
        calls.append(len(batches))
        assert isinstance(reference.network, torch.nn.Sequential)
        assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"]
        return 1e-3 * len(batches)

    monkeypatch.setattr(timing, "time_reference_steps", one_millisecond_a_step)
    config = TimingConfig(batch_size=100, steps=3, repeats=3, warmup_steps=1)
    rows = _by_metric(timing_rows(Setting("bayes-mlp", SMALL["bayes-mlp"]), "local-reparam",
                                  digits, CPU, config))
    assert calls == [1, 3, 3, 3]  # the warm-up, then once in every repeat
    assert rows["deterministic_seconds_per_step"]["value"] == pytest.approx(1e-3)
    ratio, step = rows[timing.STEP_RATIO], rows["seconds_per_step"]
    for key in ("value", "ci_low", "ci_high"):
        assert ratio[key] == pytest.approx(step[key] / 1e-3, rel=1e-9)


def test_full_epoch_is_not_extrapolated(digits: Dataset) -> None:
    small = load_dataset(DataConfig(dataset="digits", subset=250), CPU)
    setting = Setting("gaussian-vae", SMALL["gaussian-vae"])
    for steps in (None, 50):
        config = TimingConfig(batch_size=100, steps=steps, repeats=2, warmup_steps=0)
        rows = _by_metric(timing_rows(setting, "reparam", small, CPU, config))
        assert rows["seconds_per_epoch"]["extrapolated"] is False
        assert rows["seconds_per_epoch"]["steps_timed"] == 2  # 250 // 100, extra steps dropped
        assert rows["seconds_per_epoch"]["n"] == 2


def test_speedup_rows_pair_every_estimator_with_every_other() -> None:
    def epoch_row(value: float, low: float, high: float, extrapolated: bool) -> dict[str, Any]:
        return {
            "value": value,
            "ci_low": low,
            "ci_high": high,
            "n": 3,
            "status": "ok",
            "extrapolated": extrapolated,
            "steps_timed": 5,
            "batch_size": 100,
        }

    rows = speedup_rows(
        {
            "fast": epoch_row(2.0, 1.0, 4.0, False),
            "slow": epoch_row(10.0, 8.0, 16.0, True),
            "mid": epoch_row(4.0, 4.0, 4.0, False),
        }
    )
    fast = {r["param_group"]: r for r in rows["fast"]}
    assert set(fast) == {"slow", "mid"}
    assert (fast["slow"]["value"], fast["slow"]["ci_low"], fast["slow"]["ci_high"]) == (
        5.0,
        2.0,
        16.0,
    )
    assert fast["slow"]["extrapolated"] and not fast["mid"]["extrapolated"]
    slow = {r["param_group"]: r for r in rows["slow"]}
    assert slow["fast"]["value"] * fast["slow"]["value"] == pytest.approx(1.0)
    assert {r["metric"] for rs in rows.values() for r in rs} == {"speedup"}


def test_timing_cell_records_what_defines_the_figures(digits: Dataset) -> None:
    setting = Setting("bayes-mlp", SMALL["bayes-mlp"])
    cell = timing_cell(setting, "local-reparam", digits, CPU, TimingConfig(steps=4), "custom")
    config = cell.config
    assert config["steps_timed"] == 4 and config["batch_size"] == 100 and config["repeats"] == 5
    assert config["device"] == "cpu" and config["device_name"] and config["dataset"] == "digits"
    assert config["model_options"]["hidden_sizes"] == [32]
    other = timing_cell(setting, "local-reparam", digits, CPU, TimingConfig(steps=5), "custom")
    assert other.config_hash != cell.config_hash


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="repeats"):
        TimingConfig(repeats=0)
    with pytest.raises(ValueError, match="steps"):
        TimingConfig(steps=0)


# --- contention: other processes on the cores torch uses -----------------------------------------

BUSY_LOOP = "import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass"
LOAD_COLUMNS = {"torch_threads", "cpu_count", "cpu_load_other", "contended"}


@contextmanager
def _busy_process(seconds: float) -> Iterator[subprocess.Popen[bytes]]:
    """A child process spinning on one core for at most ``seconds``."""
    child = subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=seconds)])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def _inject_load(monkeypatch: pytest.MonkeyPatch, load: float | None, cpus: int = 2) -> None:
    """Make timing_rows read ``load`` other busy cores on a machine of ``cpus`` cores."""

    @contextmanager
    def fixed_load() -> Iterator[timing.LoadReading]:
        yield timing.LoadReading(cpu_load_other=load)

    monkeypatch.setattr(timing, "measure_load", fixed_load)
    monkeypatch.setattr(timing, "usable_cpus", lambda: list(range(cpus)))


def _quick_rows(digits: Dataset) -> list[dict[str, Any]]:
    config = TimingConfig(batch_size=100, steps=2, repeats=1, warmup_steps=0)
    return timing_rows(Setting("bayes-mlp", SMALL["bayes-mlp"]), "no-noise", digits, CPU, config)


def test_load_probe_counts_another_busy_process_and_not_this_one() -> None:
    if machine_busy_seconds() is None:
        pytest.skip("/proc/stat is not readable here")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with measure_load() as reading:
        with _busy_process(1.0) as child:
            child.wait(timeout=30)
        deadline = time.perf_counter() + 0.3
        while time.perf_counter() < deadline:  # this process's own busy work is not "other"
            pass
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert reading.cpu_load_other is not None and child_cpu > 0.1
    # the child's CPU seconds are among the other work seen (less two clock ticks per core of
    # rounding, and 20% for /proc/stat's per-tick sampling against rusage's exact accounting);
    # the machine may be busier still
    ticks = 2 * len(timing.usable_cpus()) / os.sysconf("SC_CLK_TCK")
    assert reading.cpu_load_other * wall >= 0.8 * (child_cpu - ticks)


def test_contended_measurement_is_flagged_and_warns(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One torch thread on two cores leaves one free: another 1.8 busy cores do not fit."""
    _inject_load(monkeypatch, 1.8)
    with _busy_process(5.0), pytest.warns(RuntimeWarning, match=r"1\.8 of 2 cores busy.*1 thread"):
        rows = _quick_rows(digits)
    for row in rows:
        assert LOAD_COLUMNS <= set(row), row["metric"]
        assert row["torch_threads"] == 1 == torch.get_num_threads() and row["cpu_count"] == 2
        assert row["cpu_load_other"] == 1.8 and row["contended"] is True
    epoch = {r["metric"]: r for r in rows}["seconds_per_epoch"]
    calm = dict(epoch, contended=False)
    pairs = speedup_rows({"a": epoch, "b": calm, "c": dict(calm)})
    assert all(r["contended"] for r in pairs["a"])
    assert {r["param_group"]: r["contended"] for r in pairs["b"]} == {"a": True, "c": False}


@pytest.mark.parametrize("load", [1.2, None], ids=["one-busy-core-fits", "load-unknown"])
def test_uncontended_measurement_is_not_flagged(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch, load: float | None
) -> None:
    _inject_load(monkeypatch, load)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rows = _quick_rows(digits)
    assert all(r["contended"] is False and r["cpu_load_other"] == load for r in rows)
    assert all(r["torch_threads"] == 1 for r in rows)


def test_contention_rule_leaves_half_a_core_of_tolerance() -> None:
    assert timing.CONTENTION_TOLERANCE == 0.5
    assert not is_contended(0.4, torch_threads=2, cpu_count=2)
    assert is_contended(0.6, torch_threads=2, cpu_count=2)
    assert not is_contended(1.4, torch_threads=1, cpu_count=2)
    assert is_contended(1.6, torch_threads=1, cpu_count=2)
    assert is_contended(0.6, torch_threads=4, cpu_count=2)  # oversubscribed: nothing is free
    assert not is_contended(None, torch_threads=2, cpu_count=2)


def test_busy_seconds_read_the_usable_cpus_of_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  300 10 60 1000 50 5 5 2 7 0\n"
        "cpu0 100 0 20 500 25 2 3 1 7 0\n"
        "cpu1 200 10 40 500 25 3 2 1 0 0\n"
        "intr 12345\n"
    )
    ticks = os.sysconf("SC_CLK_TCK")
    # user + nice + system + irq + softirq + steal; idle and iowait are not busy
    assert machine_busy_seconds([0], str(stat)) == pytest.approx(126 / ticks)
    assert machine_busy_seconds([0, 1], str(stat)) == pytest.approx((126 + 256) / ticks)
    assert machine_busy_seconds([5], str(stat)) == pytest.approx(382 / ticks)  # aggregate line
    assert machine_busy_seconds([0], str(tmp_path / "absent")) is None


# --- the command ---------------------------------------------------------------------------------


def _timing_args(results: Path, estimators: str, *extra: str) -> list[str]:
    return [
        "timing",
        "--model=bayes-mlp",
        f"--estimators={estimators}",
        "--model-arg=hidden_sizes=32",
        "--dataset=digits",
        "--steps=2",
        "--repeats=3",
        "--warmup-steps=1",
        f"--results={results}",
        "--quiet",
        *extra,
    ]


def test_timing_command_json_via_subprocess(tmp_path: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    argv = _timing_args(tmp_path, "local-reparam,reparam-per-example", "--format=json")
    done = subprocess.run(
        [sys.executable, "-m", "gradbench", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert all(list(r)[: len(COLUMNS)] == COLUMNS for r in rows)
    metrics = {(r["estimator"], r["metric"], r["param_group"]) for r in rows}
    for estimator, other in (
        ("local-reparam", "reparam-per-example"),
        ("reparam-per-example", "local-reparam"),
    ):
        for metric in METRICS:
            assert (estimator, metric, None) in metrics
        assert (estimator, "speedup", other) in metrics
    speedups = [r["value"] for r in rows if r["metric"] == "speedup"]
    assert speedups[0] * speedups[1] == pytest.approx(1.0)
    epoch = [r for r in rows if r["metric"] == "seconds_per_epoch"]
    assert all(r["extrapolated"] and r["steps_timed"] == 2 and r["n"] == 3 for r in epoch)
    assert {r["experiment"] for r in rows} == {"timing"}


def test_timing_command_resumes_finished_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[str] = []
    real = timing.timing_rows

    def counting(setting: Setting, name: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        computed.append(name)
        if interrupt and len(computed) == 2:
            raise KeyboardInterrupt
        return real(setting, name, *args, **kwargs)

    monkeypatch.setattr(timing, "timing_rows", counting)
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        cli.main(_timing_args(tmp_path, "local-reparam,reparam"))
    (first,) = list((tmp_path / "timing").glob("*.csv"))
    mtime = first.stat().st_mtime_ns
    interrupt, computed = False, []
    capsys.readouterr()
    assert cli.main(_timing_args(tmp_path, "local-reparam,reparam")) == 0
    table = capsys.readouterr().out
    assert computed == ["reparam"] and first.stat().st_mtime_ns == mtime
    assert "seconds_per_gradient" in table and "speed-up" in table


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model=nope"], "unknown model 'nope'; valid: " + ", ".join(MODELS)),
        (["--model=gaussian-vae", "--estimators=gumbel-softmax"], "does not apply to model"),
        (["--model=gaussian-vae", "--format=xml"], "unknown format 'xml'; valid: table, json, csv"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = cli.main(["timing", *argv, "--dataset=digits", f"--results={tmp_path}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_the_bernoulli_vae_is_timed_against_its_deterministic_network_and_the_table_shows_it(
    digits: Dataset,
) -> None:
    """A model without a paper's timing (no model named in the report code): its rows carry
    the step over the deterministic step, and the shared table shows that ratio per estimator,
    beside the estimator's evaluations when the catalogue stored them."""
    from gradbench.report.timing_tables import shared_timing_table
    from gradbench.results import Provenance, stamp

    setting = Setting("bernoulli-vae", {"latent_dim": "8"})
    model = build_model(setting, digits, CPU)
    reference = model.deterministic_network()
    sizes = [tuple(m.weight.shape) for m in reference.network if isinstance(m, torch.nn.Linear)]
    assert sizes == [tuple(layer.weight.shape) for layer in [*model.encoder, *model.decoder]]
    x = digits.binarized("train")[:5]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        reference.network(x), x, reduction="none").sum(-1)
    torch.testing.assert_close(reference.loss(reference.network, x, None), expected)
    config = TimingConfig(batch_size=50, steps=3, repeats=2, warmup_steps=1)
    provenance = Provenance.collect(CPU, "custom")
    frames, ratios = [], {}
    for name in ("arm", "rloo"):
        rows = _by_metric(timing_rows(setting, name, digits, CPU, config))
        assert "deterministic_seconds_per_step" in rows
        ratios[name] = rows[timing.STEP_RATIO]["value"]
        cell = timing.timing_cell(setting, name, digits, CPU, config, "custom")
        frames.append(stamp(list(rows.values()), cell, provenance))
    table = shared_timing_table(pd.concat(frames, ignore_index=True))
    headers = [column.label for column in table.columns]
    ratio_at = headers.index("step / deterministic step")
    assert headers[ratio_at + 1] == "evaluations per gradient"
    shown = {row[1]: row[ratio_at].values[0] for row in table.rows}
    assert shown == pytest.approx(ratios, rel=1e-12)


def test_a_model_timed_at_two_minibatches_shows_both_and_ranks_within_each() -> None:
    """The arm profile moved its timed minibatch from 100 to 50: the shared table keeps both
    sets of rows, each ranked among its own minibatch (a step at 50 is not faster than one at
    100 for being smaller)."""
    from gradbench.experiments.metrics import SECONDS_PER_EPOCH
    from gradbench.report.rows import prepare_rows
    from gradbench.report.timing_tables import shared_timing_table
    from gradbench.results import Cell, Provenance, stamp

    provenance = Provenance("cpu", "Test CPU", "2.0", 1, "abc", "abc", "arm",
                            "2025-01-02T03:04:05+00:00")
    seconds = {(50, "arm"): 1.0, (50, "rloo"): 2.0, (100, "arm"): 4.0, (100, "rloo"): 3.0}
    frames = [stamp([{"param_group": "all", "batch_size": size, "metric": SECONDS_PER_EPOCH,
                      "value": value}],
                    Cell("timing", "bernoulli-vae", name, {"batch_size": size, "seed": 0}),
                    provenance)
              for (size, name), value in seconds.items()]
    table = shared_timing_table(prepare_rows(pd.concat(frames, ignore_index=True)))
    assert table is not None
    headers = [column.label for column in table.columns]
    found = {(int(row[2]), row[1]): dict(zip(headers, row)) for row in table.rows}
    assert set(found) == set(seconds)
    ranks = {key: found[key]["avg. rank"].per_seed[0] for key in found}
    assert ranks == {(50, "arm"): 1.0, (50, "rloo"): 2.0, (100, "arm"): 2.0, (100, "rloo"): 1.0}
