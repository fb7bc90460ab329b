"""New estimators and models: from other installed packages (entry-point groups
``gradbench.estimators`` and ``gradbench.models``) and as one new file of the package.

``tests/example_plugin`` is an installed plugin as pip leaves it (the package, one module per
component, and its dist-info with the entry points). With that folder on the path, gradbench
registers the plugin's estimator and model and gives them the whole treatment: toys, the exact
oracle, variance and training cells and reports; a plugin's code is part of its cells' code
version, so editing one module recomputes exactly the cells that used it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradbench.code_version import cell_stamp, module_source_hash, plugin_code
from gradbench.estimators import ESTIMATORS, load_plugins, make_estimator
from gradbench.measure.toy import toy_draws
from gradbench.measure.training import checkpoint_path as resume_path
from gradbench.models import MODELS, DataShape, make_model, profile_model_options
from gradbench.models import load_plugins as load_model_plugins
from gradbench.models.toy import make_problem
from gradbench.results import Cell
from tests.helpers import Z, assert_unbiased
from tests.test_oracle import case_scores, worst

PLUGIN_DIR = Path(__file__).parent / "example_plugin"
NAME = "constant-baseline"
MODEL = "binary-autoencoder"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch):
    """The example plugin loaded into this process: (estimators, models) it registered;
    unregistered afterwards."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    loaded = load_plugins(), load_model_plugins()
    yield loaded
    ESTIMATORS.pop(NAME, None)
    MODELS.pop(MODEL, None)
    plugin_code.cache_clear()
    for module in [m for m in sys.modules if m.partition(".")[0] == "gradbench_example_plugin"]:
        sys.modules.pop(module)


def test_the_entry_points_register_the_estimator_and_the_model(
    plugin: tuple[list[str], list[str]],
) -> None:
    assert plugin == ([NAME], [MODEL])
    assert make_estimator(f"{NAME}[constant=2.5]").constant == 2.5
    model_class = MODELS[MODEL]
    assert (model_class.task, model_class.headline_groups) == ("autoencoder", ("top", "bottom"))
    assert profile_model_options("smoke")[MODEL] == {"latent_dim": 4}
    groups = make_model(MODEL, DataShape(12, 4, 100), {"latent_dim": 4}).parameter_groups()
    assert (groups["bottom"], groups["top"]) == (["encoder.weight"], ["decoder.weight"])


@pytest.mark.parametrize("problem", ["gaussian-quadratic", "categorical-linear"])
def test_the_plugin_is_unbiased_on_the_toys(plugin: list[str], problem: str) -> None:
    toy = make_problem(problem)
    draws = toy_draws(toy, make_estimator(NAME), 20_000, seed=5)
    for name, exact in toy.exact_gradient().items():
        assert_unbiased(draws[name], exact, what=f"{NAME} on {problem} d/d{name}")


def test_the_plugin_matches_the_exact_oracle_on_a_real_model(plugin: list[str]) -> None:
    z, name, score = worst(case_scores("categorical-vae", NAME))
    assert score < z, (name, score, z)


def test_the_plugin_model_matches_its_exact_oracle(plugin: tuple[list[str], list[str]]) -> None:
    """Score-function gradients on the plugin's model agree with the gradient of its exact
    expected loss (enumeration of the 2^3 latents): its forward pass and its oracle agree."""
    z, name, score = worst(case_scores(MODEL, "lr"))
    assert score < z, (name, score, z)


def test_a_cell_of_the_plugin_names_it_in_its_code_version(
    plugin: tuple[list[str], list[str]],
) -> None:
    """gradbench's own cells keep gradbench's code version; a cell that uses a plugin (its
    estimator, its model, or the reference estimator of its checkpoints) adds the plugins'
    code, each named with its distribution, version, module and source hash."""
    config = {"dataset": "digits", "reference_estimator": "gumbel-softmax"}
    assert cell_stamp("abc", "categorical-vae", "lr[x=1]", config) == {"code_version": "abc"}
    own_model = cell_stamp("abc", "categorical-vae", NAME, config)
    both = cell_stamp("abc", MODEL, NAME, config)
    assert own_model["code_version"].startswith("abc+plugins.")
    assert len({own_model["code_version"], both["code_version"]}) == 2
    assert own_model["plugins"] == (
        f"estimator {NAME} from gradbench-example-plugin 0.1 (gradbench_example_plugin.estimator, "
        f"source {module_source_hash(sys.modules['gradbench_example_plugin.estimator'])})"
    )
    assert both["plugins"].split("; ")[1].startswith(f"model {MODEL} from gradbench-example")
    as_reference = cell_stamp("abc", "categorical-vae", "lr", config | {"reference_estimator": NAME})
    assert as_reference == own_model


