"""asv: grid throughput, an embedded Ray with 2 workers against this process.

The grid is ``GRID_CELLS`` training cells run through :func:`gradbench.api.run` (gaussian-vae
at the profile's sizes, the reparameterization estimator, one seed per cell), each ``epochs``
long: a fraction of a second
at the ``fast`` profile, at least 10 s at ``full`` (the paper's 784-500-20 network on MNIST, one
torch thread per cell). ``setup`` runs the grid once per executor into a fresh store. Ray is
started, and its workers have imported gradbench, before the clock starts
(``RayExecutor.warm_up``; its seconds are ``track_ray_startup_seconds``, a fixed cost that a grid
of hours amortises); the data's transfer to each worker is timed. ``track_ray_speedup`` is the
in-process seconds over Ray's (the goal on 2 cores: ≥ 1.7), ``track_*_cells_per_second`` the
throughputs.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from dataclasses import replace

import torch

from gradbench import api
from gradbench.execution.driver import Executor
from gradbench.execution.in_process import InProcessExecutor
from gradbench.execution.ray_executor import RayExecutor
from gradbench.profiles import PAPER

from . import common

GRID_CELLS = 8
WORKERS = 2
EPOCHS = {"fast": 2, "full": 3}
"""Epochs per cell: at ``full`` one epoch of the paper's Gaussian VAE on 50,000 images takes
about 5 s on one thread, so a cell takes more than 10 s."""


def run_grid(executor: Executor) -> float:
    """Seconds to run the grid through :func:`gradbench.api.run` on ``executor`` into a fresh
    store (the run's planning included: a fixed cost beside the cells)."""
    bench = common.bench_profile()
    options = bench.model_options.get("gaussian-vae", {})
    profile = replace(PAPER, model_options={"gaussian-vae": options})
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        result = api.run(
            profile, models=("gaussian-vae",), estimators=("reparam",),
            seeds=tuple(range(GRID_CELLS)), experiments=("train",), dataset=bench.dataset,
            data_dir=common.shared_data_dir(bench.dataset) if bench.dataset == "mnist" else None,
            device=str(common.bench_device()), train_epochs=EPOCHS[bench.name],
            train_batch_size=bench.batch_size, eval_samples=1, eval_iw_samples=1,
            eval_train_subset=100, torch_threads=1, executor=executor, results=root,
            report=False, verbose=False, progress=False,
        )
        seconds = time.perf_counter() - start
    if result.failed or result.computed != GRID_CELLS + 1:  # and the catalogue's cell
        raise RuntimeError(f"grid did not finish: {result.failed}")
    return seconds


class GridThroughput:
    """Cells per second in this process (one thread) and on an embedded Ray with 2 workers."""

    timeout = 3600.0
    number = 1
    repeat = 1

    def setup(self) -> None:
        if importlib.util.find_spec("ray") is None:
            raise NotImplementedError("Ray is not installed (pip install -e '.[ray]')")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.in_process = run_grid(InProcessExecutor())
        finally:
            torch.set_num_threads(threads)
        executor = RayExecutor(jobs=WORKERS, threads=1)
        start = time.perf_counter()
        executor.warm_up()
        self.ray_startup = time.perf_counter() - start
        try:
            self.ray = run_grid(executor)
        finally:
            import ray

            ray.shutdown()

    def track_ray_speedup(self) -> float:
        return self.in_process / self.ray

    def track_in_process_cells_per_second(self) -> float:
        return GRID_CELLS / self.in_process

    def track_ray_cells_per_second(self) -> float:
        return GRID_CELLS / self.ray

    def track_ray_startup_seconds(self) -> float:
        return self.ray_startup

    track_ray_speedup.unit = "x"  # type: ignore[attr-defined]
    track_ray_startup_seconds.unit = "seconds"  # type: ignore[attr-defined]
