"""The comparison with the papers: ours beside each published figure, and the distance.

Synthetic rows of two seeds at the papers' settings, with known values, so every ratio and
difference is known; a run of another profile is never set against the papers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from gradbench.data import DataConfig, load_dataset
from gradbench.estimators.nodes import gumbel_like
from gradbench.experiment import Setting, build_estimator, build_model
from gradbench.measure.training import (
    EvalConfig,
    TrainConfig,
    relaxed_reconstruction,
    training_rows,
)
from gradbench.profiles import PROFILES
from gradbench.report import paper as pub
from gradbench.report.aggregate import ratio
from gradbench.report.comparison_tables import comparison_table
from gradbench.report.render import INTERVAL, display
from gradbench.report.rows import Outcome, prepare_rows
from gradbench.report.sweep_tables import sweep_tables
from gradbench.report.table import Table
from gradbench.report.training_tables import classification_table, elbo_table
from gradbench.report.variance_tables import variance_table
from gradbench.results import Cell, Provenance, stamp

LOCAL_VARIANCE = {0: 2.0, 1: 4.0}
"""local-reparam's top-layer variance at 10 epochs and M = 100, by seed; the others are multiples
of it (at M = 1000 other multiples, which the comparison must not pick)."""
MULTIPLE = {"reparam": {0: 5.0, 1: 7.0}, "reparam-per-example": {0: 2.0, 1: 3.0},
            "no-noise": {0: 0.5, 1: 0.25}}
RECONSTRUCTION = {0: -80.0, 1: -82.0}
"""target-prop's train reconstruction log-likelihood at the thesis' 50 epochs, by seed (an epoch
51 is stored too: the comparison is at the thesis' length, not the run's last epoch)."""


GUMBEL = {"reconstruction_ll_relaxed": -77.0, "reconstruction_ll": -88.0, "kl": 30.0}
"""gumbel-softmax (τ = 0.5) at 50 epochs, train, seed 0 (seed 1: each + 1; valid: each − 1)."""

ARM_BOUND = {0: -100.0, 1: -101.0}
"""arm's test IW bound on the linear Bernoulli VAE after 50 epochs, by seed."""


def provenance(profile: str) -> Provenance:
    return Provenance("cpu", "Test CPU (2 cores)", "2.0", 1, "abc123", "abc123", profile,
                      "2025-01-02T03:04:05+00:00")


def paper_rows(profile: str = pub.COMPARED_PROFILE,
               digests: dict[tuple[str, int], str | None] | None = None) -> pd.DataFrame:
    """The synthetic run; ``digests``: the checkpoint digest of a variance cell (estimator,
    seed) other than the seed's own (None: no digest, as older rows)."""
    frames = []
    for seed in (0, 1):
        config = {"seed": seed, "dataset": "mnist"}
        for name in ("local-reparam", *MULTIPLE):
            value = LOCAL_VARIANCE[seed] * MULTIPLE.get(name, {seed: 1.0})[seed]
            digest = (digests or {}).get((name, seed), f"seed{seed}")
            rows = [{"param_group": "top", "batch_size": size, "epoch": 10,
                     "metric": "grad_variance", "value": value * other, "ci_low": value,
                     "ci_high": value, "n": 1000}
                    | ({"checkpoint": digest} if digest is not None else {})
                    for size, other in ((100, 1.0), (1000, 0.3 if name == "reparam" else 0.1))]
            frames.append(stamp(rows, Cell("variance", "bayes-mlp", name, config),
                                provenance(profile)))
        for name, seconds in (("local-reparam", 2.0), ("reparam-per-example", 300.0 + seed)):
            timing = [{"batch_size": 100, "metric": "seconds_per_epoch", "value": seconds}]
            frames.append(stamp(timing, Cell("timing", "bayes-mlp", name, config),
                                provenance(profile)))
        training = [
            {"param_group": split, "batch_size": 100, "epoch": epoch,
             "metric": "reconstruction_ll",
             "value": RECONSTRUCTION[seed] - shift + 5.0 * (epoch - 50)}
            for epoch in (50, 51) for split, shift in (("train", 0.0), ("valid", 1.0))
        ]
        frames.append(stamp(training, Cell("train", "categorical-vae", "target-prop", config),
                            provenance(profile)))
        gumbel = [
            {"param_group": split, "batch_size": 100, "epoch": 50, "metric": metric,
             "value": value + seed - shift}
            for split, shift in (("train", 0.0), ("valid", 1.0))
            for metric, value in GUMBEL.items()
        ]
        frames.append(stamp(gumbel, Cell("train", "categorical-vae",
                                         "gumbel-softmax[temperature=0.5]", config),
                            provenance(profile)))
        bound = [{"param_group": "test", "batch_size": 100, "epoch": epoch, "metric": "iw_bound",
                  "value": ARM_BOUND[seed] - (50 - epoch)} for epoch in (0, 50)]
        frames.append(stamp(bound, Cell("train", "bernoulli-vae", "arm", config),
                            provenance(profile)))
    return prepare_rows(pd.concat(frames, ignore_index=True))


def by_figure() -> dict[str, dict[str, object]]:
    table = comparison_table(paper_rows())
    assert table is not None
    return {row[1]: dict(zip(table.headers, row)) for row in table.rows}


def figure(name: str, group: str = "top", epochs: int = 10) -> str:
    return (f"Table 1, {group} layer, {epochs} epochs: {pub.KINGMA_2015_ROW_NAMES[name]} / local "
            "reparameterization, gradient variance")


