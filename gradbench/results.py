"""Tidy result rows, their provenance stamp, and a resumable store of finished cells.

Every figure gradbench measures is one row of a long table (``COLUMNS``). A *cell* is one model ×
estimator × setting; its rows are written atomically as one CSV file whose name carries the hash
of the cell's configuration, so an interrupted run resumes where it stopped: finished cells are
skipped, unfinished ones leave nothing behind, and ``force`` recomputes.

A cell proves it is whole: beside ``NAME.csv`` its digest file ``NAME.csv.sha256`` (JSON: the
SHA-256 of the CSV's bytes, their length and the row count) is written first, then the CSV, each
atomically, so a CSV never stands without the digest of its contents. Reading a cell checks the
digest, then the schema (:func:`check_schema`: required columns, numbers where numbers belong,
known statuses, the rows' experiment that of the file's folder). A cell
written before digests existed is checked by its schema alone. A cell that fails is
:class:`CellDamaged`: :meth:`ResultStore.stored` moves it (CSV, digest, and a ``.reason`` file)
into ``RESULTS/quarantine/EXPERIMENT/``, kept, never deleted, and the run computes it again;
``gradbench report`` refuses to build over it and names it.

One writer per cell: a run claims a cell before computing it with a lock file
``EXPERIMENT/.NAME.csv.lock`` (created by ``os.link``, which fails when it exists, so exactly one
process holds it; it holds the owner's pid and host). A lock whose process has died on this host
is stale and taken over; :mod:`gradbench.execution.driver` skips a cell another live run holds
and collects its rows once that run has stored them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import torch

from gradbench.code_version import cell_stamp
from gradbench.estimators import ESTIMATORS, estimator_class
from gradbench.experiments.metrics import (
    ELBO,
    IW_BOUND,
    LOG_VARIANCE_SLOPE,
    RECONSTRUCTION_LL,
    RECONSTRUCTION_LL_RELAXED,
    SNR,
    SNR_SQUARED,
)

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
    "binarization",
    "model_options",
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

TEXT_COLUMNS = {"code_version": str, "git_commit": str, "config_hash": str, "checkpoint": str,
                "model_options": str}
"""Columns read as text even when a value looks like a number (an all-digit hash)."""

RESUMED_SECONDS = "resumed_seconds"
"""Column of a resumed cell's rows: the seconds earlier processes spent on it (up to their last
save), which :func:`stamp` adds to this process's in ``cell_seconds``."""

MEASURED_FIRST = ("torch_threads",)
"""Provenance columns a measurement may record itself (its rows' values win over the stamp's)."""

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
STATUS_FAILED = "failed"
"""A cell whose task failed after its retries: stored with its error, retried by a rerun."""
STATUS_SKIPPED = "skipped"
"""A cell not run here because its estimated time exceeds the profile's ``max_cell_hours`` on
this device: stored with the estimate and the reason, run by a rerun that allows it."""
STATUSES = frozenset({STATUS_OK, STATUS_DIVERGED, STATUS_FAILED, STATUS_SKIPPED})
"""Every status a stored row may have; any other is a damaged cell."""
UNFINISHED = frozenset({STATUS_FAILED, STATUS_SKIPPED})
"""Statuses of stored cells that a rerun computes."""
LOST_SCOPE = ("batch_size", "epoch")
"""Columns a cell's configuration may fix for all its rows (a variance cell: one minibatch size
at one checkpoint). A failed or skipped cell's row carries them, so a report marks only the
quantities that cell would have measured as lost, not the estimator's other cells."""


REQUIRED_TEXT = ("experiment", "model", "estimator", "metric", "status", "code_version",
                 "config_hash")
"""Columns every stored row fills with text (a cell missing one, or a row leaving one empty, is
damaged)."""
REQUIRED_NUMBERS = ("value",)
"""Columns every stored cell has, holding numbers (NaN allowed: a failed row's value)."""
NUMERIC_COLUMNS = ("value", "ci_low", "ci_high", "n", "batch_size", "epoch", "seed",
                   "steps_timed", "cell_seconds", "peak_memory_bytes")
