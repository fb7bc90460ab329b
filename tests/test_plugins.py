"""New estimators: from other installed packages (entry-point group ``gradbench.estimators``)
and as one new file of the package.

``tests/example_plugin`` is an installed plugin as pip leaves it (the package and its dist-info
with the entry point). With that folder on the path, gradbench registers the plugin's estimator
and gives it the whole treatment: toys, the exact oracle, variance cells and reports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradbench.estimators import ESTIMATORS, load_plugins, make_estimator
from gradbench.measure.toy import toy_draws
from gradbench.models.toy import make_problem
from tests.helpers import Z, assert_unbiased
from tests.test_oracle import case_scores, worst

PLUGIN_DIR = Path(__file__).parent / "example_plugin"
NAME = "constant-baseline"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch):
    """The example plugin loaded into this process; unregistered afterwards."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    loaded = load_plugins()
    yield loaded
    ESTIMATORS.pop(NAME, None)
    sys.modules.pop("gradbench_example_plugin", None)


def test_the_entry_point_registers_the_estimator(plugin: list[str]) -> None:
    assert plugin == [NAME]
    assert make_estimator(f"{NAME}[constant=2.5]").constant == 2.5


@pytest.mark.parametrize("problem", ["gaussian-quadratic", "categorical-linear"])
def test_the_plugin_is_unbiased_on_the_toys(plugin: list[str], problem: str) -> None:
    toy = make_problem(problem)
    draws = toy_draws(toy, make_estimator(NAME), 20_000, seed=5)
    for name, exact in toy.exact_gradient().items():
        assert_unbiased(draws[name], exact, what=f"{NAME} on {problem} d/d{name}")


def test_the_plugin_matches_the_exact_oracle_on_a_real_model(plugin: list[str]) -> None:
    z, name, score = worst(case_scores("categorical-vae", NAME))
    assert score < z, (name, score, z)


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
        "--experiments", "variance", "--quiet", "--results", str(tmp_path / "results"),
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
        "shifted-score,lr", "--experiments", "variance", "--quiet",
        "--results", str(tmp_path / "results"), "--out", str(tmp_path / "reports"),
    )
    table = (tmp_path / "reports" / "tables" / "variance_gaussian_vae.md").read_text()
    assert "shifted-score" in table