def test_a_training_cell_of_the_plugin_resumes_only_from_the_plugins_code(
    plugin: tuple[list[str], list[str]],
) -> None:
    """An unfinished training cell's resume file is named by the plugins' code too, so that an
    edited plugin starts the cell afresh; gradbench's own cells keep their names."""
    own = Cell("train", "categorical-vae", "lr", {"dataset": "digits"})
    theirs = Cell("train", MODEL, "lr", {"dataset": "digits"})
    assert resume_path(Path("r"), own).name == f"categorical-vae__lr__{own.config_hash}.pt"
    version = cell_stamp("abc", MODEL, "lr", theirs.config)["code_version"]
    assert resume_path(Path("r"), theirs).name == (
        f"{MODEL}__lr__{theirs.config_hash}{version.removeprefix('abc')}.pt"
    )
    assert "+plugins." in version


def test_a_dataset_from_an_entry_point_is_part_of_its_cells_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset whose entry point (group ``gradbench.datasets``) names a module of another
    distribution is a plugin of every cell measured on it; gradbench's own datasets are not."""
    package = tmp_path / "tiny_data_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bars.py").write_text('"""Horizontal bars."""\n')
    info = tmp_path / "tiny_data_plugin-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-data-plugin\nVersion: 2.0\n")
    (info / "top_level.txt").write_text("tiny_data_plugin\n")
    (info / "entry_points.txt").write_text("[gradbench.datasets]\nbars = tiny_data_plugin.bars\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin_code.cache_clear()
    try:
        on_bars = cell_stamp("abc", "categorical-vae", "lr", {"dataset": "bars"})
        on_digits = cell_stamp("abc", "categorical-vae", "lr", {"dataset": "digits"})
    finally:
        plugin_code.cache_clear()
        for module in [m for m in sys.modules if m.partition(".")[0] == "tiny_data_plugin"]:
            sys.modules.pop(module)
    source = hashlib.sha256((package / "bars.py").read_bytes()).hexdigest()[:12]
    assert on_bars["plugins"] == (
        f"dataset bars from tiny-data-plugin 2.0 (tiny_data_plugin.bars, source {source})"
    )
    assert on_bars["code_version"].startswith("abc+plugins.")
    assert on_digits == {"code_version": "abc"}


def _gradbench(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gradbench", *argv], env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _cells(results: Path) -> dict[str, str]:
    """Each stored cell file (relative path) → its rows (a recomputed cell's differ: its
    ``created_at``, and its ``code_version`` when a plugin it uses changed)."""
    return {str(path.relative_to(results)): path.read_text() for path in results.glob("*/*.csv")}


def test_a_run_measures_and_reports_the_plugin_model_and_reruns_what_an_edit_touched(
    tmp_path: Path,
) -> None:
    """A copy of the plugin on a separate process's path: `all --profile smoke` measures the
    plugin's model with the plugin's estimator and gradbench's, with rows of its own in the
    variance and ELBO tables and the plugins in the report's header; editing the estimator's
    module recomputes exactly the cells of that estimator, editing the model's module exactly
    the cells of that model (and the catalogue's, which lists where each estimator applies)."""
    copy = tmp_path / "plugin"
    shutil.copytree(PLUGIN_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), os.getcwd()])}
    results, reports = tmp_path / "results", tmp_path / "reports"
    run = (
        "all", "--profile", "smoke", "--models", f"{MODEL},categorical-vae", "--estimators",
        f"{NAME},lr", "--experiments", "variance,train", "--quiet", "--executor", "in-process",
        "--results", str(results), "--out", str(reports),
    )
    _gradbench(env, *run)
    variance = (reports / "tables" / "variance_binary_autoencoder.csv").read_text()
    for estimator in (NAME, "lr"):
        row = next(line for line in variance.splitlines() if line.startswith(estimator + ","))
        assert "," * 3 not in row and row.count(",") >= 4, row  # top and bottom, both epochs
    elbo = (reports / "tables" / "elbo_binary_autoencoder.md").read_text()
    assert NAME in elbo and "| lr" in elbo
    header = (reports / "README.md").read_text()
    package = "gradbench-example-plugin 0.1 (gradbench_example_plugin"
    assert f"estimator {NAME} from {package}.estimator" in header
    assert f"model {MODEL} from {package}.model" in header

    first = _cells(results)
    assert any(name.startswith(f"variance/{MODEL}__{NAME}__") for name in first)
    estimator_module = copy / "gradbench_example_plugin" / "estimator.py"
    estimator_module.write_text(estimator_module.read_text() + "\n# edited\n")
    _gradbench(env, *run)
    second = _cells(results)
    assert set(second) == set(first)
    changed = {name for name in first if second[name] != first[name]}
    assert changed == {name for name in first if f"__{NAME}__" in name}

    model_module = copy / "gradbench_example_plugin" / "model.py"
    model_module.write_text(model_module.read_text() + "\n# edited\n")
    _gradbench(env, *run)
    third = _cells(results)
    changed = {name for name in second if third[name] != second[name]}
    assert changed == {
        name for name in second if name.startswith(("catalogue/", f"train/{MODEL}__",
                                                    f"variance/{MODEL}__"))
    }