@pytest.mark.parametrize("name", list(MULTIPLE))
def test_table_1_ratios_are_taken_seed_by_seed_at_minibatch_100(name: str) -> None:
    row = by_figure()[figure(name)]
    published = pub.KINGMA_2015_TABLE1[name][("top", 10)] / pub.KINGMA_2015_TABLE1[
        "local-reparam"][("top", 10)]
    ours = sum(MULTIPLE[name].values()) / 2
    assert row["published"] == pytest.approx(published)
    assert row["ours"].mean == pytest.approx(ours)
    assert row["ours / published"].mean == pytest.approx(ours / published)
    assert row["ours - published (nats)"] is None


def test_speed_up_and_the_thesis_distance_in_nats() -> None:
    rows = by_figure()
    speedup = rows["seconds per epoch, separate weight samples / local reparameterization"]
    assert speedup["published"] == pytest.approx(1635.0 / 7.4)
    assert speedup["ours"].mean == pytest.approx((150.0 + 150.5) / 2)
    for split, shift, published in (("train", 0.0, -70.102), ("valid", 1.0, -72.545)):
        row = rows[f"Table 5.1, target-prop: reconstruction log-likelihood, {split}"]
        ours = sum(RECONSTRUCTION.values()) / 2 - shift
        assert row["published"] == published
        assert row["ours"].mean == pytest.approx(ours)
        assert row["ours - published (nats)"].mean == pytest.approx(ours - published)
        assert row["ours / published"] is None


def test_a_published_negative_log_likelihood_is_compared_as_a_log_likelihood() -> None:
    row = by_figure()["linear 784-200 Bernoulli VAE, ARM (ours: arm): test log-likelihood"]
    assert row["published"] == -107.2
    assert row["ours"].mean == pytest.approx(-100.5)
    assert row["ours - published (nats)"].mean == pytest.approx(-100.5 + 107.2)


def test_figures_not_measured_show_no_value_and_every_reason_is_noted() -> None:
    table = comparison_table(paper_rows())
    rows = {row[1]: dict(zip(table.headers, row)) for row in table.rows}
    assert len(rows) == sum(f.profile == pub.COMPARED_PROFILE for f in pub.PUBLISHED_FIGURES)
    assert rows[figure("reparam", "bottom", 100)]["ours"] is None
    assert rows["Table 5.1, gumbel-softmax (tau=0.1): reconstruction log-likelihood, valid "
                "(ours: relaxed samples)"]["ours"] is None
    for reason in (pub.TABLE1_REASON, pub.TIMING_REASON, pub.THESIS_REASON, pub.ARM_REASON,
                   pub.THESIS_RELAXED_REASON, pub.THESIS_DISCRETE_REASON,
                   pub.THESIS_TARGET_PROP_REASON):
        assert reason in table.notes


def test_gumbel_rows_set_the_relaxed_and_the_discrete_reconstruction_against_the_thesis():
    rows = by_figure()
    head = "Table 5.1, gumbel-softmax (tau=0.5): reconstruction log-likelihood"
    for split, index, shift in (("train", 0, 0.0), ("valid", 1, 1.0)):
        published = pub.NITTA_2017_TABLE51["gumbel-softmax (tau=0.5)"][index]
        for kind, metric in (("relaxed", "reconstruction_ll_relaxed"),
                             ("discrete", "reconstruction_ll")):
            row = rows[f"{head}, {split} (ours: {kind} samples)"]
            ours = GUMBEL[metric] + 0.5 - shift
            assert row["ours"].mean == pytest.approx(ours)
            gap = row["ours - published (nats)"]
            assert gap.mean == pytest.approx(ours - published)
            assert gap.low < gap.mean < gap.high  # over the two seeds
    kl = [n for n in comparison_table(paper_rows()).notes if n.startswith("Ours, the KL")]
    assert kl == [
        "Ours, the KL(q(y|x) ‖ uniform) term at 50 epochs, nats, the mean over seeds [95 % "
        "t-interval] (Table 5.1 reports neither KL nor ELBO): gumbel-softmax (tau=0.5) "
        "(gumbel-softmax[temperature=0.5]) train 30.50 [24.15, 36.85], valid 29.50 [23.15, "
        "35.85]."
    ]


def test_a_ratio_takes_cells_of_one_checkpoint_digest_only() -> None:
    """A cell measured at other parameters (another digest) or at unknown ones (no digest) is
    not divided by the local cell of the compared digest: its seed is missing from the ratio,
    and the notes name the cell."""
    table = comparison_table(paper_rows(digests={("reparam", 0): "other", ("no-noise", 1): None}))
    rows = {row[1]: dict(zip(table.headers, row)) for row in table.rows}
    assert rows[figure("reparam")]["ours"].mean == pytest.approx(MULTIPLE["reparam"][1])
    assert rows[figure("no-noise")]["ours"].mean == pytest.approx(MULTIPLE["no-noise"][0])
    assert rows[figure("reparam-per-example")]["ours"].mean == pytest.approx(2.5)
    left_out = next(n for n in table.notes if n.startswith("Left out"))
    assert ("bayes-mlp / reparam at M = 100, 1000, 10 ep, seed 0 (digest other; compared: "
            "digest seed0)") in left_out
    assert ("bayes-mlp / no-noise at M = 100, 1000, 10 ep, seed 1 (code abc123, no digest; "
            "compared: digest seed1)") in left_out


