"""The `list` and `toy` commands, their JSON output and their one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gradbench.catalogue import applicable
from gradbench.cli import main
from gradbench.data import DATASET_SOURCES
from gradbench.estimators import ESTIMATORS
from gradbench.experiments.registry import experiments
from gradbench.models import MODELS
from gradbench.models.toy import PROBLEMS
from gradbench.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_list_names_everything_and_the_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "list", "--format", "json")
    assert status == 0
    listing = json.loads(out)
    assert [r["estimator"] for r in listing["estimators"]] == list(ESTIMATORS)
    assert [r["model"] for r in listing["models"]] == list(MODELS)
    assert [r["problem"] for r in listing["problems"]] == list(PROBLEMS)
    assert [r["dataset"] for r in listing["datasets"]] == list(DATASET_SOURCES)
    assert "binarized-mnist" in DATASET_SOURCES
    assert [r["experiment"] for r in listing["experiments"]] == list(experiments())
    selectable = {r["experiment"]: r["selectable"] for r in listing["experiments"]}
    assert selectable["train"] and not selectable["catalogue"]
    profiles = {r["profile"]: r for r in listing["profiles"]}
    assert list(profiles) == list(PROFILES)
    assert profiles["disarm-dynamic"]["dataset"] == "mnist (dynamic binarization)"
    assert profiles["arm"]["dataset"] == "binarized-mnist (binary as published)"
    assert profiles["arm-nonlinear"]["models"] == "bernoulli-vae"
    assert profiles["quick"]["models"] == ", ".join(MODELS)
    matrix = {row["model"]: {e for e in ESTIMATORS if row[e] == "yes"} for row in listing["applicability"]}
    for model in (*MODELS, *PROBLEMS):
        assert matrix[model] == set(applicable(model)), model
    # Facts of the node kinds, whatever else gets registered:
    assert {"lr", "lr-baseline", "reparam"} <= matrix["gaussian-vae"]
    assert {"gumbel-softmax", "st-gumbel", "target-prop"} <= matrix["categorical-vae"]
    assert {"reparam", "reparam-per-example", "local-reparam", "no-noise"} <= matrix["bayes-mlp"]
    assert "reparam" not in matrix["categorical-vae"] and "lr" not in matrix["bayes-mlp"]
    only_where_inverse = {m for m, names in matrix.items() if "target-prop" in names}
    assert only_where_inverse == {"categorical-vae"}


def test_toy_json_is_one_object_with_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(
        capsys, "toy", "--problem", "categorical-linear", "--estimator", "lr-baseline",
        "--param", "logits=0.1,-0.5,2.0", "--param", "c=1,0,3",
        "--estimator-arg", "baseline_decay=0.8", "--samples", "4000", "--seed", "3",
        "--format", "json",
    )
    assert status == 0
    result = json.loads(out)
    assert set(result) == {"problem", "estimator", "params", "samples", "exact", "mean", "stderr", "variance"}
    assert result["params"] == {"logits": [0.1, -0.5, 2.0], "c": [1.0, 0.0, 3.0]}
    assert result["samples"] == 4000
    for key in ("exact", "mean", "stderr", "variance"):
        assert list(result[key]) == ["logits"] and len(result[key]["logits"]) == 3
    for exact, mean, se in zip(result["exact"]["logits"], result["mean"]["logits"], result["stderr"]["logits"]):
        assert abs(mean - exact) < 4 * se


def test_toy_same_seed_same_output(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("toy", "--problem", "gaussian-quadratic", "--estimator", "lr", "--samples", "500", "--format", "json")
    assert run_cli(capsys, *argv)[1] == run_cli(capsys, *argv)[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--problem", "nope", "--estimator", "lr"], "valid: " + ", ".join(PROBLEMS)),
        (["--problem", "gaussian-quadratic", "--estimator", "nope"], "valid: " + ", ".join(ESTIMATORS)),
        (
            ["--problem", "gaussian-quadratic", "--estimator", "gumbel-softmax"],
            "applicable: " + ", ".join(applicable("gaussian-quadratic")),
        ),
        (["--problem", "gaussian-quadratic", "--estimator", "lr", "--param", "mu"], "expected KEY=VALUE"),
        (["--problem", "gaussian-quadratic", "--estimator", "lr", "--param", "nu=1"], "valid: mu, sigma, target"),
        (["--problem", "gaussian-quadratic", "--estimator", "lr", "--param", "mu=abc"], "bad value 'abc' for mu"),
        (["--problem", "gaussian-quadratic", "--estimator", "lr", "--param", "sigma=0"], "sigma must be positive"),
        (["--problem", "gaussian-quadratic", "--estimator", "lr", "--estimator-arg", "tau=1"], "valid: none"),
        (["--problem", "gaussian-quadratic", "--estimator", "lr", "--format", "xml"], "valid: table, json"),
    ],
)
def test_toy_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run_cli(capsys, "toy", *argv)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_module_entry_point_has_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gradbench", "toy", "--problem", "x", "--estimator", "lr"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^(pip install .*pytest.*)$", readme, flags=re.MULTILINE)
    assert len(commands) == 1
    assert f"python -m {commands[0]}" in ci
    assert "python -m gradbench all" in readme


def test_missing_data_says_where_it_looked_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GRADBENCH_DATA", raising=False)
    monkeypatch.setenv("GRADBENCH_MNIST_MIRRORS", "http://127.0.0.1:9/")
    (tmp_path / "empty").mkdir()
    status, out, err = run_cli(
        capsys, "train", "--model", "gaussian-vae", "--estimator", "reparam", "--dataset", "mnist",
        "--data-dir", str(tmp_path / "empty"), "--epochs", "1", "--results", str(tmp_path / "r"),
    )
    assert status == 2 and out == ""
    assert "Looked in:" in err and str(tmp_path / "empty") in err and "--data-dir" in err
    assert "Traceback" not in err


TWO_GUMBELS = "gumbel-softmax[temperature=0.5],gumbel-softmax[temperature=0.1]"
SMALL_CATEGORICAL = ("--model", "categorical-vae", "--dataset", "digits", "--subset", "300",
                     "--model-arg", "hidden_sizes=16", "--model-arg", "n_vars=3",
                     "--model-arg", "n_classes=3", "--format", "json")


@pytest.mark.parametrize(
    "argv",
    [
        ("variance", *SMALL_CATEGORICAL, "--batch-sizes", "1,10", "--draws", "8",
         "--at-epochs", "0", "--bootstrap", "20"),
        ("train", *SMALL_CATEGORICAL, "--epochs", "1", "--iw-samples", "2"),
        ("timing", *SMALL_CATEGORICAL, "--steps", "2", "--repeats", "1", "--warmup-steps", "0"),
    ],
    ids=["variance", "train", "timing"],
)
def test_two_variants_of_one_estimator_give_two_rows(
    argv: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(
        capsys, *argv, "--estimators", TWO_GUMBELS, "--results", str(tmp_path)
    )
    assert status == 0, err
    rows = json.loads(out)
    assert {r["estimator"] for r in rows} == {
        "gumbel-softmax[temperature=0.5]", "gumbel-softmax[temperature=0.1]"
    }
    assert {r["torch_threads"] for r in rows} == {1}  # the quick profile's policy on a CPU
    if argv[0] != "timing":
        tau = {r["estimator"]: r["value"] for r in rows if r["metric"] == "temperature"}
        assert set(tau) == {"gumbel-softmax[temperature=0.5]", "gumbel-softmax[temperature=0.1]"}


def test_toy_runs_two_variants(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "toy", "--problem", "categorical-linear", "--estimators",
                             TWO_GUMBELS, "--samples", "50", "--format", "json")
    assert status == 0
    assert [r["estimator"] for r in json.loads(out)] == TWO_GUMBELS.replace("],", "]|").split("|")


def test_a_binarization_a_binary_dataset_cannot_have_exits_2_before_any_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``all --profile arm --binarization dynamic`` (Larochelle's pixels are binary already)
    stops with one line before the report or results folder is created."""
    out, results = tmp_path / "out", tmp_path / "results"
    status, printed, err = run_cli(
        capsys, "all", "--profile", "arm", "--binarization", "dynamic", "--executor",
        "in-process", "--out", str(out), "--results", str(results),
    )
    assert status == 2 and printed == "" and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "binary as published" in err
    assert not out.exists() and not results.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["toy", "--problem", "categorical-linear", "--estimator", "gumbel-softmax[tau=1]"],
         "valid: temperature, initial_temperature, anneal_fraction"),
        (["toy", "--problem", "categorical-linear", "--estimator", "gumbel-softmax[temperature=x]"],
         "bad value 'x' for temperature"),
        (["train", "--model", "categorical-vae", "--estimators", "gumbel-softmax[temperature=1"],
         "unbalanced '['"),
        (["all", "--estimators", "lr-baseline[baseline=magic]", "--dry-run", "--executor",
          "in-process"],
         "unknown baseline 'magic'; valid: ema, learned"),
        (["all", "--dataset", "binarized-mnist", "--binarization", "dynamic", "--dry-run",
          "--executor", "in-process"],
         "binarized-mnist's pixels are binary as published: binarization 'dynamic'"),
    ],
)
def test_bad_variants_exit_2_naming_the_valid_choices(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(capsys, *argv)
    assert status == 2 and message in err and "Traceback" not in err
