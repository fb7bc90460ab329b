"""Tasks on Ray: an embedded Ray on this machine, or an existing cluster (``ray start``).

Each task asks for its resources (one GPU per cell on CUDA, else its CPU cores; a timing cell a
whole node, so that nothing contends with it) and sets torch's threads to the cores it holds.
Whole-node tasks are handed to Ray one at a time when nothing else runs or waits to
(:func:`_submittable`).
The data go to the object store once, and each worker unpickles them once per run and keeps
them for the tasks that follow; an intermediate result (a checkpoint) travels from the
task that made it to the tasks that need it through the object store, never a shared disk. The
driver alone writes the results store (:class:`gradbench.execution.driver.Driver`). A task whose
worker dies or that raises is retried by Ray (``retries`` times), then stored as failed, and the
run goes on. Install with ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradbench.data import Dataset
from gradbench.device import peak_memory_bytes, reset_peak_memory, torch_threads
from gradbench.execution.driver import POLL_SECONDS, Driver, Failure, Held, Outcome, run_here
from gradbench.execution.schedule import Schedule
from gradbench.execution.task import Context, Task
from gradbench.results import Provenance

LOCAL = "local"
"""``--ray-address local``: start an embedded Ray on this machine for the run."""

RETRIES = 2
"""Ray retries of a task whose worker died or that raised, before it is stored as failed."""

SCRATCH = Path(tempfile.gettempdir()) / "gradbench-scratch"
"""A worker's folder for resume files of unfinished training cells (its own disk)."""


RAY_ANSWER_SECONDS = 15.0
"""How long a Ray address (HOST:PORT) has to accept a connection before the run is refused."""


class RayUnavailable(ValueError):
    """``--executor ray`` without Ray installed, or a cluster that cannot be reached."""


def validate_ray_address(address: str, timeout_s: float = RAY_ANSWER_SECONDS) -> str:
    """``address`` when it is ``local``, ``auto`` (Ray finds its running cluster), or a
    ``[ray://]HOST:PORT`` that accepts a TCP connection within ``timeout_s``; else
    RayUnavailable (one line, exit 2), before any work: Ray itself retries an address that does
    not answer for minutes."""
    if address in (LOCAL, "auto"):
        return address
    host, colon, port_text = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RayUnavailable(f"bad --ray-address {address!r}; expected local, auto, HOST:PORT or "
                             "ray://HOST:PORT with a port in 1..65535")
    try:
        socket.create_connection((host, int(port_text)), timeout=timeout_s).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise RayUnavailable(
            f"Ray at {address!r} does not answer within {timeout_s:g} s: {reason}"
        ) from None
    return address


def connect_within(ray: Any, address: str, timeout_s: float) -> None:
    """``ray.init(address=...)``, given ``timeout_s`` to connect: Ray retries a cluster that
    accepts the connection but does not answer (behind a proxy) for minutes; past the time it
    is RayUnavailable. The attempt goes on in a daemon thread, which the exit ends."""
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            outcome.append(error)

    attempt = threading.Thread(target=connect, daemon=True, name="ray-connect")
    attempt.start()
    attempt.join(timeout_s)
    if not outcome:
        raise RayUnavailable(f"Ray at {address!r} does not answer within {timeout_s:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def import_ray() -> Any:
    """The ``ray`` module; RayUnavailable (one line, exit 2) when it is not installed."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "--executor ray needs Ray: pip install -e \".[ray]\" (or pip install 'ray[default]')"
        ) from None
    return ray


_WORKER_DATA: dict[tuple[str, str], Dataset] = {}
"""A worker's copy of the run's data on its device, by object id and device: fetched and
unpickled by the worker's first task, then kept for the tasks that follow (one run's at most)."""


def worker_dataset(reference: Any, device: torch.device) -> Dataset:
    """The dataset behind ``reference`` (an object ref) on ``device``, from this worker's cache."""
    key = (reference.hex(), str(device))
    if key not in _WORKER_DATA:
        import ray

        _WORKER_DATA.clear()
        _WORKER_DATA[key] = ray.get(reference).to(device)
    return _WORKER_DATA[key]


