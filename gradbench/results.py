"""Tidy result rows, their provenance stamp, and a resumable store of finished cells.

Every figure gradbench measures is one row of a long table (``COLUMNS``). A *cell* is one model ×
estimator × setting; its rows are written atomically as one CSV file whose name carries the hash
of the cell's configuration, so an interrupted run resumes where it stopped: finished cells are
skipped, unfinished ones leave nothing behind, and ``force`` recomputes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import torch

from gradbench.estimators import ESTIMATORS, estimator_class

COLUMNS = [
    "experiment",
    "model",
    "estimator",
    "param_group",
    "batch_size",
    "epoch",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "status",
    "dataset",
    "extrapolated",
    "steps_timed",
    "seed",
    "device",
    "device_name",
    "torch_version",
    "torch_threads",
    "git_commit",
    "code_version",
    "estimates_elbo_gradient",
    "profile",
    "created_at",
    "config_hash",
    "cell_seconds",
    "peak_memory_bytes",
]
"""Columns of every result table; measurements fill the first ones, ``stamp`` the rest."""

TEXT_COLUMNS = {"code_version": str, "git_commit": str, "config_hash": str, "checkpoint": str}
"""Columns read as text even when a value looks like a number (an all-digit hash)."""

MEASURED_FIRST = ("torch_threads",)
"""Provenance columns a measurement may record itself (its rows' values win over the stamp's)."""

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
STATUS_FAILED = "failed"
"""A cell whose task failed after its retries: stored with its error, retried by a rerun."""
STATUS_SKIPPED = "skipped"
"""A cell not run here because its estimated time exceeds the profile's ``max_cell_hours`` on
this device: stored with the estimate and the reason, run by a rerun that allows it."""
UNFINISHED = frozenset({STATUS_FAILED, STATUS_SKIPPED})
"""Statuses of stored cells that a rerun computes."""
LOST_SCOPE = ("batch_size", "epoch")
"""Columns a cell's configuration may fix for all its rows (a variance cell: one minibatch size
at one checkpoint). A failed or skipped cell's row carries them, so a report marks only the
quantities that cell would have measured as lost, not the estimator's other cells."""


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the gradbench checkout (``-dirty`` if it has uncommitted changes), else
    'unknown'. Read once per process, as :func:`code_version` (every task stamps its rows)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def source_hash() -> str:
    """SHA-256 (first 12 hex digits) of the gradbench package's Python sources, paths included."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The code that makes rows: the git commit when the package's files are as committed, else
    ``COMMIT+src.HASH`` (uncommitted changes under gradbench/) or ``src.HASH`` (not a checkout),
    HASH = :func:`source_hash`. Read once per process."""
    package = Path(__file__).resolve().parent
    try:
        commit = _git(package, "rev-parse", "HEAD")
        dirty = _git(package, "status", "--porcelain", "--untracked-files=all", "--", ".")
    except (OSError, subprocess.CalledProcessError):
        return f"src.{source_hash()}"
    return f"{commit}+src.{source_hash()}" if dirty else commit