def test_cells_before_the_digest_compare_within_one_code_version_only() -> None:
    """Rows without a digest share parameters by their code version: one version's cells are
    compared (a note says so), a cell of another version is left out and named."""
    undigested = {(name, seed): None for name in ("local-reparam", *MULTIPLE) for seed in (0, 1)}
    rows = paper_rows(digests=undigested)
    older = (rows["estimator"] == "reparam") & (rows["seed"] == 0)
    rows.loc[older & (rows["experiment"] == "variance"), "code_version"] = "0ld0000"
    table = variance_table(rows, "bayes-mlp")
    cells = {row[0]: dict(zip(table.headers, row)) for row in table.rows}
    assert cells["reparam"]["top, 10 ep"].values == {1: LOCAL_VARIANCE[1] * MULTIPLE["reparam"][1]}
    assert set(cells["local-reparam"]["top, 10 ep"].values) == {0, 1}
    assert any("bayes-mlp / reparam at M = 100, 1000, 10 ep, seed 0 (code 0ld0000, no digest; "
               "compared: code abc123, no digest)" in note for note in table.notes)
    assert any(note.startswith("Some compared cells predate the checkpoint digest")
               for note in table.notes)


def test_the_variance_table_shows_one_digest_per_column_and_lists_the_others() -> None:
    """Kingma's Table 1 analogue: a cell of another digest is not shown beside the compared
    ones (its table cell is empty for that seed), and is listed; a note names the digest compared
    at each checkpoint."""
    rows = paper_rows(digests={("reparam-per-example", 0): "other"})
    table = variance_table(rows, "bayes-mlp")
    cells = {row[0]: dict(zip(table.headers, row)) for row in table.rows}
    column = "top, 10 ep"
    assert cells["reparam-per-example"][column].values == {
        1: LOCAL_VARIANCE[1] * MULTIPLE["reparam-per-example"][1]}
    assert cells["reparam"][column].values == {
        s: LOCAL_VARIANCE[s] * MULTIPLE["reparam"][s] for s in (0, 1)}
    assert any(note.startswith("Left out, measured at other parameters") and
               "reparam-per-example at M = 100, 1000, 10 ep, seed 0 (digest other" in note
               for note in table.notes)
    assert ("Parameters compared, one set per checkpoint (every cell of a column measured at "
            "it): bayes-mlp, seed 0: 10 ep digest seed0; bayes-mlp, seed 1: 10 ep digest seed1."
            ) in table.notes
    assert not any("Left out" in note for note in variance_table(paper_rows(), "bayes-mlp").notes)


def test_another_profile_is_not_set_against_the_papers() -> None:
    assert comparison_table(paper_rows("quick")) is None


ARM_PROTOCOL_BOUND = {"arm": -108.0, "lr-baseline[baseline=learned]": -115.5}
"""The arm profile's k = 100 test bound at the best validation epoch, one seed each."""


def arm_protocol_rows(profile: str = pub.ARM_PROFILE,
                      bounds: dict[str, float] = ARM_PROTOCOL_BOUND) -> pd.DataFrame:
    frames = []
    for name, value in bounds.items():
        rows = [{"param_group": "test", "batch_size": 50, "epoch": 1000,
                 "metric": f"iw_bound_k{k}_at_best_valid", "value": value + (k == 1000)}
                for k in (100, 1000)]
        frames.append(stamp(rows, Cell("train", "bernoulli-vae", name, {"seed": 0}),
                            provenance(profile)))
    return prepare_rows(pd.concat(frames, ignore_index=True))


def test_the_arm_profile_is_set_against_yin_and_zhou_at_their_protocol_only() -> None:
    """The arm report: Yin & Zhou's linear rows against the k = 100 bound at the best
    validation epoch, the protocol, where each published figure comes from and DisARM's missing
    table noted; no paper-profile figure."""
    table = comparison_table(arm_protocol_rows())
    assert table is not None
    rows = {row[1]: dict(zip(table.headers, row)) for row in table.rows}
    assert len(rows) == sum(f.profile == pub.ARM_PROFILE and not f.model_options
                            for f in pub.PUBLISHED_FIGURES) == 5
    for name, published in (("arm", -107.2), ("lr-baseline[baseline=learned]", -113.1)):
        label = pub.YIN_ZHOU_2019_ROW_NAMES[name]
        row = rows[f"linear 784-200 Bernoulli VAE, {label} (ours: {name}, their protocol): "
                   "test log-likelihood"]
        assert row["published"] == published
        assert row["ours"].mean == ARM_PROTOCOL_BOUND[name]
        assert row["ours - published (nats)"].mean == pytest.approx(
            ARM_PROTOCOL_BOUND[name] - published)
    assert pub.ARM_PROTOCOL_REASON in table.notes and pub.DISARM_NOT_TABULATED in table.notes
    assert pub.ARM_TABLE_ORIGINS in table.notes
    assert pub.ARM_REASON not in table.notes
    assert pub.ARM_TABLE_ORIGINS not in comparison_table(paper_rows()).notes
    both = comparison_table(pd.concat([paper_rows(), arm_protocol_rows()], ignore_index=True))
    assert len(both.rows) == len(pub.PUBLISHED_FIGURES) - 8, (
        "no arm-nonlinear or arm-nonlinear-script rows, no cause")


def test_the_nonlinear_network_is_set_against_yin_and_zhous_nonlinear_column_only() -> None:
    """The arm-nonlinear report's rows go beside the nonlinear figures (ARM 98.4, NVIL 102.2),
    never the linear ones; the linear report's never beside the nonlinear."""
    table = comparison_table(arm_protocol_rows(pub.ARM_NONLINEAR_PROFILE))
    rows = {row[1]: dict(zip(table.headers, row)) for row in table.rows}
    assert len(rows) == 5 and all(name.startswith("nonlinear 784-200-200-200 ") for name in rows)
    for name, published in (("arm", -98.4), ("lr-baseline[baseline=learned]", -102.2)):
        label = pub.YIN_ZHOU_2019_ROW_NAMES[name]
        row = rows[f"nonlinear 784-200-200-200 Bernoulli VAE, {label} (ours: {name}, their "
                   "protocol): test log-likelihood"]
        assert row["published"] == published
        assert row["ours - published (nats)"].mean == pytest.approx(
            ARM_PROTOCOL_BOUND[name] - published)
    assert pub.ARM_NONLINEAR_SCRIPT_DIFFERS in table.notes, "where ARM's nonlinear script differs"
    linear = comparison_table(arm_protocol_rows())
    assert not any(row[1].startswith("nonlinear") for row in linear.rows)
    assert pub.ARM_NONLINEAR_SCRIPT_DIFFERS not in linear.notes