def run_remote(
    run: Any, data: list[Any], device: str, threads: int | None, profile: str, *needed: Any
) -> tuple[Any, Provenance, tuple[float, float]]:
    """A task's body in a Ray worker: the data (``data``: [its object ref], unresolved, so that
    the worker's cached copy serves every task after its first) on the worker's device, torch's
    threads set to the task's cores; returns (result, the worker's provenance, (seconds, peak
    device memory)). Exceptions propagate, so that Ray retries them."""
    target = torch.device(device)
    context = Context(worker_dataset(data[0], target), target, SCRATCH)
    with torch_threads(threads):
        reset_peak_memory(target)
        start = time.perf_counter()
        result = run(context, *needed)
        seconds = time.perf_counter() - start
        provenance = Provenance.collect(target, profile)
    return result, provenance, (seconds, peak_memory_bytes(target))


@dataclass
class RayExecutor:
    """Runs tasks on Ray at ``address`` (:data:`LOCAL`: an embedded Ray with ``jobs`` CPUs).

    ``threads``: torch threads per task (None: the cores it holds). ``keep_running``: leave
    the connection (an embedded Ray: Ray itself) up after a run, for the next (the caller
    ends it with ``ray.shutdown()``).
    """

    address: str = LOCAL
    jobs: int | None = None
    threads: int | None = None
    retries: int = RETRIES
    keep_running: bool = False
    name: str = "ray"

    def start(self) -> Any:
        """Connect to the cluster (or start the embedded Ray) for this run; RayUnavailable when
        it cannot be reached. The driver disconnects when the run ends, unless ``keep_running``:
        then the connection stays for the next run, which reuses it."""
        ray = import_ray()
        if ray.is_initialized():
            if self.keep_running:
                return ray
            ray.shutdown()
        try:
            if self.address == LOCAL:
                ray.init(num_cpus=self.jobs, include_dashboard=False, logging_level="ERROR",
                         log_to_driver=False)
            else:
                connect_within(ray, self.address, RAY_ANSWER_SECONDS)
        except (ConnectionError, RuntimeError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise RayUnavailable(f"cannot reach Ray at {self.address!r}: {first}") from None
        return ray

    def node_cpus(self, ray: Any) -> int:
        """The cores of the smallest live node: what a whole-node (timing) task asks for."""
        cpus = [int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n.get("Alive")]
        return max(1, min(cpus, default=1))

    def warm_up(self) -> None:
        """Start Ray (kept running) and one worker per CPU with gradbench imported: what a
        benchmark does before its clock starts, so that it times the grid, not Ray's start."""
        self.keep_running = True
        ray = self.start()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        ready = ray.remote(num_cpus=1)(_import_measurements)
        ray.get([ready.remote() for _ in range(cpus)])

    def execute(self, schedule: Schedule, driver: Driver) -> None:
        ray = self.start()
        try:
            self._execute(ray, schedule, driver)
        finally:
            if not self.keep_running:
                ray.shutdown()

    def node_memory(self, ray: Any) -> int:
        """Ray's memory resource of the smallest live node, in bytes (0: none reported)."""
        memory = [int(n["Resources"].get("memory", 0)) for n in ray.nodes() if n.get("Alive")]
        return min(memory, default=0)

    def _options(
        self, task: Task, whole_node: int, device: str, node_memory: int = 0
    ) -> dict[str, Any]:
        """Ray options of a task: its cores (all of a node's for a whole-node task), its GPUs on
        CUDA and, on the CPU, the host memory it declares (capped at the smallest node's, so that
        a task larger than any node still runs, alone): Ray then runs no two tasks together
        whose memory exceeds a node's, where two of the paper's weight-noise MLP variance cells
        (11.6 GB each) on a 24 GB node were killed by Ray's memory monitor and retried without
        end."""
        cpus = whole_node if task.resources.whole_node else task.resources.cpus
        gpus = task.resources.gpus if device == "cuda" else 0
        options = {"num_cpus": cpus, "num_gpus": gpus, "num_returns": 3,
                   "max_retries": self.retries, "retry_exceptions": True}
        if device != "cuda" and task.resources.memory_bytes and node_memory:
            options["memory"] = min(task.resources.memory_bytes, node_memory)
        return options

    def _execute(self, ray: Any, schedule: Schedule, driver: Driver) -> None:
        context = driver.context
        device = context.device.type
        dataset = ray.put(context.dataset.to(torch.device("cpu")))
        remote = ray.remote(run_remote)
        whole_node = self.node_cpus(ray)
        node_memory = self.node_memory(ray)
        profile = driver.provenance.profile
        values: dict[str, Any] = dict(schedule.stored)  # key → frame, object ref or Failure
        uses = Counter(key for task in schedule.tasks for key in task.needs)
        waiting = list(schedule.tasks)
        running: dict[Any, tuple[Task, Any, Any]] = {}
        elsewhere: list[Task] = []  # cells another run holds (Driver.claim)
        while waiting or running or elsewhere:
            ready = _submittable(
                [t for t in waiting if all(key in values for key in t.needs)],
                [task for task, _, _ in running.values()],
            )
            for task in ready:
                waiting.remove(task)
                claimed = driver.claim(task)
                if claimed is Held.ELSEWHERE:
                    elsewhere.append(task)
                    continue
                if claimed is not None:  # another run stored it meanwhile
                    values[task.key] = claimed
                    _release(task, uses, values)
                    continue
                needed = [values[key] for key in task.needs]
                if task.on_driver or any(isinstance(v, Failure) for v in needed):
                    local = [ray.get(v) if isinstance(v, ray.ObjectRef) else v for v in needed]
                    value = driver.finish(task, run_here(task, context, local))
                    values[task.key] = (
                        ray.put(value)
                        if task.cell is None and not isinstance(value, Failure)
                        else value
                    )
                    _release(task, uses, values)
                    continue
                threads = self.threads or task.resources.cpus
                options = self._options(task, whole_node, device, node_memory)
                refs = remote.options(**options).remote(
                    task.run, [dataset], device, threads, profile, *needed
                )
                running[refs[0]] = (task, refs[1], refs[2])
            if elsewhere:
                _settle(elsewhere, waiting, values, uses, driver)
            if not running:
                if elsewhere:
                    time.sleep(POLL_SECONDS)
                elif waiting and not ready:
                    raise RuntimeError("tasks wait on results that no task makes")
                continue
            done, _ = ray.wait(list(running), num_returns=1,
                               timeout=POLL_SECONDS if elsewhere else None)
            if not done:
                continue
            task, provenance_ref, measured_ref = running.pop(done[0])
            try:
                result = ray.get(done[0])
                outcome = Outcome(result, ray.get(provenance_ref), *ray.get(measured_ref))
            except Exception as error:  # noqa: BLE001 - Ray's retries are spent: a failed cell
                outcome = Outcome(Failure(_error_line(error)))
            value = driver.finish(task, outcome)
            keep_ref = task.cell is None and not isinstance(value, Failure)
            values[task.key] = done[0] if keep_ref else value
            _release(task, uses, values)

    def __post_init__(self) -> None:
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"--jobs must be positive, got {self.jobs}")


