"""Tests of training and the ELBO along training: improvement, rows, resume, determinism, CLI.

Everything runs on scikit-learn's 8x8 digits with small networks, on one CPU thread (tiny
networks gain nothing from more, and lose much when the cores are shared).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from gradbench import cli
from gradbench.data import DataConfig, Dataset, load_dataset
from gradbench.experiment import Setting
from gradbench.measure import training
from gradbench.measure.training import (
    EvalConfig,
    TrainConfig,
    checkpoint_path,
    train_model,
    training_cell,
    training_rows,
)
from gradbench.profiles import setting_default
from gradbench.results import COLUMNS, RESUMED_SECONDS, Cell, Provenance, stamp
from gradbench.models import MODELS

CPU = torch.device("cpu")
SMALL = {
    "gaussian-vae": {"hidden_sizes": "32", "latent_dim": "4"},
    "categorical-vae": {"hidden_sizes": "32", "n_vars": "4", "n_classes": "3"},
    "bayes-mlp": {"hidden_sizes": "32"},
}
MODEL_ARGS = {
    name: [f"--model-arg={k}={v}" for k, v in opts.items()] for name, opts in SMALL.items()
}
QUICK = TrainConfig(epochs=3, batch_size=100, learning_rate=3e-3)
EVAL = EvalConfig(samples=1, iw_samples=10, train_subset=500)
Z = 4.0
"""Standard errors an improvement must exceed (a spurious pass or failure has odds ~1e-4)."""
TIMING_METRICS = {"wall_clock_s"}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DataConfig(dataset="digits"), CPU)


def _setting(model: str, seed: int = 0) -> Setting:
    return Setting(model=model, model_options=SMALL[model], seed=seed)


def _find(rows: list[dict[str, Any]], epoch: int, split: str, metric: str) -> dict[str, Any]:
    found = [
        r
        for r in rows
        if r["epoch"] == epoch and r["param_group"] == split and r["metric"] == metric
    ]
    assert len(found) == 1, f"expected one {metric}[{split}] row at epoch {epoch}, got {len(found)}"
    return found[0]


def _se(row: dict[str, Any]) -> float:
    return (row["ci_high"] - row["value"]) / training.Z_95


def _without_timings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without wall-clock ones or the seconds of earlier processes, NaN read as None
    (NaN != NaN would fail equal rows)."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()
         if k != RESUMED_SECONDS}
        for r in rows
        if r["metric"] not in TIMING_METRICS
    ]


@pytest.mark.parametrize(
    "model, estimator",
    [
        ("gaussian-vae", "lr"),
        ("gaussian-vae", "lr-baseline"),
        ("gaussian-vae", "reparam"),
        ("categorical-vae", "lr"),
        ("categorical-vae", "lr-baseline"),
        ("categorical-vae", "gumbel-softmax"),
        ("categorical-vae", "st-gumbel"),
        ("categorical-vae", "target-prop"),
    ],
)
def test_training_raises_the_elbo(digits: Dataset, model: str, estimator: str) -> None:
    rows = training_rows(_setting(model), estimator, digits, CPU, QUICK, EVAL)
    for split in ("train", "test"):
        before = _find(rows, 0, split, "elbo")
        after = _find(rows, QUICK.epochs, split, "elbo")
        margin = Z * math.hypot(_se(before), _se(after))
        assert after["value"] - before["value"] > margin, (split, before["value"], after["value"])


@pytest.mark.parametrize("estimator", ["local-reparam", "reparam"])
def test_training_lowers_the_error_rate_of_bayes_mlp(digits: Dataset, estimator: str) -> None:
    rows = training_rows(_setting("bayes-mlp"), estimator, digits, CPU, QUICK, EVAL)
    before = _find(rows, 0, "test", "error_rate")
    after = _find(rows, QUICK.epochs, "test", "error_rate")
    assert before["value"] - after["value"] > Z * math.hypot(_se(before), _se(after))
    assert (
        _find(rows, QUICK.epochs, "test", "elbo")["value"] > _find(rows, 0, "test", "elbo")["value"]
    )


def test_rows_have_every_metric_split_and_epoch(digits: Dataset) -> None:
    evaluation = EvalConfig(iw_samples=10, iw_every=2, train_subset=300)
    config = TrainConfig(epochs=3, learning_rate=3e-3)
    rows = training_rows(
        _setting("categorical-vae"), "gumbel-softmax", digits, CPU, config, evaluation
    )
    for epoch in range(config.epochs + 1):
        for split in ("train", "valid", "test"):
            for metric in ("elbo", "reconstruction_ll"):
                row = _find(rows, epoch, split, metric)
                assert row["ci_low"] < row["value"] < row["ci_high"]
                assert row["batch_size"] == config.batch_size and row["status"] == "ok"
        assert _find(rows, epoch, "train", "elbo")["n"] == 300
        assert _find(rows, epoch, "test", "elbo")["n"] == len(digits.test)
    iw_epochs = sorted(r["epoch"] for r in rows if r["metric"] == "iw_bound")
    assert iw_epochs == [0, 2, 3]
    assert {r["param_group"] for r in rows if r["metric"] == "iw_bound"} == {"test"}
    losses = [r["epoch"] for r in rows if r["metric"] == "train_loss"]
    assert losses == [1, 2, 3]
    clock = [r["value"] for r in rows if r["metric"] == "wall_clock_s"]
    assert clock[0] == 0.0 and all(b > a for a, b in itertools.pairwise(clock))
    for epoch in range(config.epochs + 1):
        elbo = _find(rows, epoch, "test", "elbo")["value"]
        assert _find(rows, epoch, "test", "reconstruction_ll")["value"] >= elbo  # the KL is ≥ 0


def test_bayes_mlp_rows_name_the_error_rate(digits: Dataset) -> None:
    config = TrainConfig(epochs=1, learning_rate=3e-3)
    rows = training_rows(_setting("bayes-mlp"), "local-reparam", digits, CPU, config, EVAL)
    metrics = {r["metric"] for r in rows}
    assert {"elbo", "error_rate", "nll", "train_loss", "wall_clock_s"} == metrics
    assert all(0.0 <= r["value"] <= 1.0 for r in rows if r["metric"] == "error_rate")


def test_same_seed_gives_identical_rows_and_another_seed_does_not(digits: Dataset) -> None:
    def rows(seed: int) -> list[dict[str, Any]]:
        found = training_rows(
            _setting("gaussian-vae", seed), "lr-baseline", digits, CPU, QUICK, EVAL
        )
        return _without_timings(found)

    first = rows(0)
    assert first == rows(0)
    assert first != rows(1)


def test_evaluation_does_not_change_the_training_run(digits: Dataset) -> None:
    def losses(evaluation: EvalConfig) -> list[float]:
        found = training_rows(
            _setting("categorical-vae"), "st-gumbel", digits, CPU, QUICK, evaluation
        )
        return [r["value"] for r in found if r["metric"] == "train_loss"]

    assert losses(EVAL) == losses(EvalConfig(samples=3, iw_samples=7, iw_every=1))


def test_interrupted_run_resumes_from_its_checkpoint(
    digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting = _setting("categorical-vae")
    expected = training_rows(setting, "lr-baseline", digits, CPU, QUICK, EVAL)
    checkpoint = tmp_path / "run.pt"
    real_rows, real_epoch = training.epoch_rows, training.continue_epoch
    epochs_trained = []

    def interrupting(run: training.TrainingRun, *args: Any) -> list[dict[str, Any]]:
        if run.epoch == 2:
            raise KeyboardInterrupt
        return real_rows(run, *args)

    def counting(*args: Any, **kwargs: Any) -> float:
        epochs_trained.append(1)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "epoch_rows", interrupting)
    monkeypatch.setattr(training, "continue_epoch", counting)
    with pytest.raises(KeyboardInterrupt):
        training_rows(setting, "lr-baseline", digits, CPU, QUICK, EVAL, checkpoint)
    assert checkpoint.is_file() and len(epochs_trained) == 2
    monkeypatch.setattr(training, "epoch_rows", real_rows)
    spent = torch.load(checkpoint, weights_only=True)[RESUMED_SECONDS]
    resumed = training_rows(setting, "lr-baseline", digits, CPU, QUICK, EVAL, checkpoint)
    assert len(epochs_trained) == 2 + (QUICK.epochs - 1)  # epoch 2 again, then epoch 3
    assert _without_timings(resumed) == _without_timings(expected)
    assert {r[RESUMED_SECONDS] for r in expected} == {0.0}
    assert spent > 0 and {r[RESUMED_SECONDS] for r in resumed} == {spent}
    cell = Cell("train", "categorical-vae", "lr-baseline", {"seed": 0})
    stored = stamp(resumed, cell, Provenance.collect(CPU, "test"), seconds=2.5)
    assert list(stored["cell_seconds"]) == pytest.approx([2.5 + spent] * len(stored)), (
        "the cell's seconds are every process's")


# --- a long cell outlives its process -----------------------------------------------------------

ARM_SMALL = {"latent_dim": "8", "prior": "learned", "signal": "sampled-kl"}
"""The Bernoulli VAE as ARM's and DisARM's codes train it (learned prior by SGD, f with the
sampled KL), small: resuming must restore Adam and the prior's SGD alike."""
RESUME_CONFIG = TrainConfig(epochs=3, batch_size=50, learning_rate=3e-3)
RESUME_EVAL = EvalConfig(samples=1, iw_samples=5, train_subset=200)
STATEFUL = ["lr-baseline[baseline=learned]", "rebar", "relax"]
"""Estimators with state of their own: NVIL's baseline network and its Adam, REBAR's η and λ
and their tuner, RELAX's surrogate network ψ, built at the first step, in that tuner too."""