def test_their_own_nonlinear_rows_are_set_against_the_run_at_their_nonlinear_script() -> None:
    """The arm-nonlinear-script report: Yin & Zhou's own runs (REINFORCE, ARM), nonlinear
    column, against its rows with that script's settings stated; not the learned-prior
    protocol's note, nor figures reported from other papers."""
    assert pub.YIN_ZHOU_2019_OWN_RUNS == PROFILES[pub.ARM_NONLINEAR_SCRIPT_PROFILE].estimators
    bounds = ARM_PROTOCOL_BOUND | {"lr": -116.5}
    table = comparison_table(arm_protocol_rows(pub.ARM_NONLINEAR_SCRIPT_PROFILE, bounds))
    rows = {row[1]: dict(zip(table.headers, row)) for row in table.rows}
    names = {name: f"nonlinear 784-200-200-200 Bernoulli VAE, {pub.YIN_ZHOU_2019_ROW_NAMES[name]}"
             f" (ours: {name}, their nonlinear script's settings): test log-likelihood"
             for name in ("lr", "arm")}
    assert list(rows) == list(names.values()), "their own runs only, not NVIL's"
    for name, published in (("lr", -114.6), ("arm", -98.4)):
        row = rows[names[name]]
        assert row["published"] == published
        assert row["ours"].mean == bounds[name]
        assert row["ours - published (nats)"].mean == pytest.approx(bounds[name] - published)
    assert pub.ARM_NONLINEAR_SCRIPT_REASON in table.notes and pub.ARM_TABLE_ORIGINS in table.notes
    assert "slope 0.1" in pub.ARM_NONLINEAR_SCRIPT_REASON
    assert pub.ARM_PROTOCOL_REASON not in table.notes
    assert pub.ARM_NONLINEAR_SCRIPT_DIFFERS not in table.notes
    learned = comparison_table(arm_protocol_rows(pub.ARM_NONLINEAR_PROFILE))
    assert not any("script's settings" in row[1] for row in learned.rows)


CONCRETE_SIGNAL_CAUSE = (f"linear 784-200 Bernoulli VAE, Concrete (ours: gumbel-softmax, their "
                         "protocol but the KL in closed form): test log-likelihood")
"""The figure whose ours is the arm protocol with the KL taken analytically."""


def arm_stored_rows(custom: dict[str, object] | None = None, code: str = "abc123",
                    cells: int = 1, concrete: bool = True, **changed: object) -> pd.DataFrame:
    """The arm profile's Concrete cell (k = 100 bound -111.9, an ELBO before training, a
    temperature by epoch) unless not ``concrete`` (then an ARM cell), and, with ``custom``, the
    options changed from the profile's, ``cells`` arm+custom Concrete cells of them (-107.5) by
    ``code``, their batch size, seed, dataset, binarization, last epoch, first ELBO or final
    temperature ``changed``."""
    def cell_rows(value: float, batch_size: int = 50, epoch: int = 1000, start: float = -566.4,
                  final: float = 0.5, **_: object) -> list[dict[str, object]]:
        return [{"param_group": "test", "batch_size": batch_size, "epoch": epoch,
                 "metric": "iw_bound_k100_at_best_valid", "value": value, "ci_low": value - 0.5,
                 "ci_high": value + 0.5, "n": 10000},
                {"param_group": "test", "batch_size": batch_size, "epoch": 0, "metric": "elbo",
                 "value": start, "n": 10000},
                *({"param_group": "train", "batch_size": batch_size, "epoch": step,
                   "metric": "temperature", "value": temperature}
                  for step, temperature in ((0, 1.0), (epoch, final)))]

    options = {"prior": "learned", "signal": "sampled-kl"}
    config = {"seed": 0, "dataset": "binarized-mnist", "binarization": "threshold",
              "model_options": options}
    frames = [stamp(cell_rows(-111.9), Cell("train", "bernoulli-vae",
                                            "gumbel-softmax" if concrete else "arm", config),
                    provenance("arm"))]
    for cell in range(cells if custom is not None else 0):
        mine = config | {"model_options": options | custom, "other": cell} | {
            key: changed[key] for key in ("seed", "dataset", "binarization") if key in changed}
        made = Provenance("cpu", "Test CPU (2 cores)", "2.0", 1, f"{code}0000-dirty", code,
                          "arm+custom", "2025-01-03T03:04:05+00:00")
        frames.append(stamp(cell_rows(-107.5, **changed),
                            Cell("train", "bernoulli-vae", "gumbel-softmax", mine), made))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize(("custom", "changed", "shown", "note"), [
    ({"signal": "analytic-kl"}, {}, True, None),
    ({"signal": "analytic-kl"}, {"code": "def456"}, True,
     "computed by code def456 (commit def4560-dirty), the arm profile's gumbel-softmax cell by "
     "abc123 (commit abc123)"),
    ({"signal": "analytic-kl", "architecture": "nonlinear"}, {}, False, None),
    ({"signal": "analytic-kl", "prior": "uniform"}, {}, False, None),
    ({"signal": "analytic-kl", "gone": 1}, {}, False, None),  # an option today's model lacks
    ({"signal": "analytic-kl"}, {"batch_size": 100}, False, "in minibatch size;"),
    ({"signal": "analytic-kl"}, {"seed": 1}, False, "in seed;"),
    ({"signal": "analytic-kl"}, {"binarization": "dynamic"}, False, "in binarization;"),
    ({"signal": "analytic-kl"}, {"dataset": "mnist"}, False, "in data;"),
    ({"signal": "analytic-kl"}, {"epoch": 500}, False, "in last epoch;"),
    ({"signal": "analytic-kl"}, {"final": 1.0}, False, "in temperature schedule;"),
    ({"signal": "analytic-kl"}, {"start": -566.5}, False, "in evaluation before training;"),
    ({"signal": "analytic-kl"}, {"cells": 2}, False, "several cells of those options"),
    ({"signal": "analytic-kl"}, {"concrete": False}, False, None),  # no profile cell beside
    (None, {}, False, None),
])
def test_a_cause_measured_with_one_model_option_changed_is_set_beside_its_figure(
    custom: dict[str, object] | None, changed: dict[str, object], shown: bool, note: str | None
) -> None:
    """Concrete's distance at ARM's protocol, measured: the same figure against the arm run
    with the KL in closed form and nothing else changed that the rows store (its network the
    profile cell's with that option; the same data, binarization, minibatch, seed, length,
    temperature schedule and evaluation before training), the code named where it is not the
    profile cell's; anything else, two such cells, or no profile cell beside it: not shown."""
    stored = arm_stored_rows(custom, **changed)
    table = comparison_table(prepare_rows(stored, pub.ARM_PROFILE), stored)
    rows = {row[1]: dict(zip(table.headers, row)) for row in table.rows}
    assert (CONCRETE_SIGNAL_CAUSE in rows) is shown
    assert (pub.ARM_CONCRETE_SIGNAL_CAUSE in table.notes) is shown
    if shown:
        cause = rows[CONCRETE_SIGNAL_CAUSE]
        assert cause["published"] == -107.3
        assert cause["ours"].mean == -107.5
        assert cause["ours - published (nats)"].mean == pytest.approx(-0.2)
    named = [text for text in table.notes if text.startswith(f"'{CONCRETE_SIGNAL_CAUSE}'")]
    assert [note in text for text in named] == ([True] if note else [])
    assert CONCRETE_SIGNAL_CAUSE not in {
        row[1] for row in comparison_table(prepare_rows(stored, pub.ARM_PROFILE)).rows}


