"""``all --executor ray`` on a real two-node Ray cluster on 127.0.0.1, against the in-process run.

The module starts a head node and a second worker node with ``ray start`` (one CPU each; ``ray
stop --force`` ends them, and with them any other Ray on the machine), runs
the smoke profile with seeds 0 and 1 on it, and checks that every row equals the in-process
run's (timings excepted: the timing cells and each training epoch's wall-clock). Another test
kills a worker process while it runs a cell and checks that the run still finishes with every
cell, none failed, each equal to the in-process run's. Skipped when Ray is not installed
(``pip install -e ".[ray]"``; CI installs it).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradbench.cli import main
from gradbench.results import STATUS_FAILED, ResultStore, read_cell

pytest.importorskip("ray")

RAY = str(Path(sys.executable).with_name("ray"))
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
"""Ray's token authentication, on for every process of this cluster with a token of its own:
the nodes and the driver (a subprocess: Ray reads these when it is imported) get it from the
environment, so nothing depends on ~/.ray of the machine."""
ENV = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"} | AUTH
UNTIMED = {"created_at", "cell_seconds"}
"""Columns that differ between any two runs: when a row was made and how long its cell took."""
SMOKE = ("--profile", "smoke", "--quiet", "--formats", "md")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray(*args: str) -> None:
    subprocess.run([RAY, *args], check=True, env=ENV, capture_output=True, timeout=180)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node and a second node, one CPU each, on 127.0.0.1; stopped afterwards."""
    address = f"127.0.0.1:{_free_port()}"
    _ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", address.split(":")[1],
         "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats")
    try:
        _ray("start", "--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
             "--disable-usage-stats")
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], env=ENV, capture_output=True, timeout=180)


def assert_same_rows(expected: Path, actual: Path) -> int:
    """Every stored cell of ``expected`` is in ``actual`` with the same rows, timings excepted;
    returns the number of cells compared."""
    cells = sorted(p.relative_to(expected) for p in expected.glob("*/*.csv"))
    assert cells == sorted(p.relative_to(actual) for p in actual.glob("*/*.csv"))
    compared = 0
    for cell in cells:
        if cell.parts[0] == "timing":
            continue
        ours, theirs = read_cell(expected / cell), read_cell(actual / cell)
        ours = ours[ours["metric"] != "wall_clock_s"].reset_index(drop=True)
        theirs = theirs[theirs["metric"] != "wall_clock_s"].reset_index(drop=True)
        columns = [c for c in ours.columns if c not in UNTIMED]
        assert list(theirs.columns) == list(ours.columns), cell
        assert ours[columns].equals(theirs[columns]), cell
        compared += 1
    return compared


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke profile with seeds 0 and 1, run in this process."""
    root = tmp_path_factory.mktemp("in-process")
    assert main(["all", *SMOKE, "--seeds", "0,1", "--executor", "in-process",
                 "--results", str(root / "results"),
                 "--out", str(root / "reports")]) == 0
    return root / "results"


def test_a_two_node_cluster_reproduces_the_in_process_rows(
    cluster: str, in_process: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "gradbench", "all", *SMOKE, "--seeds", "0,1", "--executor", "ray",
         "--ray-address", cluster, "--results", str(results), "--out", str(tmp_path / "reports")],
        env=ENV, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr
    rows = ResultStore(results).load()
    assert set(rows["seed"].dropna().astype(int)) == {0, 1}
    assert STATUS_FAILED not in set(rows["status"])
    assert assert_same_rows(in_process, results) > 400


def _running_cells() -> list[int]:
    """Process ids of Ray workers running a gradbench cell now."""
    found = subprocess.run(["pgrep", "-f", "ray::run_remote"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def test_a_killed_worker_loses_nothing_and_the_run_finishes(
    cluster: str, in_process: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "gradbench", "all", *SMOKE, "--seeds", "0,1", "--executor",
            "ray", "--ray-address", cluster, "--models", "gaussian-vae,bernoulli-vae",
            "--experiments", "variance,train", "--results", str(results),
            "--out", str(tmp_path / "reports")]
    run = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and run.poll() is None and time.monotonic() < deadline:
        stored = list(results.glob("*/*.csv"))
        workers = _running_cells()
        if len(stored) >= 5 and workers:
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.02)
    out, err = run.communicate(timeout=600)
    assert killed is not None, "no worker was caught running a cell"
    assert run.returncode == 0, err
    assert "stored as failed rows" not in out  # the driver's summary lists no failed cell
    rows = ResultStore(results).load()
    assert STATUS_FAILED not in set(rows["status"])
    rows = rows[rows["experiment"].isin(["variance", "train"])]
    expected = ResultStore(in_process).load()
    wanted = expected[expected["model"].isin(["gaussian-vae", "bernoulli-vae"])
                      & expected["experiment"].isin(["variance", "train"])]
    assert set(rows["config_hash"]) == set(wanted["config_hash"])  # every cell, none lost
    for cell in [*results.glob("variance/*.csv"), *results.glob("train/*.csv")]:
        ours = read_cell(in_process / cell.relative_to(results))
        theirs = read_cell(cell)
        ours = ours[ours["metric"] != "wall_clock_s"].reset_index(drop=True)
        theirs = theirs[theirs["metric"] != "wall_clock_s"].reset_index(drop=True)
        columns = [c for c in ours.columns if c not in UNTIMED]
        assert ours[columns].equals(theirs[columns]), cell