@pytest.fixture(scope="module")
def dynamic_digits() -> Dataset:
    """Dynamic binarization: the data generator draws inside every minibatch too."""
    return load_dataset(DataConfig(dataset="digits", binarization="dynamic"), CPU)


def _recorded_run(
    dataset: Dataset, estimator: str, checkpoint: Path | None = None
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Every epoch's rows and the final parameters of a Bernoulli-VAE run saved after every step."""
    setting = Setting("bernoulli-vae", ARM_SMALL, seed=3)

    def record(run: training.TrainingRun) -> None:
        run.log.extend(training.epoch_rows(run, dataset, RESUME_EVAL))

    run = train_model(setting, estimator, dataset, CPU, RESUME_CONFIG, record, checkpoint,
                      save_every_s=0.0)
    return run.log, {**run.model.state_dict(), **run.estimator.state_dict()}


def _assert_identical(
    got: tuple[list[dict[str, Any]], dict[str, torch.Tensor]],
    want: tuple[list[dict[str, Any]], dict[str, torch.Tensor]],
) -> None:
    assert _without_timings(got[0]) == _without_timings(want[0])
    assert got[1].keys() == want[1].keys()
    for name, tensor in want[1].items():
        assert torch.equal(got[1][name], tensor), name


@contextlib.contextmanager
def _interrupted_after(steps: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Training inside the block raises KeyboardInterrupt at its step ``steps + 1`` (expected);
    afterwards the real step is back."""
    real_step, taken = training.train_step, []

    def interrupted(*args: Any) -> torch.Tensor:
        if len(taken) == steps:
            raise KeyboardInterrupt
        taken.append(1)
        return real_step(*args)

    monkeypatch.setattr(training, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        yield
    monkeypatch.setattr(training, "train_step", real_step)


@pytest.mark.parametrize("estimator", STATEFUL)
def test_a_run_interrupted_mid_epoch_resumes_bit_for_bit(
    dynamic_digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, estimator: str
) -> None:
    """Interrupted after 37 steps (12 into the second epoch of 25), saved after every step:
    the resumed run's rows and final parameters equal an uninterrupted run's bit for bit."""
    expected = _recorded_run(dynamic_digits, estimator)
    checkpoint = tmp_path / "run.pt"
    with _interrupted_after(37, monkeypatch):
        _recorded_run(dynamic_digits, estimator, checkpoint)
    saved = torch.load(checkpoint, weights_only=True)
    assert (saved["epoch"], saved["position"]) == (1, 12)
    _assert_identical(_recorded_run(dynamic_digits, estimator, checkpoint), expected)


KILLED_RUN = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from tests import test_training as t
from gradbench.data import DataConfig, load_dataset
dataset = load_dataset(DataConfig(dataset="digits", binarization="dynamic"), t.CPU)
t._recorded_run(dataset, sys.argv[1], Path(sys.argv[2]))
"""


def test_a_cell_killed_by_a_signal_resumes_to_the_same_numbers(
    dynamic_digits: Dataset, tmp_path: Path
) -> None:
    """A training process killed (SIGKILL) once it has saved a state inside the second epoch;
    the run resumed here from what it left gives the uninterrupted run's rows and parameters."""
    estimator = "rebar"
    checkpoint = tmp_path / "run.pt"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, estimator, str(checkpoint)], cwd=Path.cwd(),
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if checkpoint.is_file() and torch.load(checkpoint, weights_only=True)["epoch"] >= 1:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    finally:
        if process.poll() is None:
            process.kill()
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] < RESUME_CONFIG.epochs
    expected = _recorded_run(dynamic_digits, estimator)
    _assert_identical(_recorded_run(dynamic_digits, estimator, checkpoint), expected)