def test_a_store_without_model_options_has_no_cause_row() -> None:
    """Rows stored before the model_options column cannot say their network: no cause row."""
    stored = arm_stored_rows({"signal": "analytic-kl"}).drop(columns="model_options")
    table = comparison_table(prepare_rows(stored, pub.ARM_PROFILE), stored)
    assert CONCRETE_SIGNAL_CAUSE not in {row[1] for row in table.rows}


def test_a_named_profiles_rows_are_reported_before_a_custom_runs_stored_beside_them() -> None:
    """A run with one option changed, stored in the named profile's folder after it, does not
    take over that folder's report when no profile is named."""
    stored = arm_stored_rows({"signal": "analytic-kl"})
    assert set(prepare_rows(stored)["profile"]) == {pub.ARM_PROFILE}
    custom = stored[stored["profile"] == "arm+custom"]
    assert set(prepare_rows(custom)["profile"]) == {"arm+custom"}


# Table 5.1's quantities, as the training cells store them ------------------------------------

SMALL_CATEGORICAL = {"hidden_sizes": "32", "n_vars": "4", "n_classes": "3"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(dataset="digits"), torch.device("cpu"))


def _evaluated(digits, estimator: str) -> pd.DataFrame:
    rows = training_rows(Setting("categorical-vae", SMALL_CATEGORICAL, seed=0), estimator, digits,
                         torch.device("cpu"), TrainConfig(epochs=1, learning_rate=3e-3),
                         EvalConfig(iw_samples=2, train_subset=300))
    return pd.DataFrame(rows)


def test_gumbel_rows_store_the_relaxed_reconstruction_and_every_vae_the_kl(digits):
    for estimator, relaxed in (("gumbel-softmax", True), ("st-gumbel", False),
                               ("target-prop", False)):
        rows = _evaluated(digits, estimator)
        for split in ("train", "valid", "test"):
            at = rows[(rows["param_group"] == split) & (rows["epoch"] == 1)].set_index("metric")
            assert at.loc["kl", "value"] == pytest.approx(
                at.loc["reconstruction_ll", "value"] - at.loc["elbo", "value"], abs=1e-9)
            assert at.loc["kl", "value"] > 0
            assert ("reconstruction_ll_relaxed" in at.index) == relaxed, (estimator, split)


def test_the_relaxed_reconstruction_decodes_the_concrete_sample_at_its_temperature(digits):
    """log p(x | y) with y = softmax((log π + g) / τ), the very Gumbel draws g of the relaxed
    forward pass, at the estimator's temperature; None for a straight-through estimator."""
    setting = Setting("categorical-vae", SMALL_CATEGORICAL, seed=0)
    model = build_model(setting, digits, torch.device("cpu"))
    x = (digits.train.images[:200] >= 0.5).float()
    y = digits.train.labels[:200]
    tau = 0.3
    estimator = build_estimator(
        Setting("categorical-vae", SMALL_CATEGORICAL, estimator_options={
            "gumbel-softmax": {"temperature": tau, "anneal_fraction": 0.0}}),
        "gumbel-softmax", digits, torch.device("cpu"))
    torch.manual_seed(7)
    found = relaxed_reconstruction(model, estimator)(x, y)["reconstruction_ll_relaxed"]
    torch.manual_seed(7)
    with torch.no_grad():
        log_pi = torch.log_softmax(model.encode(x), dim=-1)
        soft = torch.softmax((log_pi + gumbel_like(log_pi)) / tau, dim=-1)
        expected = -F.binary_cross_entropy_with_logits(model.decode(soft), x,
                                                       reduction="none").sum(-1)
    torch.testing.assert_close(found, expected)
    assert relaxed_reconstruction(model, build_estimator(setting, "st-gumbel", digits,
                                                         torch.device("cpu"))) is None