"""Columns that hold numbers wherever a cell has them."""
INTEGER_COLUMNS = frozenset({"n", "batch_size", "epoch", "seed", "steps_timed"})
"""Numeric columns that hold counts: never infinite."""
UNDEFINED_ALLOWED = frozenset({SNR, SNR_SQUARED, LOG_VARIANCE_SLOPE})
"""Metrics whose value may be NaN in a finished row: a ratio over a variance that is zero (an
exact estimator's SNR) or a slope over fewer than two minibatch sizes. Any other NaN, and every
infinite value, makes its row ``diverged`` (:func:`stamp`)."""
BOUND_METRICS = frozenset({ELBO, IW_BOUND, RECONSTRUCTION_LL, RECONSTRUCTION_LL_RELAXED})
"""Per-example log-likelihood bounds (nats), checked for plausibility by :func:`stamp`."""
PLAUSIBLE_NATS_PER_DIMENSION = 100.0
"""Plausibility rule of a bound: |bound| ≤ 100 nats per data dimension D. A per-pixel
log-probability below −100 nats is a probability under e⁻¹⁰⁰ ≈ 4e−44, smaller than float32's
smallest normal number (1.2e−38, −87.3 nats), for every pixel at once (MNIST: 78,400 nats; the
uniform Bernoulli decoder scores D·log 2 ≈ 543 and trained VAEs about 100). A bound beyond
it (−7.1e28 after Adam at lr 3) is a diverged run, not a measurement: its row is ``diverged``."""
DIGEST_SUFFIX = ".sha256"
"""A cell's digest file: ``NAME.csv.sha256`` beside ``NAME.csv``."""
QUARANTINE = "quarantine"
"""The folder of the results store where damaged cells are moved (kept, never deleted)."""
LOCK_SUFFIX = ".lock"
WRITE_RETRIES = 3
"""Attempts of a cell's write before its rows are dumped elsewhere (:meth:`ResultStore.save`)."""