BEST_EVAL = EvalConfig(samples=1, iw_samples=5, iw_every=1, train_subset=200,
                       best_valid_iw_samples=(5, 50))


def test_the_test_bound_is_taken_at_the_best_validation_epoch(
    dynamic_digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ARM's and DisARM's protocol: the validation bound (k = 5) at every checked epoch, the
    test bounds (k = 5, 50) at the parameters of the best one (epoch 1, made best by a shift of
    its validation bound), equal to evaluating a run stopped at that epoch; interrupted
    mid-epoch and resumed, the same rows bit for bit."""
    setting = Setting("bernoulli-vae", ARM_SMALL, seed=3)
    config = TrainConfig(epochs=4, batch_size=50, learning_rate=0.05)
    real_bound = training._iw_bound
    shift = {0: 0.0, 1: 30.0, 2: 0.0, 3: 0.0, 4: 0.0}  # epoch 1 made the best on validation

    def shifted(model: Any, dataset: Dataset, split: str, *args: Any) -> torch.Tensor:
        bound = real_bound(model, dataset, split, *args)
        epoch = len([r for r in rows_so_far if r == split])
        rows_so_far.append(split)
        return bound + shift[epoch] if split == "valid" else bound

    rows_so_far: list[str] = []
    monkeypatch.setattr(training, "_iw_bound", shifted)
    rows = training_rows(setting, "disarm", dynamic_digits, CPU, config, BEST_EVAL)
    valid = {r["epoch"]: r["value"] for r in rows if r["metric"] == "iw_bound_k5"}
    assert sorted(valid) == [0, 1, 2, 3, 4] and max(valid, key=valid.get) == 1
    assert valid[4] > valid[2] > valid[0]  # the unshifted bounds still improve with training
    assert _find(rows, 4, "valid", "best_valid_epoch")["value"] == 1
    rows_so_far.clear()
    stopped = training_rows(setting, "disarm", dynamic_digits, CPU, replace(config, epochs=1),
                            EvalConfig(samples=1, iw_samples=50, train_subset=200))
    at_best = _find(rows, 4, "test", "iw_bound_k50_at_best_valid")
    assert at_best["value"] == _find(stopped, 1, "test", "iw_bound")["value"]
    k5 = _find(rows, 4, "test", "iw_bound_k5_at_best_valid")
    assert at_best["value"] > k5["value"]  # more draws, a tighter bound
    checkpoint = tmp_path / "run.pt"
    rows_so_far.clear()
    with _interrupted_after(62, monkeypatch):
        training_rows(setting, "disarm", dynamic_digits, CPU, config, BEST_EVAL, checkpoint,
                      save_every_s=0.0)
    assert torch.load(checkpoint, weights_only=True)["best"]["epoch"] == 1
    rows_so_far[:] = ["valid", "valid"]  # epochs 0 and 1 were checked before the interruption
    resumed = training_rows(setting, "disarm", dynamic_digits, CPU, config, BEST_EVAL, checkpoint)
    assert _without_timings(resumed) == _without_timings(rows)


@pytest.mark.parametrize("model, estimator, evaluation", [
    ("bernoulli-vae", "lr", EvalConfig(samples=2, iw_samples=6, iw_every=2, train_subset=200,
                                       iw_subset=100, best_valid_iw_samples=(4, 9))),
    ("bernoulli-vae", "gumbel-softmax", EvalConfig(samples=1, iw_samples=3, train_subset=200)),
    ("gaussian-vae", "lr", EvalConfig(samples=1, iw_samples=5, train_subset=300)),
    ("bayes-mlp", "reparam", EvalConfig(samples=3, iw_samples=5, iw_every=1, train_subset=300)),
])
def test_a_cells_declared_evaluation_draws_are_the_ones_it_makes(
    digits: Dataset, model: str, estimator: str, evaluation: EvalConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The time estimate's count (``Work.evaluation_draws``) is every draw the cell's
    evaluation decodes: n (samples + iw_samples) a ``model.evaluate`` call, periodic bounds,
    the tracked validation bound and the test bounds at the best epoch included, no bound for
    a classifier, and one relaxed pass per evaluated example for Gumbel-softmax (a forward
    pass without gradients; training's passes have them)."""
    options = ARM_SMALL if model == "bernoulli-vae" else SMALL[model]
    setting = Setting(model, options, seed=0)
    config = TrainConfig(epochs=5, batch_size=100, learning_rate=1e-3)
    draws = 0
    cls = MODELS[model]
    evaluate, forward = cls.evaluate, cls.forward

    def counted(self: Any, x: torch.Tensor, y: torch.Tensor, samples: int, iw: int) -> Any:
        nonlocal draws
        draws += len(x) * (samples + iw)
        return evaluate(self, x, y, samples, iw)

    def passed(self: Any, x: torch.Tensor, *args: Any) -> Any:
        nonlocal draws
        draws += 0 if torch.is_grad_enabled() else len(x)
        return forward(self, x, *args)

    monkeypatch.setattr(cls, "evaluate", counted)
    monkeypatch.setattr(cls, "forward", passed)
    (task,) = training.training_tasks(setting, [estimator], digits, CPU, config, evaluation,
                                      "custom")
    training_rows(setting, estimator, digits, CPU, config, evaluation)
    assert draws > 0 and task.work.evaluation_draws == draws


def test_best_validation_enters_the_cell_hash_only_when_set(digits: Dataset) -> None:
    setting = _setting("gaussian-vae")
    plain = training_cell(setting, "lr", digits, CPU, QUICK, EVAL, "custom")
    assert "best_valid_iw_samples" not in plain.config["evaluation"]
    tracked = training_cell(setting, "lr", digits, CPU, QUICK, BEST_EVAL, "custom")
    assert tracked.config["evaluation"]["best_valid_iw_samples"] == (5, 50)
    assert tracked.config_hash != training_cell(
        setting, "lr", digits, CPU, QUICK, replace(BEST_EVAL, best_valid_iw_samples=()), "custom"
    ).config_hash


def test_on_epoch_sees_every_epoch_and_the_trained_model(digits: Dataset) -> None:
    seen = []

    def on_epoch(run: training.TrainingRun) -> None:
        seen.append((run.epoch, run.train_loss, int(run.estimator.steps)))

    config = TrainConfig(epochs=2, learning_rate=3e-3)
    run = train_model(_setting("gaussian-vae"), "reparam", digits, CPU, config, on_epoch)
    steps = len(digits.train) // config.batch_size
    assert [(e, s) for e, _, s in seen] == [(0, 0), (1, steps), (2, 2 * steps)]
    assert seen[0][1] is None and all(math.isfinite(loss) for _, loss, _ in seen[1:])
    assert run.epoch == 2 and not run.diverged


@pytest.mark.parametrize("how", ["loss", "parameters"])
def test_a_diverging_run_is_recorded_not_raised(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    real_epoch = training.continue_epoch
    calls = []

    def diverging(run: training.TrainingRun, *args: Any) -> float:
        calls.append(1)
        loss = real_epoch(run, *args)
        if len(calls) < 2:
            return loss
        if how == "parameters":
            with torch.no_grad():
                next(run.model.parameters()).fill_(math.inf)
            return loss
        return math.nan

    monkeypatch.setattr(training, "continue_epoch", diverging)
    rows = training_rows(_setting("gaussian-vae"), "lr", digits, CPU, QUICK, EVAL)
    assert len(calls) == 2 and max(r["epoch"] for r in rows) == 2
    assert {r["status"] for r in rows if r["epoch"] < 2} == {"ok"}
    last = [r for r in rows if r["epoch"] == 2]
    assert {r["status"] for r in last} == {"diverged"}
    at_start = {(r["param_group"], r["metric"]) for r in rows if r["epoch"] == 0}
    assert at_start <= {(r["param_group"], r["metric"]) for r in last}
    assert math.isnan(_find(rows, 2, "test", "elbo")["value"])


def test_cell_config_resolves_options_and_names_the_data(digits: Dataset) -> None:
    spelled = Setting("gaussian-vae", {"hidden_sizes": "32", "latent_dim": "4"}, {}, 0)
    typed = Setting(
        "gaussian-vae", {"hidden_sizes": (32,), "latent_dim": 4, "init_std": 0.01}, {}, 0
    )
    cells = [training_cell(s, "lr", digits, CPU, QUICK, EVAL, "custom") for s in (spelled, typed)]
    assert cells[0].config_hash == cells[1].config_hash
    config = cells[0].config
    assert config["dataset"] == "digits" and config["binarization"] == "threshold"
    assert config["n_train"] == len(digits.train) and config["seed"] == 0
    assert config["model_options"]["hidden_sizes"] == [32]
    assert config["estimator_options"] == {}
    for key in (
        "epochs",
        "batch_size",
        "learning_rate",
        "lr_decay",
        "evaluation",
        "device",
        "profile",
    ):
        assert key in config
    other = training_cell(spelled, "lr", digits, CPU, TrainConfig(epochs=4), EVAL, "custom")
    assert other.config_hash != cells[0].config_hash


def test_configs_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="learning rate"):
        TrainConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay=1.5)
    with pytest.raises(ValueError, match="iw_samples"):
        EvalConfig(iw_samples=0)