def test_an_iw_bound_on_the_first_examples_is_labelled_as_such_beside_the_whole_splits() -> None:
    """The arm profile's bound every 10 epochs is on the first 2,000 test images; its column
    says so, and the bounds at the best validation epoch (the whole split) have their own."""
    frames = []
    for metric, n, value in (("elbo", 10000, -116.0), ("iw_bound", 2000, -91.0),
                             ("iw_bound_k100_at_best_valid", 10000, -108.0),
                             ("iw_bound_k1000_at_best_valid", 10000, -107.0)):
        rows = [{"param_group": "test", "batch_size": 50, "epoch": 1000, "metric": metric,
                 "value": value, "n": n}]
        frames.append(stamp(rows, Cell("train", "bernoulli-vae", "arm", {"seed": 0}),
                            provenance(pub.ARM_PROFILE)))
    table = elbo_table(prepare_rows(pd.concat(frames, ignore_index=True)), "bernoulli-vae")
    row = dict(zip(table.headers, table.rows[0]))
    assert row["IW bound (first 2,000 of 10,000), test"].mean == -91.0
    assert row["IW bound k = 100 at best valid, test"].mean == -108.0
    assert row["IW bound k = 1000 at best valid, test"].mean == -107.0
    assert "IW bound, test" not in table.headers


@pytest.mark.parametrize(("profile", "dataset", "options", "shown"), [
    (pub.ARM_PROFILE, "binarized-mnist", None, ["linear"]),  # rows before model_options
    (pub.ARM_NONLINEAR_PROFILE, "binarized-mnist", None, ["nonlinear"]),
    ("arm+custom", "binarized-mnist", {"architecture": "nonlinear", "latent_dim": 200},
     ["nonlinear"]),
    ("arm+custom", "binarized-mnist", None, []),  # modified settings, the network not stored
    ("disarm-dynamic", "mnist", None, []),  # other data than Larochelle's static binarization
    (pub.COMPARED_PROFILE, "mnist", None, []),
])
def test_yin_and_zhous_columns_sit_beside_rows_of_their_network_and_data_only(
    profile: str, dataset: str, options: dict[str, object] | None, shown: list[str]
) -> None:
    """The training table puts Yin & Zhou's linear -log p(x) beside the linear network's rows
    on static binarized MNIST and the nonlinear beside the nonlinear's; rows that do not say
    their network, or of other data, get neither (nor its note)."""
    config = {"seed": 0, "dataset": dataset} | ({"model_options": options} if options else {})
    rows = [{"param_group": "test", "batch_size": 50, "epoch": 1000, "metric": "elbo",
             "value": -110.0, "n": 10000}]
    frame = stamp(rows, Cell("train", "bernoulli-vae", "arm", config), provenance(profile))
    table = elbo_table(prepare_rows(frame), "bernoulli-vae")
    columns = [network for network in ("linear", "nonlinear")
               if f"published -log p(x), {network} (Yin & Zhou 2019)" in table.headers]
    assert columns == shown
    assert any("Yin & Zhou" in note for note in table.notes) == bool(shown)
    if shown:
        row = dict(zip(table.headers, table.rows[0]))
        assert row[f"published -log p(x), {shown[0]} (Yin & Zhou 2019)"] == (
            pub.YIN_ZHOU_2019_NEG_LOG_LIKELIHOOD["arm"][shown[0]])


@pytest.mark.parametrize(("profile", "dataset", "options", "jang"), [
    (pub.ARM_PROFILE, "binarized-mnist", None, True),
    (pub.COMPARED_PROFILE, "mnist", None, True),
    (pub.ARM_NONLINEAR_PROFILE, "binarized-mnist", None, False),
    (pub.ARM_NONLINEAR_SCRIPT_PROFILE, "binarized-mnist", None, False),
    ("arm+custom", "binarized-mnist", {"architecture": "nonlinear", "latent_dim": 200}, False),
])
def test_jang_et_als_bernoulli_column_sits_beside_the_linear_network_only(
    profile: str, dataset: str, options: dict[str, object] | None, jang: bool
) -> None:
    """Jang et al.'s VAE (Bern.) figures are of their 784-200-784 network: beside the linear
    Bernoulli VAE's rows, not the nonlinear one's (two hidden layers each side)."""
    config = {"seed": 0, "dataset": dataset} | ({"model_options": options} if options else {})
    rows = [{"param_group": "test", "batch_size": 50, "epoch": 1000, "metric": "elbo",
             "value": -110.0, "n": 10000}]
    frame = stamp(rows, Cell("train", "bernoulli-vae", "gumbel-softmax", config),
                  provenance(profile))
    table = elbo_table(prepare_rows(frame), "bernoulli-vae")
    assert ("published -ELBO, their model (Jang et al. 2017)" in table.headers) == jang
    assert any("Jang, Gu & Poole" in note for note in table.notes) == jang