def device_name(device: torch.device) -> str:
    """A human-readable name of the device: the GPU's name, or the CPU's model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class Provenance:
    """Where and how rows were made; stamped on every row."""

    device: str
    device_name: str
    torch_version: str
    torch_threads: int
    git_commit: str
    code_version: str
    profile: str
    created_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    @classmethod
    def collect(cls, device: torch.device, profile: str) -> Provenance:
        """Read the provenance of the current process for ``device``."""
        return cls(
            device=device.type,
            device_name=device_name(device),
            torch_version=torch.__version__,
            torch_threads=torch.get_num_threads(),
            git_commit=git_commit(),
            code_version=code_version(),
            profile=profile,
        )


@dataclass(frozen=True)
class Cell:
    """One unit of work: an experiment on one model × estimator with one configuration."""

    experiment: str
    model: str
    estimator: str
    config: dict[str, Any]
    required: tuple[str, ...] = ()
    """Columns every measured row of the cell fills (not part of its hash): a stored cell
    without them (older rows, say a variance cell before the parameters' digest) is computed
    again, even where the store reuses stale cells."""

    @property
    def config_hash(self) -> str:
        """Hash of everything that defines the cell's figures (device and profile included)."""
        return config_hash(
            {"experiment": self.experiment, "model": self.model, "estimator": self.estimator}
            | self.config
        )

    @property
    def filename(self) -> str:
        """The cell's file, relative to the store's root."""
        return f"{self.experiment}/{self.model}__{self.estimator}__{self.config_hash}.csv"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file all at once or not at all: a temporary file beside it, then a rename.

    An interruption (Ctrl-C, a crash) leaves either the old file or none, never a partial one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=path.suffix)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 → the usual file mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_torch_save(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` through :func:`atomic_write` (checkpoints)."""
    atomic_write(path, lambda stream: torch.save(state, stream))


def stamp(
    rows: Iterable[dict[str, Any]],
    cell: Cell,
    provenance: Provenance,
    seconds: float = math.nan,
    peak_memory: float = math.nan,
) -> pd.DataFrame:
    """Rows of a cell as a DataFrame with every column of ``COLUMNS``, stamped with provenance,
    the seconds the cell took to compute (``cell_seconds``: ``all --dry-run`` estimates from
    it) and its peak device memory (``peak_memory_bytes``: on CUDA; NaN on the CPU). A failed or
    skipped row takes the :data:`LOST_SCOPE` values the cell's configuration fixes."""
    frame = pd.DataFrame(list(rows))
    known = cell.estimator.partition("[")[0] in ESTIMATORS
    stamped = {
        "experiment": cell.experiment,
        "model": cell.model,
        "estimator": cell.estimator,
        "estimates_elbo_gradient": (
            estimator_class(cell.estimator).estimates_elbo_gradient if known else None
        ),
        "seed": cell.config.get("seed"),
        "dataset": cell.config.get("dataset"),
        "config_hash": cell.config_hash,
        "cell_seconds": seconds,
        "peak_memory_bytes": peak_memory,
        **vars(provenance),
    }
    for column, value in stamped.items():
        if column in frame and column in MEASURED_FIRST:
            frame[column] = frame[column].fillna(value)
        else:
            frame[column] = value
    defaults = {"status": STATUS_OK, "extrapolated": False}
    for column in COLUMNS:
        if column not in frame:
            frame[column] = defaults.get(column)
    lost = frame["status"].isin(UNFINISHED)
    for column in LOST_SCOPE:
        if column in cell.config:
            frame[column] = frame[column].where(~lost | frame[column].notna(), cell.config[column])
    return frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]


class ResultStore:
    """A directory of finished cells, one CSV file each, written atomically.

    A stored cell made by other code (its rows' ``code_version`` differs from the running code's)
    is stale: :meth:`run` recomputes it unless ``reuse_stale``.
    """

    def __init__(self, root: str | os.PathLike[str], reuse_stale: bool = False) -> None:
        self.root = Path(root)
        self.reuse_stale = reuse_stale

    def path(self, cell: Cell) -> Path:
        """Where ``cell``'s rows are (or will be) stored."""
        return self.root / cell.filename

    def has(self, cell: Cell) -> bool:
        """True when the cell is finished and stored."""
        return self.path(cell).is_file()

    def write(self, cell: Cell, frame: pd.DataFrame) -> Path:
        """Store a cell's rows atomically (temporary file, then rename)."""
        target = self.path(cell)
        atomic_write(target, lambda stream: stream.write(frame.to_csv(index=False).encode()))
        return target

    def read(self, cell: Cell) -> pd.DataFrame | None:
        """The cell's stored rows, or None when it is not stored."""
        return read_cell(self.path(cell)) if self.has(cell) else None

    def stored(self, cell: Cell, provenance: Provenance) -> pd.DataFrame | None:
        """The cell's rows when it is finished: stored, not failed or skipped, its measured rows
        filling the cell's ``required`` columns, and made by the running code (or the store
        reuses stale cells); else None (the cell is to be computed)."""
        frame = self.read(cell)
        if frame is None or frame["status"].isin(UNFINISHED).any():
            return None
        measured = frame[frame["status"].isin([STATUS_OK, STATUS_DIVERGED])]
        if any(c not in frame or measured[c].isna().any() for c in cell.required):
            return None
        versions = set(frame["code_version"].dropna().astype(str))
        return frame if self.reuse_stale or versions == {provenance.code_version} else None

    def save(
        self,
        cell: Cell,
        rows: Iterable[dict[str, Any]],
        provenance: Provenance,
        seconds: float = math.nan,
        peak_memory: float = math.nan,
    ) -> pd.DataFrame:
        """Stamp and store a cell's rows (atomically); returns the stored frame."""
        frame = stamp(rows, cell, provenance, seconds, peak_memory)
        self.write(cell, frame)
        return frame

    def load(self, experiment: str | None = None) -> pd.DataFrame:
        """Every stored row (of one experiment, or all) as one DataFrame, in a stable order."""
        pattern = f"{experiment}/*.csv" if experiment else "*/*.csv"
        files = sorted(p for p in self.root.glob(pattern) if not p.name.startswith("."))
        if not files:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat([read_cell(p) for p in files], ignore_index=True)


def read_cell(path: Path) -> pd.DataFrame:
    """Read one stored cell."""
    return pd.read_csv(path, keep_default_na=True, dtype=TEXT_COLUMNS)