def test_evaluation_defaults_are_the_profiles_settings() -> None:
    """One default per setting: EvalConfig's fields default to the profile's eval_<field>."""
    evaluation = EvalConfig()
    profiled = [f.name for f in fields(EvalConfig) if f.name != "chunk_size"]
    assert {name: getattr(evaluation, name) for name in profiled} == {
        name: setting_default(f"eval_{name}") for name in profiled}
    assert evaluation.iw_samples == 1000


# --- the command ---------------------------------------------------------------------------------


def _train_args(results: Path, estimators: str, *extra: str) -> list[str]:
    return [
        "train",
        "--model=categorical-vae",
        f"--estimator={estimators}",
        *MODEL_ARGS["categorical-vae"],
        "--dataset=digits",
        "--epochs=2",
        "--lr=3e-3",
        "--iw-samples=5",
        "--eval-subset=300",
        f"--results={results}",
        "--quiet",
        *extra,
    ]


def _json_rows(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.items() if k not in ("created_at", "cell_seconds")}
        for r in rows
        if r["metric"] not in TIMING_METRICS
    ]


def test_train_command_prints_tidy_json_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _json_rows(capsys, _train_args(tmp_path, "gumbel-softmax", "--format=json"))
    assert rows and all(list(r)[: len(COLUMNS)] == COLUMNS for r in rows)
    assert {r["experiment"] for r in rows} == {"train"}
    assert {r["dataset"] for r in rows} == {"digits"}
    assert {r["status"] for r in rows} == {"ok"}
    assert sorted({r["epoch"] for r in rows}) == [0, 1, 2]
    assert len(list((tmp_path / "train").glob("*.csv"))) == 1
    assert not (tmp_path / "resume").exists()