@pytest.mark.parametrize(("estimators", "jang"), [(["rloo"], False),
                                                  (["rloo", "gumbel-softmax"], True)])
def test_a_published_column_with_no_figure_beside_the_rows_is_left_out(
    estimators: list[str], jang: bool
) -> None:
    """DisARM's dynamic setting runs rloo, arm and disarm, none of which Jang et al. tabulate:
    their column, all dashes, is left out (with its note); beside a Gumbel-softmax row it stays.
    The profile's own note (DisARM's figures are curves only) is the table's either way."""
    frames = []
    for estimator in estimators:
        rows = [{"param_group": "test", "batch_size": 50, "epoch": 1000, "metric": "elbo",
                 "value": -113.0, "n": 10000}]
        cell = Cell("train", "bernoulli-vae", estimator,
                    {"seed": 0, "dataset": "mnist", "binarization": "dynamic"})
        frames.append(stamp(rows, cell, provenance(pub.DISARM_DYNAMIC_PROFILE)))
    table = elbo_table(prepare_rows(pd.concat(frames, ignore_index=True)), "bernoulli-vae")
    label = "published -ELBO, their model (Jang et al. 2017)"
    assert (label in table.headers) == jang
    assert any("Jang, Gu & Poole" in note for note in table.notes) == jang
    assert pub.DISARM_NOT_TABULATED in table.notes
    if jang:
        values = {row[0]: row[table.headers.index(label)] for row in table.rows}
        assert values == {"rloo": None,
                          "gumbel-softmax": pub.JANG_2017_VAE_BERN_NEG_ELBO["gumbel-softmax"]}


@pytest.mark.parametrize(("table_of", "model", "metric", "estimator", "note", "shown"), [
    (elbo_table, "categorical-vae", "elbo", "target-prop", "VAE (Cat.)", False),
    (elbo_table, "categorical-vae", "elbo", "gumbel-softmax", "VAE (Cat.)", True),
    (classification_table, "bayes-mlp", "error_rate", "reparam", "Figure 1", False),
    (classification_table, "bayes-mlp", "error_rate", "local-reparam", "Figure 1", True),
])
def test_a_published_columns_note_goes_with_it(
    table_of: Callable[[pd.DataFrame, str], Table | None], model: str, metric: str,
    estimator: str, note: str, shown: bool
) -> None:
    """Jang et al.'s categorical column and Kingma et al.'s Figure 1 column say what they are
    in a note that is the table's only while the column is (it has a figure beside a row)."""
    rows = [{"param_group": "test", "batch_size": 100, "epoch": 50, "metric": metric,
             "value": -100.0 if metric == "elbo" else 1.5, "n": 10000}]
    frame = stamp(rows, Cell("train", model, estimator, {"seed": 0}),
                  provenance(pub.COMPARED_PROFILE))
    table = table_of(prepare_rows(frame), model)
    assert any(note in text for text in table.notes) == shown
    assert any(header.startswith("published") and "(Thesis" not in header
               and "Nitta" not in header for header in table.headers) == shown


def chi_square_outcome(draws: np.ndarray) -> Outcome:
    """A sample variance of ``draws`` with its exact 95 % chi-square interval."""
    n = draws.size
    value = float(draws.var(ddof=1))
    low = (n - 1) * value / stats.chi2.ppf(0.975, n - 1)
    high = (n - 1) * value / stats.chi2.ppf(0.025, n - 1)
    return Outcome("ok", value, low, high)


def test_a_ratio_of_two_cells_covers_the_true_ratio_at_its_level() -> None:
    # Two independent variance estimates (1000 draws each, as a variance cell) with their own
    # intervals: the ratio's delta-method interval covers σ²_a / σ²_b in 95 % of 3000 trials
    # (binomial sd 0.4 %; tolerance 3 sd, Bonferroni for the two sides).
    generator = np.random.default_rng(0)
    trials, covered, truth = 3000, 0, 4.0 / 1.5
    for _ in range(trials):
        a = chi_square_outcome(generator.normal(0.0, 2.0, 1000))
        b = chi_square_outcome(generator.normal(0.0, 1.5 ** 0.5, 1000))
        found = ratio({0: a}, {0: b})[0]
        assert found.low < found.value < found.high
        covered += found.low <= truth <= found.high
    sd = (0.95 * 0.05 / trials) ** 0.5
    assert abs(covered / trials - 0.95) < 3 * sd


def test_one_seed_ratios_and_distances_carry_the_cells_intervals() -> None:
    rows = paper_rows()
    one_seed = rows[rows["seed"] == 0].copy()
    local = (one_seed["estimator"] == "local-reparam") & (one_seed["metric"] == "grad_variance")
    one_seed.loc[local, "ci_low"] = one_seed.loc[local, "value"] / 1.1
    one_seed.loc[local, "ci_high"] = one_seed.loc[local, "value"] * 1.1
    single = (one_seed["estimator"] == "reparam") & (one_seed["metric"] == "grad_variance")
    one_seed.loc[single, "ci_low"] = one_seed.loc[single, "value"] / 1.2
    one_seed.loc[single, "ci_high"] = one_seed.loc[single, "value"] * 1.2
    table = comparison_table(one_seed)
    assert table is not None
    row = {r[1]: dict(zip(table.headers, r)) for r in table.rows}[figure("reparam")]
    spread = math.hypot(math.log(1.1), math.log(1.2))
    assert row["ours"].mean == pytest.approx(5.0)
    assert row["ours"].low == pytest.approx(5.0 * math.exp(-spread))
    assert row["ours"].high == pytest.approx(5.0 * math.exp(spread))
    published = pub.KINGMA_2015_TABLE1["reparam"][("top", 10)] / pub.KINGMA_2015_TABLE1[
        "local-reparam"][("top", 10)]
    assert row["ours / published"].low == pytest.approx(row["ours"].low / published)
    assert "[" in display(row["ours"], "fixed3", part=INTERVAL)