class CellDamaged(ValueError):
    """A stored cell that fails its digest or schema: its path and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"damaged result cell {path}: {reason}")
        self.path = path
        self.reason = reason


class StoreNotWritable(ValueError):
    """The results folder (or an experiment's subfolder) cannot be written."""


class RowsNotStored(RuntimeError):
    """A cell's rows could not be written to the store after retries; ``dumped`` is where they
    were written instead (None: nowhere)."""

    def __init__(self, message: str, dumped: Path | None) -> None:
        super().__init__(message)
        self.dumped = dumped


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
    """The commit of the gradbench checkout (:func:`checkout_commit` of this package). Read
    once per process, as :func:`code_version` (every task stamps its rows)."""
    return checkout_commit(Path(__file__).resolve().parent)


def checkout_commit(package: Path) -> str:
    """The commit of the git checkout holding ``package`` (a folder at its root), ``-dirty``
    appended if the package's files have uncommitted changes (rows and reports written into the
    checkout, outside the package, do not count); 'unknown' outside a checkout."""
    try:
        commit = _git(package.parent, "rev-parse", "HEAD")
        dirty = _git(package.parent, "status", "--porcelain", "--untracked-files=no", "--",
                     package.name)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


ROW_FREE_SOURCES = frozenset({"report", "commands", "cli.py", "__main__.py",
                              "execution/progress.py"})
"""The parts of the package that make no rows (the reports, the command line and the progress
lines), as folders or files relative to it: outside the code version, so that changing how a
report reads rows, or what a run prints while it runs, keeps the rows' cells current."""


def source_hash() -> str:
    """SHA-256 (first 12 hex digits) of the Python sources that make rows, paths included: the
    gradbench package less :data:`ROW_FREE_SOURCES`."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] in ROW_FREE_SOURCES or relative.as_posix() in ROW_FREE_SOURCES:
            continue
        digest.update(relative.as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The code that makes rows: ``src.HASH``, HASH = :func:`source_hash`, the same in a
    checkout, an installed copy and any commit that leaves those sources as they were (reports,
    docs, tests), so stored cells, resumable training states and checkpoints stay current across
    such commits; the commit itself is stamped beside it (:func:`git_commit`). Read once per
    process."""
    return f"src.{source_hash()}"


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
    A folder that another run removes between its creation and the temporary file's (an empty
    resume folder, cleaned up) is created again.
    """
    for attempt in range(WRITE_RETRIES):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-",
                                                 suffix=path.suffix)
            break
        except FileNotFoundError:
            if attempt == WRITE_RETRIES - 1:
                raise
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


def options_text(options: dict[str, Any] | None) -> str | None:
    """A cell's resolved model options as one canonical text (JSON, keys sorted), so that a row
    says which network it measured (``architecture``, widths, the prior...); None where the
    configuration has none (the catalogue)."""
    return None if options is None else json.dumps(options, sort_keys=True, default=str)


def row_options(text: object) -> dict[str, Any] | None:
    """The model options a row stored (:func:`options_text`); None for a row stored without
    them (older cells) or a cell whose configuration had none."""
    return json.loads(text) if isinstance(text, str) and text else None


def stamp(
    rows: Iterable[dict[str, Any]],
    cell: Cell,
    provenance: Provenance,
    seconds: float = math.nan,
    peak_memory: float = math.nan,
    finished_at: str | None = None,
    input_dim: int | None = None,
) -> pd.DataFrame:
    """Rows of a cell as a DataFrame with every column of ``COLUMNS``, stamped with provenance
    (``created_at``: ``finished_at``, the cell's own finish, where given; else the run's start),
    the seconds the cell took to compute (``cell_seconds``: ``seconds`` plus the rows'
    :data:`RESUMED_SECONDS` for a cell resumed from earlier processes; ``all --dry-run``
    estimates from it) and its peak device memory (``peak_memory_bytes``: on CUDA; NaN on the CPU). A failed or
    skipped row takes the :data:`LOST_SCOPE` values the cell's configuration fixes.

    A row said ``ok`` whose value is not a number (infinite, or NaN outside
    :data:`UNDEFINED_ALLOWED`) or, with the data's dimension ``input_dim`` known, a bound
    beyond :data:`PLAUSIBLE_NATS_PER_DIMENSION` · D is made ``diverged``, its reason in
    ``error`` (:func:`mark_diverged`)."""
    frame = pd.DataFrame(list(rows))
    if RESUMED_SECONDS in frame:
        seconds += float(frame[RESUMED_SECONDS].max())
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
        "binarization": cell.config.get("binarization"),
        "model_options": options_text(cell.config.get("model_options")),
        "config_hash": cell.config_hash,
        "cell_seconds": seconds,
        "peak_memory_bytes": peak_memory,
        **vars(provenance),
        **cell_stamp(provenance.code_version, cell.model, cell.estimator, cell.config),
        "created_at": finished_at or provenance.created_at,
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
    frame["status"] = frame["status"].fillna(STATUS_OK)
    lost = frame["status"].isin(UNFINISHED)
    for column in LOST_SCOPE:
        if column in cell.config:
            frame[column] = frame[column].where(~lost | frame[column].notna(), cell.config[column])
    frame = mark_diverged(frame, input_dim)
    return frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]


def mark_diverged(frame: pd.DataFrame, input_dim: int | None = None) -> pd.DataFrame:
    """``frame`` with every ``ok`` row whose value is not a plausible number made ``diverged``,
    the reason in its ``error`` column: an infinite value, a NaN where the metric is defined
    (not in :data:`UNDEFINED_ALLOWED`), or a bound (:data:`BOUND_METRICS`) with
    |value| > :data:`PLAUSIBLE_NATS_PER_DIMENSION` · ``input_dim``."""
    if frame.empty:
        return frame
    values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(float)
    ok = (frame["status"] == STATUS_OK).to_numpy()
    undefined_allowed = frame["metric"].isin(UNDEFINED_ALLOWED).to_numpy()
    infinite = ok & np.isinf(values)
    missing = ok & np.isnan(values) & ~undefined_allowed
    absurd = np.zeros(len(frame), dtype=bool)
    if input_dim is not None:
        bound = PLAUSIBLE_NATS_PER_DIMENSION * input_dim
        absurd = (ok & frame["metric"].isin(BOUND_METRICS).to_numpy() & np.isfinite(values)
                  & (np.abs(values) > bound))
    if not (infinite | missing | absurd).any():
        return frame
    frame = frame.copy()
    if "error" not in frame:
        frame["error"] = None
    frame["error"] = frame["error"].astype(object)
    reasons = {
        "the value is infinite": infinite,
        "the value is NaN": missing,
        f"|value| beyond {PLAUSIBLE_NATS_PER_DIMENSION:g} nats x {input_dim} dimensions": absurd,
    }
    for reason, rows in reasons.items():
        frame.loc[rows, "status"] = STATUS_DIVERGED
        frame.loc[rows, "error"] = reason
    return frame


def check_schema(frame: pd.DataFrame, path: Path) -> None:
    """Raise :class:`CellDamaged` unless ``frame`` (the rows of the cell file ``path``) has rows,
    the :data:`REQUIRED_TEXT` and :data:`REQUIRED_NUMBERS` columns, text in every required text
    cell, numbers (or nothing) in :data:`NUMERIC_COLUMNS`, statuses of :data:`STATUSES`, and
    the experiment of its folder (``EXPERIMENT/NAME.csv``)."""
    if frame.empty:
        raise CellDamaged(path, "no rows")
    missing = [c for c in (*REQUIRED_TEXT, *REQUIRED_NUMBERS) if c not in frame]
    if missing:
        raise CellDamaged(path, f"missing column(s) {', '.join(missing)}")
    for column in REQUIRED_TEXT:
        cells = frame[column].to_numpy(dtype=object)
        empty = [i for i, v in enumerate(cells) if pd.isna(v) or not str(v).strip()]
        if empty:
            raise CellDamaged(path, f"empty {column} in row {empty[0] + 2}")
    for column in NUMERIC_COLUMNS:
        if column not in frame:
            continue
        given = frame[column]
        if pd.api.types.is_numeric_dtype(given):
            numbers = given.to_numpy(dtype=float)
            wrong = np.zeros(len(given), dtype=bool)
        else:  # text where a number belongs (or numbers and text mixed)
            numbers = pd.to_numeric(given, errors="coerce").to_numpy(dtype=float)
            wrong = np.isnan(numbers) & given.notna().to_numpy()
        if column in INTEGER_COLUMNS:
            wrong |= np.isinf(numbers)
        if wrong.any():
            row = int(np.argmax(wrong))
            raise CellDamaged(path, f"not a number in column {column}, row {row + 2}: "
                                    f"{str(given.iloc[row])[:40]!r}")
    unknown = sorted({str(status) for status in frame["status"].unique()} - STATUSES)
    if unknown:
        raise CellDamaged(path, f"unknown status {unknown[0][:40]!r}; valid: "
                                f"{', '.join(sorted(STATUSES))}")
    experiments = {str(name) for name in frame["experiment"].unique()}
    if experiments != {path.parent.name}:
        raise CellDamaged(path, f"rows of experiment {sorted(experiments)[0][:40]!r} in folder "
                                f"{path.parent.name!r}")


def digest_path(path: Path) -> Path:
    """The digest file of the cell file ``path``."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def cell_digest(content: bytes, rows: int) -> dict[str, Any]:
    """What a cell's digest file records: the SHA-256 and length of its bytes, its row count."""
    return {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content), "rows": rows}


