"""``gradbench device-check``: two devices' rows compared within their intervals."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from gradbench import device_check
from gradbench.cli import main


def _row(metric: str, value: float, half: float | None, experiment: str = "variance") -> dict:
    low, high = (math.nan, math.nan) if half is None else (value - half, value + half)
    return {"experiment": experiment, "model": "m", "estimator": "e", "seed": 0, "batch_size": 10,
            "epoch": 1, "param_group": "all", "metric": metric, "value": value, "ci_low": low,
            "ci_high": high, "status": "ok"}


def test_statistics_agree_when_their_intervals_overlap():
    reference = pd.DataFrame([
        _row("grad_variance", 1.0, 0.1), _row("snr", 2.0, 0.2), _row("count", 5.0, None),
        _row("seconds_per_epoch", 3.0, 0.1, "timing"),
    ])
    other = pd.DataFrame([
        _row("grad_variance", 1.19, 0.1),  # |Δ| = 0.19 ≤ 0.2: overlap
        _row("snr", 2.5, 0.2),  # |Δ| = 0.5 > 0.4: disagree
        _row("count", 5.0, None),  # no interval: equal
        _row("seconds_per_epoch", 1.5, 0.1, "timing"),  # timings are not compared
    ])
    statistics = device_check.compare(reference, other)
    assert dict(zip(statistics["metric"], statistics["agrees"])) == {
        "grad_variance": True, "snr": False, "count": True
    }
    assert not device_check.passes(statistics)  # 1 of 3 disagrees
    assert device_check.passes(statistics[statistics["metric"] != "snr"])
    timings = device_check.timing_ratios(reference, other)
    assert timings["speed_up"].tolist() == [2.0]
    other.loc[2, "value"] = 5.1  # a value without interval must be equal
    assert not device_check.compare(reference, other)["agrees"].iloc[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_without_cuda_the_check_is_skipped_cleanly(tmp_path, capsys):
    assert main(["device-check", "--results", str(tmp_path)]) == 0
    assert "skipped: no CUDA device" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_cpu_against_cpu_agrees_row_for_row(tmp_path, capsys):
    """The whole path on the CPU twice: every statistic agrees (the same numbers)."""
    status = main(["device-check", "--device", "cpu", "--results", str(tmp_path),
                   "--models", "gaussian-vae", "--experiments", "variance,train",
                   "--estimators", "reparam,rloo"])
    out = capsys.readouterr().out
    assert status == 0, out
    statistics = pd.read_csv(tmp_path / "statistics.csv")
    assert len(statistics) > 50 and statistics["agrees"].all()
    assert {"variance", "train"} <= set(statistics["experiment"])
    assert (statistics["value_ref"] == statistics["value_other"]).all()