def test_the_paired_single_over_separate_ratio_is_set_against_table_1_with_its_interval():
    paired = [{"param_group": group, "batch_size": size, "epoch": 10, "metric": "variance_ratio",
               "value": value, "ci_low": value - 0.01, "ci_high": value + 0.02, "n": 2000}
              for group, size, value in (("top", 100, 1.09), ("top", 1000, 1.9),
                                         ("bottom", 100, 1.03))]
    extra = stamp(paired, Cell("paired-variance", "bayes-mlp", "reparam", {"seed": 0}),
                  provenance(pub.COMPARED_PROFILE))
    rows = prepare_rows(pd.concat([paper_rows(), extra], ignore_index=True))
    table = comparison_table(rows)
    assert table is not None
    found = {r[1]: dict(zip(table.headers, r)) for r in table.rows}
    head = "single weight sample / separate weight samples, gradient variance (ours paired)"
    top = found[f"Table 1, top layer, 10 epochs: {head}"]
    published = pub.KINGMA_2015_TABLE1["reparam"][("top", 10)] / pub.KINGMA_2015_TABLE1[
        "reparam-per-example"][("top", 10)]
    assert top["published"] == pytest.approx(published)
    assert (top["ours"].mean, top["ours"].low, top["ours"].high) == pytest.approx(
        (1.09, 1.08, 1.11))
    assert top["ours / published"].mean == pytest.approx(1.09 / published)
    assert found[f"Table 1, bottom layer, 10 epochs: {head}"]["ours"].mean == pytest.approx(1.03)
    assert found[f"Table 1, top layer, 100 epochs: {head}"]["ours"] is None


def test_a_paired_ratio_at_another_checkpoint_than_its_epochs_variance_cells_is_named():
    """The paired cells of 10 epochs trained again on another machine (another digest): the
    comparison names both digests and machines; at one digest it says nothing."""
    def with_paired(digest: str, machine: str) -> list[str]:
        paired = [{"param_group": "top", "batch_size": 100, "epoch": 10,
                   "metric": "variance_ratio", "value": 1.09, "ci_low": 1.08, "ci_high": 1.11,
                   "n": 2000, "checkpoint": digest}]
        where = Provenance("cpu", machine, "2.0", 1, "abc123", "abc123", pub.COMPARED_PROFILE,
                           "2025-01-02T03:04:05+00:00")
        extra = stamp(paired, Cell("paired-variance", "bayes-mlp", "reparam", {"seed": 0}), where)
        rows = prepare_rows(pd.concat([paper_rows(), extra], ignore_index=True))
        table = comparison_table(rows)
        assert table is not None
        return [note for note in table.notes if note.startswith("Table 1's paired")]

    notes = with_paired("retrained", "Other CPU")
    assert len(notes) == 1
    assert ("10 ep, seed 0: paired at digest retraine (Other CPU), the variance cells at digest "
            "seed0 (Test CPU (2 cores))") in notes[0]
    assert with_paired("seed0", "Test CPU (2 cores)") == []


def test_a_swept_option_gets_its_table_ordered_by_value_with_the_default_named() -> None:
    recon = {"target-prop[beta_max=0.3]": -95.0, "target-prop": -90.0,
             "target-prop[beta_max=0.03]": -85.0}
    frames = []
    for seed in (0, 1, 2):
        for label, value in recon.items():
            training = [{"param_group": split, "batch_size": 100, "epoch": 50, "metric": metric,
                         "value": value - shift + 0.1 * seed + (20.0 if metric == "kl" else 0.0)}
                        for split, shift in (("train", 0.0), ("valid", 1.0))
                        for metric in ("reconstruction_ll", "kl")]
            frames.append(stamp(training, Cell("train", "categorical-vae", label,
                                               {"seed": seed, "dataset": "mnist"}),
                                provenance(pub.COMPARED_PROFILE)))
    gumbel = stamp([{"param_group": "valid", "batch_size": 100, "epoch": 50,
                     "metric": "reconstruction_ll_relaxed", "value": -80.0}],
                   Cell("train", "categorical-vae", "gumbel-softmax[temperature=0.5]",
                        {"seed": 0, "dataset": "mnist"}), provenance(pub.COMPARED_PROFILE))
    rows = prepare_rows(pd.concat([*frames, gumbel], ignore_index=True))
    tables = {t.name: t for t in sweep_tables(rows, "categorical-vae")}
    table = tables["training_sweep_categorical_vae_target_prop"]
    found = [dict(zip(table.headers, row)) for row in table.rows]
    assert [r["beta_max"] for r in found] == ["0.03", "0.1", "0.3"]
    assert not any("relaxed" in header for header in table.headers)  # gumbel's metric only
    assert [r["variant"] for r in found] == [
        "target-prop[beta_max=0.03]", "target-prop (default)", "target-prop[beta_max=0.3]"]
    valid = found[0]["recon. log-lik., valid"]
    assert valid.mean == pytest.approx(-86.0 + 0.1) and valid.n == 3
    assert found[1]["KL, train"].mean == pytest.approx(-70.0 + 0.1)
    column = table.headers.index("recon. log-lik., valid")
    assert table.marks[(0, column)].kind == "best"
    assert not any(key[1] == table.headers.index("KL, valid") for key in table.marks)
    # gumbel-softmax ran one variant only: no sweep
    assert set(tables) == {"training_sweep_categorical_vae_target_prop"}