def _submittable(ready: list[Task], running: list[Task]) -> list[Task]:
    """The ready tasks to hand to Ray now. A whole-node task (timing) is held back until nothing
    else runs or is ready, then handed over alone, and nothing else is handed over while it
    runs: it could not share the node anyway, and a pending whole-node request beside
    one-core tasks left a core idle about a third of the time (measured: 2 workers were
    busy 1.3 of 2 on the quick profile, 1.9 without timing cells). Intermediate tasks
    (checkpoints) are handed over before cells: Ray starts tasks in the order they come, and
    a checkpoint is the start of a chain of cells (the one at 100 epochs takes longer than most
    cells at 10 together)."""
    if any(task.resources.whole_node for task in running):
        return []
    others = [t for t in ready if not t.resources.whole_node or t.on_driver]
    others.sort(key=lambda task: task.cell is not None)
    if others or running:
        return others
    return [t for t in ready if t.resources.whole_node][:1]


def _settle(elsewhere: list[Task], waiting: list[Task], values: dict[str, Any], uses: Counter,
            driver: Driver) -> None:
    """Collect the cells another run has finished (:meth:`Driver.collect`); one it left
    unusable goes back to ``waiting``, to be claimed and run here."""
    for task in list(elsewhere):
        found = driver.collect(task)
        if found is Held.ELSEWHERE:
            continue
        elsewhere.remove(task)
        if found is None:
            waiting.append(task)
        else:
            values[task.key] = found
            _release(task, uses, values)


def _import_measurements() -> None:
    """A worker's warm-up: the measurement modules' imports (torch among them)."""
    import gradbench.measure.bias
    import gradbench.measure.training
    import gradbench.measure.variance  # noqa: F401


def _release(task: Task, uses: Counter, values: dict[str, Any]) -> None:
    """Drop what ``task`` needed once no waiting task needs it (its object can be freed)."""
    for key in task.needs:
        uses[key] -= 1
        if not uses[key]:
            del values[key]


def _error_line(error: BaseException) -> str:
    """One line naming what went wrong in a Ray task (its cause's type and first line)."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    message = next((line for line in text if line.strip() and "Traceback" not in line), "")
    return f"{type(cause).__name__}: {message}"[:500]