def test_a_run_measures_and_reports_the_plugin(tmp_path: Path) -> None:
    """A separate process with the plugin on its path: listed, measured and in the tables."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), os.getcwd()])}

    def gradbench(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gradbench", *argv], env=env, capture_output=True, text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert NAME in gradbench("list")
    gradbench(
        "all", "--profile", "smoke", "--models", "categorical-vae", "--estimators", f"{NAME},lr",
        "--experiments", "variance", "--quiet", "--executor", "in-process", "--results", str(tmp_path / "results"),
        "--out", str(tmp_path / "reports"),
    )
    table = (tmp_path / "reports" / "tables" / "variance_categorical_vae.md").read_text()
    assert NAME in table and "lr" in table


NEW_FILE = '''"""A score function with a constant baseline, written as a new file of the package."""

from torch import Tensor

from gradbench.estimators.base import Estimator, StochasticForward, register_estimator
from gradbench.estimators.nodes import StochasticNode


@register_estimator
class ShiftedScore(Estimator):
    """(f(z) − 2) ∇ log q(z): unbiased for any constant shift."""

    name = "shifted-score"
    summary = "score function with a constant baseline 2"
    unbiased = True
    node_kinds = frozenset({"gaussian", "categorical", "bernoulli"})

    def sample(self, node: StochasticNode) -> Tensor:
        self._check_kind(node)
        return node.sample()

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        return forward.mean_loss() + (forward.data_loss.detach() - 2.0) * forward.log_prob()
'''


def test_a_new_estimator_file_in_a_copy_is_listed_measured_and_reported(tmp_path: Path) -> None:
    """Adding one file to gradbench/estimators/ of a copy, with no other edit: the estimator is
    listed, its toy gradients match the closed form, and `all` measures and reports it."""
    package = Path(__file__).resolve().parents[1] / "gradbench"
    copy = tmp_path / "tree"
    shutil.copytree(package, copy / "gradbench", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "gradbench" / "estimators" / "shifted_score.py").write_text(NEW_FILE)
    env = {**os.environ, "PYTHONPATH": str(copy)}

    def gradbench(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gradbench", *argv], env=env, capture_output=True, text=True,
            timeout=600, cwd=copy,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listing = json.loads(gradbench("list", "--format", "json"))
    assert "shifted-score" in [row["estimator"] for row in listing["estimators"]]
    toy = json.loads(gradbench("toy", "--problem", "gaussian-quadratic", "--estimator",
                               "shifted-score", "--samples", "20000", "--format", "json"))
    for exact, mean, se in zip(toy["exact"]["mu"], toy["mean"]["mu"], toy["stderr"]["mu"]):
        assert abs(mean - exact) < Z * se
    gradbench(
        "all", "--profile", "smoke", "--models", "gaussian-vae", "--estimators",
        "shifted-score,lr", "--experiments", "variance", "--quiet", "--executor", "in-process",
        "--results", str(tmp_path / "results"), "--out", str(tmp_path / "reports"),
    )
    table = (tmp_path / "reports" / "tables" / "variance_gaussian_vae.md").read_text()
    assert "shifted-score" in table