def test_train_command_table_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(_train_args(tmp_path, "st-gumbel")) == 0
    table = capsys.readouterr().out
    assert "elbo[test]" in table and "st-gumbel" in table
    assert cli.main(_train_args(tmp_path, "st-gumbel", "--format=csv")) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split(",")[: len(COLUMNS)] == COLUMNS


def test_interrupted_command_resumes_without_recomputing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    estimators = "gumbel-softmax,st-gumbel,target-prop"
    expected = _json_rows(capsys, _train_args(tmp_path / "whole", estimators, "--format=json"))
    computed: list[str] = []

    def counting(setting: Setting, name: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        computed.append(name)
        if interrupt and len(computed) == 2:
            raise KeyboardInterrupt
        return training_rows(setting, name, *args, **kwargs)

    monkeypatch.setattr(training, "training_rows", counting)
    results = tmp_path / "interrupted"
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        cli.main(_train_args(results, estimators, "--format=json"))
    (first,) = list((results / "train").glob("*.csv"))
    mtime = first.stat().st_mtime_ns
    interrupt, computed = False, []
    resumed = _json_rows(capsys, _train_args(results, estimators, "--format=json"))
    assert computed == ["st-gumbel", "target-prop"]
    assert first.stat().st_mtime_ns == mtime
    assert _comparable(resumed) == _comparable(expected)
    computed.clear()
    _json_rows(capsys, _train_args(results, estimators, "--format=json", "--force"))
    assert computed == estimators.split(",")


def test_diverged_cell_does_not_stop_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_epoch = training.continue_epoch

    def diverging(run: training.TrainingRun, *args: Any) -> float:
        loss = real_epoch(run, *args)
        return math.inf if run.estimator.name == "gumbel-softmax" else loss

    monkeypatch.setattr(training, "continue_epoch", diverging)
    rows = _json_rows(capsys, _train_args(tmp_path, "gumbel-softmax,st-gumbel", "--format=json"))
    status = {(r["estimator"], r["epoch"]): r["status"] for r in rows}
    assert status[("gumbel-softmax", 1)] == "diverged"
    assert ("gumbel-softmax", 2) not in status
    assert status[("st-gumbel", 2)] == "ok"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--model=no-such-model", "--estimator=lr"],
            "valid: " + ", ".join(MODELS),
        ),
        (["--model=categorical-vae", "--estimator=reparam"], "does not apply to model"),
        (["--model=gaussian-vae", "--estimator=nope"], "unknown estimator 'nope'; valid:"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = cli.main(["train", *argv, "--dataset=digits", f"--results={tmp_path}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_checkpoint_path_is_per_cell(digits: Dataset, tmp_path: Path) -> None:
    one = training_cell(_setting("gaussian-vae"), "lr", digits, CPU, QUICK, EVAL, "custom")
    two = training_cell(_setting("gaussian-vae"), "reparam", digits, CPU, QUICK, EVAL, "custom")
    assert checkpoint_path(tmp_path, one) != checkpoint_path(tmp_path, two)
    assert checkpoint_path(tmp_path, one).is_relative_to(tmp_path)


def test_the_arm_profile_is_the_released_codes_protocol() -> None:
    """ARM's b_mnist_linear_slim.py and DisARM's launcher: static binarized MNIST, batch 50,
    Adam at a constant 1e-4, 1 M steps, learned prior and the sampled-KL signal, test bounds
    k = 100 and 1000 at the best validation epoch."""
    from gradbench.profiles import get_profile

    arm = get_profile("arm")
    assert (arm.dataset, arm.models) == ("binarized-mnist", ("bernoulli-vae",))
    assert (arm.train_batch_size, arm.train_learning_rate, arm.train_lr_decay) == (50, 1e-4, 1.0)
    assert arm.train_epochs * 50_000 // arm.train_batch_size == 1_000_000
    assert arm.model_options["bernoulli-vae"] == {"prior": "learned", "signal": "sampled-kl"}
    assert arm.eval_best_valid_iw_samples == (100, 1000) and arm.eval_iw_every > 0
    assert {"arm", "disarm", "rloo", "rebar", "lr-baseline[baseline=learned]"} <= set(arm.estimators)
