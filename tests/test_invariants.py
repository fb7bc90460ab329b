"""The invariants every variance table checks (gradbench.report.variance_tables.invariant_checks):
the 1/M law of noise independent across examples, one output-bias law under local
reparameterization and separate weight samples, one data part across unbiased estimators.

Measured on a 64-3×256-10 bayes-mlp at its initialisation (scikit-learn's digits, the data every
test machine has; strong weight noise, α near the cap), they hold; a separate-sample estimator
whose examples share their noise in pairs breaks the first two (the data part, E_ε[ĝ | B], does
not depend on how the noise is shared, so it must still hold). The three measurements (local,
separate, separate sharing) take about 40 s of one core.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from gradbench.data import DataConfig, load_dataset
from gradbench.estimators import reparam_per_example
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.measure.variance import gradient_summary
from gradbench.measure.variance_stats import summary_statistics
from gradbench.report.rows import prepare_rows
from gradbench.report.variance_tables import invariant_checks, invariant_notes, variance_table
from gradbench.results import Cell, Provenance, stamp

CPU = torch.device("cpu")
SETTING = Setting("bayes-mlp", {"hidden_sizes": "256,256,256"}, seed=0)
SIZES = (1, 10)
DRAWS = 400  # 200 minibatches × 2 noise draws


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the measurements are small, and spare threads only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(dataset="digits"), CPU)


@pytest.fixture(scope="module")
def model(digits):
    return build_model(SETTING, digits, CPU)


def measured(model, digits, name: str) -> pd.DataFrame:
    """Stamped variance rows of ``name`` at every size of SIZES, seeded alike."""
    frames = []
    for size in SIZES:
        torch.manual_seed(1)
        estimator = build_estimator(SETTING, name, digits, CPU)
        summary, _ = gradient_summary(model, estimator, digits, size, DRAWS,
                                      torch.Generator().manual_seed(2), noise_draws=2)
        rows = summary_statistics(summary, model.parameter_groups(), replicates=200)
        rows = [r | {"batch_size": size, "epoch": 0, "status": "ok", "checkpoint": "init"}
                for r in rows]
        frames.append(stamp(rows, Cell("variance", "bayes-mlp", name, {"size": size}),
                            Provenance.collect(CPU, "test")))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def local_rows(model, digits):
    return measured(model, digits, "local-reparam")


def failed_laws(rows: pd.DataFrame) -> set[str]:
    return {c.law.split(":")[0] for c in invariant_checks(prepare_rows(rows), "bayes-mlp")
            if not c.holds}


def test_invariants_hold_on_a_measured_network(model, digits, local_rows):
    rows = pd.concat([local_rows, measured(model, digits, "reparam-per-example")])
    checks = invariant_checks(prepare_rows(rows), "bayes-mlp")
    laws = {c.law.split(":")[0] for c in checks}
    assert laws == {
        "1/M law of local-reparam", "1/M law of reparam-per-example",
        "one law of the output layer's bias under local-reparam and reparam-per-example",
        "one data part Var_B(E_ε[ĝ | B]) of every unbiased estimator",
    }
    assert len(checks) == 3 + 3 + 2 + 6  # (top, bottom, output bias) × sizes or pairs
    assert all(c.holds for c in checks), [c for c in checks if not c.holds]


def test_separate_samples_sharing_noise_in_pairs_fail_the_noise_laws(
    model, digits, local_rows, monkeypatch
):
    def shared(inputs, weight_mean, std):
        noise = torch.randn((inputs.shape[0], *std.shape), dtype=std.dtype, device=std.device)
        noise = noise[0::2].repeat_interleave(2, 0)[: inputs.shape[0]]  # examples 2i, 2i+1
        return reparam_per_example.PerExampleProduct.apply(inputs, weight_mean, std, noise)[0]

    monkeypatch.setattr(reparam_per_example, "_chunk_outputs", shared)
    rows = pd.concat([local_rows, measured(model, digits, "reparam-per-example")])
    assert failed_laws(rows) == {
        "1/M law of reparam-per-example",
        "one law of the output layer's bias under local-reparam and reparam-per-example",
    }


def _row(name, group, size, metric, value, low, high, seed=0):
    return {"experiment": "variance", "model": "bayes-mlp", "estimator": name,
            "param_group": group, "batch_size": size, "epoch": 10, "metric": metric,
            "value": value, "ci_low": low, "ci_high": high, "n": 100, "status": "ok",
            "seed": seed, "checkpoint": "aa", "profile": "test",
            "created_at": "2025-01-01T00:00:00+00:00", "config_hash": f"{name}{size}"}


def test_checks_name_each_failure_with_its_intervals_and_call_it_the_measurements():
    rows = prepare_rows(pd.DataFrame([
        _row("local-reparam", "top", 10, "grad_variance_noise", 1.0, 0.9, 1.1),
        _row("local-reparam", "top", 100, "grad_variance_noise", 0.1, 0.09, 0.11),
        _row("reparam-per-example", "top", 10, "grad_variance_noise", 1.0, 0.9, 1.1),
        _row("reparam-per-example", "top", 100, "grad_variance_noise", 0.2, 0.18, 0.22),
        _row("local-reparam", "top", 100, "grad_variance_data", 1.0, 0.5, 1.5),
        _row("reparam", "top", 100, "grad_variance_data", 1.2, 0.8, 1.6),
        _row("no-noise", "top", 100, "grad_variance_data", 9.0, 8.0, 10.0),
        _row("reparam-per-example", "top", 100, "grad_variance_data", 3.0, 2.0, 4.0),
        _row("local-reparam", "layers.3.bias", 100, "grad_variance", 1.0, 0.9, 1.1),
        _row("reparam-per-example", "layers.3.bias", 100, "grad_variance", 1.05, 1.0, 1.2),
        _row("local-reparam", "layers.3.bias", 100, "grad_variance", math.nan, math.nan,
             math.nan, seed=1),
    ]))
    checks = invariant_checks(rows, "bayes-mlp")
    assert [(c.where, c.holds) for c in checks] == [
        ("[top, M = 10 vs 100, 10 ep, seed 0]", True),
        ("[top, M = 10 vs 100, 10 ep, seed 0]", False),
        ("[layers.3.bias, M = 100, 10 ep, seed 0]", True),
        ("[top, M = 100, 10 ep, seed 0]", False),  # reparam-per-example's data part
        ("[top, M = 100, 10 ep, seed 0]", True),  # reparam's; no-noise is biased: not checked
    ]
    notes = invariant_notes(checks)
    assert notes[1] == (
        "Invariant, 1/M law of reparam-per-example: M × noise part equal at every M: holds in 0 "
        "of 1 comparisons; FAILS at [top, M = 10 vs 100, 10 ep, seed 0] (M = 10 1.0e1 "
        "[9.0e0, 1.1e1] against M = 100 2.0e1 [1.8e1, 2.2e1])."
    )
    assert notes[-1].startswith("A failed invariant is a failure of the measurement there, "
                                "not of an interval")
    assert invariant_notes([c for c in checks if c.holds])[-1].endswith("holds in 1 of 1 "
                                                                        "comparisons.")
    table = variance_table(rows, "bayes-mlp")
    assert notes[1] in table.notes
