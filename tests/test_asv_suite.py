"""The asv suite cannot rot: asv validates it, and every benchmark runs once at the fast profile.

``asv check --python=same`` imports the suite in the current environment and checks each
benchmark's signature and parameters. Then each benchmark class's setup and every
``time_``/``peakmem_``/``track_`` method run once, in-process, for one parameter combination per
model (its reference estimator's first benchmarked label), and an invalid combination must raise
NotImplementedError (the signal asv skips on). The estimator parameter holds labels: every
variant of the paper profile (``gumbel-softmax[temperature=0.1]``) is its own case.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import math
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import benchmarks
from benchmarks import common
from gradbench.estimators import base_name
from gradbench.models import MODELS
from gradbench.profiles import PAPER

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("time_", "peakmem_", "track_")


def _methods(cls: type) -> list[str]:
    return [name for name in dir(cls) if name.startswith(PREFIXES)]


def _benchmark_classes() -> list[type]:
    """Every class with a benchmark method in the suite's ``bench_*`` modules, as asv finds them."""
    found = []
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"benchmarks.{info.name}")
            found += [
                obj
                for _, obj in inspect.getmembers(module, inspect.isclass)
                if obj.__module__ == module.__name__ and _methods(obj)
            ]
    return found


CLASSES = _benchmark_classes()
PARAMETERISED = [c for c in CLASSES
                 if tuple(getattr(c, "param_names", ())[:2]) == ("model", "estimator")]
"""The model × estimator grid classes; a protocol class (one model, the ``arm`` profile's
estimators) is parameterised by estimator alone."""
PROTOCOL = [c for c in CLASSES if tuple(getattr(c, "param_names", ())) == ("estimator",)]


@pytest.fixture(autouse=True)
def fast_profile(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fast profile on the CPU, one thread: nothing here is timed, and tiny tensors gain
    nothing from threads but lose much to spinning ones on a loaded CPU."""
    monkeypatch.setenv(common.PROFILE_ENV, "fast")
    monkeypatch.setenv(common.DEVICE_ENV, "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _reference_label(model: str) -> str:
    """The first benchmarked label of the model's reference estimator (a variant if need be)."""
    reference = MODELS[model].reference_estimator
    labels = common.estimator_labels(model)
    return next((label for label in labels if base_name(label) == reference), labels[0])


def _representative(cls: type) -> list[tuple[str, ...]]:
    """Per model: (model, its reference label, the first value of any further param)."""
    params = getattr(cls, "params", None)
    if params is None:
        return [()]
    if cls in PROTOCOL:
        return [(params[0][0],)]
    rest = tuple(values[0] for values in params[2:])
    return [(model, _reference_label(model), *rest) for model in common.MODEL_NAMES]


@pytest.mark.skipif(importlib.util.find_spec("asv") is None, reason="asv is not installed")
def test_asv_check_passes() -> None:
    env = {**os.environ, common.PROFILE_ENV: "fast", common.DEVICE_ENV: "cpu"}
    command = [sys.executable, "-m", "asv", "check", "--python=same"]
    result = subprocess.run(
        [*command, "--config", str(ROOT / "asv.conf.json")],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No problems found" in result.stdout, result.stdout


def test_suite_is_found() -> None:
    names = {cls.__name__ for cls in CLASSES}
    expected = {"TrainingStep", "TrainingEpoch", "DeterministicAutoencoder", "GradientVariance",
                "VarianceDraws"}
    assert expected <= names


def test_cases_are_the_paper_profiles_labels() -> None:
    for model in MODELS:
        assert common.estimator_labels(model) == PAPER.estimator_labels(model)
    assert len(common.ESTIMATOR_LABELS) == len(set(common.ESTIMATOR_LABELS))


@pytest.mark.parametrize("cls", PARAMETERISED, ids=lambda cls: cls.__name__)
def test_parameters_cover_every_benchmarked_label(cls: type) -> None:
    assert tuple(cls.param_names[:2]) == ("model", "estimator")
    assert len(cls.param_names) == len(cls.params)
    combinations = set(itertools.product(*cls.params[:2]))
    wanted = {(m, label) for m in MODELS for label in PAPER.estimator_labels(m)}
    assert wanted <= combinations, f"{cls.__name__} misses {sorted(wanted - combinations)}"
    rest = tuple(values[0] for values in cls.params[2:])
    for model, label in combinations - wanted:  # the product's other pairs are skipped
        with pytest.raises(NotImplementedError):
            cls().setup(model, label, *rest)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_benchmark_runs_once(cls: type) -> None:
    methods = _methods(cls)
    assert methods, f"{cls.__name__} defines no benchmark"
    for params in _representative(cls):
        bench = cls()
        bench.setup(*params)
        for name in methods:
            value = getattr(bench, name)(*params)
            if name.startswith("track_"):
                assert math.isfinite(value) and value > 0, (cls.__name__, params, value)


@pytest.mark.parametrize("cls", PARAMETERISED, ids=lambda cls: cls.__name__)
def test_invalid_combination_is_skipped(cls: type) -> None:
    rest = tuple(values[0] for values in cls.params[2:])
    with pytest.raises(NotImplementedError, match="does not apply"):
        cls().setup("gaussian-vae", "local-reparam", *rest)


def test_tracked_variance_repeats_exactly() -> None:
    """asv's history needs the tracked number to depend on the code alone, not on the run."""
    label = "lr-baseline[baseline=learned]"  # a variant, and one that fits state as it settles
    first = common.gradient_variance("gaussian-vae", label, "bottom")
    second = common.gradient_variance("gaussian-vae", label, "bottom")
    assert first == second


@pytest.mark.parametrize("cls", PROTOCOL, ids=lambda cls: cls.__name__)
def test_a_protocol_class_covers_the_protocols_estimators(cls: type) -> None:
    assert list(cls.params[0]) == common.protocol_labels() and len(cls.params[0]) >= 7