def read_cell(path: Path) -> pd.DataFrame:
    """Read one stored cell, checked: its digest (where it has one), then its schema.

    Raises :class:`CellDamaged` naming the file and what is wrong with it."""
    path = Path(path)
    content = path.read_bytes()
    recorded: dict[str, Any] | None = None
    if digest_path(path).is_file():
        try:
            recorded = json.loads(digest_path(path).read_text())
            expected, length, rows = recorded["sha256"], int(recorded["bytes"]), int(recorded["rows"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise CellDamaged(path, f"unreadable digest file {digest_path(path).name}") from None
        if hashlib.sha256(content).hexdigest() != expected:
            raise CellDamaged(path, f"contents do not match their digest ({len(content)} bytes, "
                                    f"{length} written)")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CellDamaged(path, f"not UTF-8 text (byte {error.start})") from None
    if not text.strip():
        raise CellDamaged(path, "empty file")
    try:
        frame = pd.read_csv(io.StringIO(text), keep_default_na=True, dtype=TEXT_COLUMNS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CellDamaged(path, f"not a CSV table: {first}") from None
    if recorded is not None and len(frame) != rows:
        raise CellDamaged(path, f"{len(frame)} rows, {rows} written")
    check_schema(frame, path)
    return frame


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class CellLock:
    """The lock file of one cell (module docstring): created atomically, holding pid and host."""

    path: Path

    def owner(self) -> dict[str, Any] | None:
        """The lock's owner (``pid``, ``host``), or None when nobody holds it."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"pid": -1, "host": "unknown"}

    def mine(self) -> bool:
        """True when this process holds the lock."""
        owner = self.owner()
        return owner is not None and owner.get("pid") == os.getpid() and \
            owner.get("host") == socket.gethostname()

    def stale(self) -> bool:
        """True when the lock's owner is a process of this host that has ended."""
        owner = self.owner()
        if owner is None or owner.get("host") != socket.gethostname():
            return False
        pid = owner.get("pid")
        return not isinstance(pid, int) or pid <= 0 or not _pid_alive(pid)

    def acquire(self) -> bool:
        """Take the lock; False when another live process holds it. A stale lock is taken
        over (one process at a time, through a second lock file that breaks it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".claim-")
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(owner, stream)
            for _ in range(2):
                try:
                    os.link(temporary, self.path)
                    return True
                except FileExistsError:
                    if self.mine():
                        return True
                    if not self.stale() or not self._break():
                        return False
            return False
        finally:
            Path(temporary).unlink(missing_ok=True)

    def _break(self) -> bool:
        """Remove a stale lock; True when this process did (no other is breaking it)."""
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        try:
            if self.stale():
                self.path.unlink(missing_ok=True)
            return True
        finally:
            breaker.unlink(missing_ok=True)

    def release(self) -> None:
        """Give the lock up (only if this process holds it)."""
        if self.mine():
            self.path.unlink(missing_ok=True)


class ResultStore:
    """A directory of finished cells, one CSV file each (and its digest), written atomically.

    A stored cell made by other code (its rows' ``code_version`` differs from the running code's)
    is stale: :meth:`run` recomputes it unless ``reuse_stale``. A damaged cell (module
    docstring) is set aside into :data:`QUARANTINE` and counts as not stored.
    """

    def __init__(self, root: str | os.PathLike[str], reuse_stale: bool = False) -> None:
        self.root = Path(root)
        self.reuse_stale = reuse_stale

    def path(self, cell: Cell) -> Path:
        """Where ``cell``'s rows are (or will be) stored."""
        return self.root / cell.filename

    def lock(self, cell: Cell) -> CellLock:
        """The lock file of ``cell`` (module docstring)."""
        path = self.path(cell)
        return CellLock(path.with_name(f".{path.name}{LOCK_SUFFIX}"))

    def has(self, cell: Cell) -> bool:
        """True when the cell is finished and stored."""
        return self.path(cell).is_file()

    def check_writable(self, experiments: Iterable[str] = ()) -> None:
        """Create the store's folder and each experiment's, and write and remove a file in each;
        :class:`StoreNotWritable` (one line naming the folder) when one cannot be written."""
        for folder in [self.root, *(self.root / e for e in sorted(set(experiments)))]:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
                os.close(handle)
                os.unlink(probe)
            except OSError as error:
                reason = error.strerror or type(error).__name__
                raise StoreNotWritable(
                    f"cannot write results to {str(folder)!r}: {reason}"
                ) from None

    def write(self, cell: Cell, frame: pd.DataFrame) -> Path:
        """Store a cell's rows: its digest file, then the CSV, each atomically (module
        docstring)."""
        target = self.path(cell)
        content = frame.to_csv(index=False).encode()
        digest = json.dumps(cell_digest(content, len(frame))).encode()
        atomic_write(digest_path(target), lambda stream: stream.write(digest))
        atomic_write(target, lambda stream: stream.write(content))
        return target

    def read(self, cell: Cell) -> pd.DataFrame | None:
        """The cell's stored rows, or None when it is not stored; CellDamaged when damaged."""
        return read_cell(self.path(cell)) if self.has(cell) else None

    def set_aside(self, damage: CellDamaged) -> Path:
        """Move a damaged cell (and its digest) into :data:`QUARANTINE` with a ``.reason`` file,
        say so on stderr; returns where it went. Nothing is deleted."""
        source = Path(damage.path)
        when = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        folder = self.root / QUARANTINE / source.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{when}__{source.name}"
        try:
            os.replace(source, target)
        except FileNotFoundError:  # another run set it aside first
            return target
        if digest_path(source).is_file():
            os.replace(digest_path(source), digest_path(target))
        target.with_name(target.name + ".reason").write_text(damage.reason + "\n")
        print(f"gradbench: {damage}; moved to {target}, to be computed again", file=sys.stderr)
        return target

    def stored(self, cell: Cell, provenance: Provenance) -> pd.DataFrame | None:
        """The cell's rows when it is finished: stored, whole (a damaged cell is set aside),
        not failed or skipped, its measured rows filling the cell's ``required`` columns, and
        made by the running code, the plugins it uses included (or the store reuses stale
        cells); else None (the cell is to be computed)."""
        try:
            frame = self.read(cell)
        except CellDamaged as damage:
            lock = self.lock(cell)
            if lock.owner() is None or lock.mine() or lock.stale():
                self.set_aside(damage)
            return None  # else another run is writing it: the driver collects it
        if frame is None or frame["status"].isin(UNFINISHED).any():
            return None
        measured = frame[frame["status"].isin([STATUS_OK, STATUS_DIVERGED])]
        if any(c not in frame or measured[c].isna().any() for c in cell.required):
            return None
        versions = set(frame["code_version"].dropna().astype(str))
        expected = cell_stamp(provenance.code_version, cell.model, cell.estimator, cell.config)
        return frame if self.reuse_stale or versions == {expected["code_version"]} else None

    def save(
        self,
        cell: Cell,
        rows: Iterable[dict[str, Any]],
        provenance: Provenance,
        seconds: float = math.nan,
        peak_memory: float = math.nan,
        input_dim: int | None = None,
    ) -> pd.DataFrame:
        """Stamp and store a cell's rows (atomically), dated now, when the cell finished; returns
        the stored frame.

        A write that fails is tried :data:`WRITE_RETRIES` times; then the stamped rows are
        written to a folder of the system's temporary directory and :class:`RowsNotStored`
        says where (the work is kept)."""
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        frame = stamp(rows, cell, provenance, seconds, peak_memory, finished, input_dim)
        error: OSError | None = None
        for attempt in range(WRITE_RETRIES):
            try:
                self.write(cell, frame)
                return frame
            except OSError as failure:
                error = failure
                time.sleep(0.1 * (attempt + 1))
        reason = (error.strerror if error is not None else None) or type(error).__name__
        dumped: Path | None = Path(tempfile.gettempdir()) / "gradbench-unsaved" / cell.filename
        try:
            atomic_write(dumped, lambda stream: stream.write(frame.to_csv(index=False).encode()))
        except OSError:
            dumped = None
        where = f"its rows are in {dumped}" if dumped else "its rows could not be kept anywhere"
        raise RowsNotStored(f"cannot write {self.path(cell)}: {reason}; {where}", dumped)

    def cell_files(self, experiment: str | None = None) -> list[Path]:
        """The stored cell files (of one experiment, or all), sorted; the quarantine apart."""
        pattern = f"{experiment}/*.csv" if experiment else "*/*.csv"
        return sorted(p for p in self.root.glob(pattern)
                      if not p.name.startswith(".") and p.parent.name != QUARANTINE)

    def load(self, experiment: str | None = None, refuse_damaged: bool = False) -> pd.DataFrame:
        """Every stored row (of one experiment, or all) as one DataFrame, in a stable order.

        A damaged cell raises :class:`CellDamaged` with ``refuse_damaged`` (``report``), else
        is set aside (:meth:`set_aside`) and left out."""
        frames = []
        for path in self.cell_files(experiment):
            try:
                frames.append(read_cell(path))
            except CellDamaged as damage:
                if refuse_damaged:
                    raise
                self.set_aside(damage)
        if not frames:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat(frames, ignore_index=True)
