"""Datasets, binarization and download.

Every model in gradbench trains on binarized images, as the papers it reproduces do.

The registry
    Every dataset is a :class:`DatasetSource` class registered by ``@register_dataset`` under its
    name: ``mnist``, ``fashion-mnist`` and ``digits`` here, one module each in
    :mod:`gradbench.datasets` (``binarized-mnist``, Larochelle & Murray's static binarization),
    and those of installed packages through the entry-point group ``gradbench.datasets``
    (:func:`load_plugins`, run at import). ``DataConfig(dataset=NAME)`` accepts every
    registered name (:func:`dataset_names`); an unknown one raises ValueError listing them.

Where the files come from
    MNIST and Fashion-MNIST are read from the four official IDX ``.gz`` files, each verified
    against its official MD5 before use. For every file the first valid copy is taken from, in
    order: ``data_dir`` (``--data-dir``), ``$GRADBENCH_DATA`` (each either holding the files
    directly or in a sub-folder named after the dataset), the user cache directory
    (:func:`cache_dir`), a system folder (Debian's ``dataset-fashion-mnist`` package installs
    ``/usr/share/datasets/fashion-mnist``), and finally a download from the public mirrors, tried
    in turn, into the cache. A download goes to a temporary file beside its target and is renamed
    into place only after its MD5 is verified, so the cache never holds a partial or corrupt file.
    A copy that fails verification is never used: it is skipped with a warning when a valid copy
    is found elsewhere, and raises :class:`ChecksumError` otherwise.

The data are what the configuration names
    A dataset that is not found raises :class:`DataNotFoundError` saying where it looked and how
    to get the files; nothing falls back to another dataset. scikit-learn's 8x8 handwritten
    digits (``sklearn.datasets.load_digits``: shipped with that dependency, no network, no files)
    are used only when ``dataset="digits"`` asks for them.

Splits and binarization
    MNIST-like data: the first ``n_train`` (50,000) training images for training, the next
    ``n_valid`` (10,000) for validation, the 10,000 official test images for test. Digits: 70% /
    15% / 15% of the 1,797 images in a fixed shuffled order. Grey levels are pixel/255 (pixel/16
    for digits). Binarization is ``threshold`` (grey >= 0.5), ``dynamic`` (a fresh Bernoulli
    sample for every minibatch) or ``fixed`` (one Bernoulli sample drawn at load time with the
    config's seed). All tensors are moved to the device once, at load time; minibatch indices and
    Bernoulli samples are drawn on that device, so training loops copy nothing from the host.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from importlib.metadata import entry_points
from gradbench.plugins import load_entry_points
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import platformdirs
import torch

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gradbench.datasets"
"""Installed packages add datasets here: ``[project.entry-points."gradbench.datasets"]``,
``NAME = "package.module"`` (a module that registers its classes) or ``"package.module:Class"``."""
BINARIZATIONS: tuple[str, ...] = ("threshold", "dynamic", "fixed")
SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: Grey level at or above which ``threshold`` binarization gives 1 (pixel/255 >= 0.5).
THRESHOLD = 0.5

MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
#: Each downloadable dataset's mirrors, tried in turn (a dataset module adds its own).
DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": MNIST_MIRRORS,
    "fashion-mnist": FASHION_MNIST_MIRRORS,
}
#: Environment variables that replace a dataset's mirror list (URLs separated by commas or spaces).
MIRRORS_ENV: dict[str, str] = {
    "mnist": "GRADBENCH_MNIST_MIRRORS",
    "fashion-mnist": "GRADBENCH_FASHION_MNIST_MIRRORS",
}
#: Folders that packages install datasets into, searched after the user cache.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}
#: Seconds to wait on a mirror's connection or between two reads of its answer.
DOWNLOAD_TIMEOUT_S = 15.0

#: Fraction of the digits used for training and for validation; the rest is the test split.
DIGITS_FRACTIONS: tuple[float, float] = (0.70, 0.15)
#: Seed of the digits' shuffled order, fixed so every run sees the same split.
DIGITS_SPLIT_SEED = 0
DIGITS_SOURCE = "sklearn.datasets.load_digits"
#: Largest pixel value (grey level = pixel / max) of the IDX datasets and of the digits.
MNIST_PIXEL_MAX = 255.0
DIGITS_PIXEL_MAX = 16.0
#: Number of classes of every dataset here (digits 0-9, or Fashion-MNIST's ten kinds).
N_CLASSES = 10


@dataclass(frozen=True)
class IdxFile:
    """One official IDX file: its name and the MD5s of the ``.gz`` file and of its content."""

    filename: str
    gz_md5: str
    raw_md5: str


#: The four files of each dataset, keyed by role. The compressed MD5s are those of the official
#: releases; the uncompressed ones let recompressed copies (such as Debian's) be verified too.
IDX_FILES: dict[str, dict[str, IdxFile]] = {
    "mnist": {
        "train_images": IdxFile(
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "6bbc9ace898e44ae57da46a324031adb",
        ),
        "train_labels": IdxFile(
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "a25bea736e30d166cdddb491f175f624",
        ),
        "test_images": IdxFile(
            "t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
            "2646ac647ad5339dbf082846283269ea",
        ),
        "test_labels": IdxFile(
            "t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
            "27ae3e4e09519cfbb04c329615203637",
        ),
    },
    "fashion-mnist": {
        "train_images": IdxFile(
            "train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        ),
        "train_labels": IdxFile(
            "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
            "9018921c3c673c538a1fc5bad174d6f9",
        ),
        "test_images": IdxFile(
            "t10k-images-idx3-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79",
            "8181f5470baa50b63fa0f6fddb340f0a",
        ),
        "test_labels": IdxFile(
            "t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
    },
}

#: Number of dimensions of each role's IDX array (images are [N, 28, 28], labels [N]).
_IDX_NDIM = {"train_images": 3, "train_labels": 1, "test_images": 3, "test_labels": 1}
#: IDX type code of unsigned bytes, the only element type these files use.
_IDX_UINT8 = 0x08
_CHUNK_BYTES = 1 << 20


class DataNotFoundError(RuntimeError):
    """The dataset's files are in none of the places searched and could not be downloaded.

    The message lists every place looked (and each mirror's failure) and how to provide the files.
    """


class ChecksumError(ValueError):
    """A data file exists but its content does not have the official MD5."""


@dataclass(frozen=True)
class DataConfig:
    """Which data to load and how to binarize it; validated when built."""

    dataset: str = "mnist"  # one of dataset_names()
    binarization: str = "threshold"  # one of BINARIZATIONS
    data_dir: str | None = None  # searched first; then $GRADBENCH_DATA, cache, system, download
    n_train: int = 50_000  # MNIST-like training images (the thesis' split); digits use 70%
    n_valid: int = 10_000  # MNIST-like validation images, taken after the training ones; digits 15%
    subset: int | None = None  # keep only the first `subset` examples of each split (quick runs)
    seed: int = 0  # seed of the "fixed" binarization's sample
    download: bool = True  # allow downloading missing files into the cache

    def __post_init__(self) -> None:
        if self.dataset not in dataset_names():
            valid = ", ".join(dataset_names())
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {valid}")
        if self.binarization not in BINARIZATIONS:
            raise ValueError(
                f"unknown binarization {self.binarization!r}; valid: {', '.join(BINARIZATIONS)}"
            )
        if DATASET_SOURCES[self.dataset].binary and self.binarization != "threshold":
            raise ValueError(
                f"{self.dataset}'s pixels are binary as published: binarization "
                f"{self.binarization!r} would leave them as they are while its rows named it; "
                "use threshold (the default), an identity on them"
            )
        if self.n_train < 1 or self.n_valid < 0:
            raise ValueError(
                f"need n_train >= 1 and n_valid >= 0, got n_train={self.n_train}, "
                f"n_valid={self.n_valid}"
            )
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be None or >= 1, got {self.subset}")


@dataclass
class Split:
    """One split on the device: grey levels and labels."""

    images: torch.Tensor  # float32 [N, D], grey levels in [0, 1]
    labels: torch.Tensor  # int64 [N]; NO_LABEL for a dataset without labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    """Three splits on one device, with the binarization applied as minibatches are drawn."""

    name: str  # the registered name of the dataset loaded
    train: Split
    valid: Split
    test: Split
    input_dim: int
    n_classes: int
    binarization: str
    seed: int = 0  # the config's seed (the "fixed" sample's and the default evaluation seed)
    source: str = ""  # where the data were read from, for provenance
    # split name -> bool [N, D] sample; filled only for the "fixed" binarization
    fixed: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        """The device every tensor of the dataset lives on."""
        return self.train.images.device

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with every tensor on ``device`` (itself when already there)."""
        device = torch.device(device)
        if self.device == device:
            return self
        moved = {
            name: Split(part.images.to(device), part.labels.to(device))
            for name, part in ((n, self.split(n)) for n in SPLITS)
        }
        return replace(self, **moved, fixed={k: v.to(device) for k, v in self.fixed.items()})

    def split(self, name: str) -> Split:
        """The split called ``name`` ("train", "valid" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return getattr(self, name)

    def info(self) -> dict[str, object]:
        """The facts a result row or a report records about the data used."""
        return {
            "dataset": self.name,
            "binarization": self.binarization,
            "n_train": len(self.train),
            "n_valid": len(self.valid),
            "n_test": len(self.test),
            "input_dim": self.input_dim,
            "data_source": self.source,
        }

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator, shuffle: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of binarized ``(images [B, D], labels [B])`` minibatches.

        With ``shuffle`` the order is ``torch.randperm`` drawn on the device with ``generator``
        and the last partial batch is dropped; without it the examples come in order and the last
        batch may be smaller. ``generator`` (on the data's device) also draws the ``dynamic``
        binarization, afresh for every minibatch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self.split(split))
        if shuffle:
            order = self.epoch_order(split, generator)
            for start in range(0, n - batch_size + 1, batch_size):
                yield self.minibatch(split, order[start : start + batch_size], generator)
        else:
            for start in range(0, n, batch_size):
                yield self.minibatch(split, slice(start, start + batch_size), generator)

    def epoch_order(self, split: str, generator: torch.Generator) -> torch.Tensor:
        """A shuffled epoch's order of ``split``'s examples, int64 [N] on the device: the
        ``torch.randperm`` that :meth:`batches` draws first (a resumable loop keeps it)."""
        return torch.randperm(len(self.split(split)), generator=generator, device=self.device)

    def sample_batch(
        self, split: str, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One binarized minibatch of uniformly drawn examples, distinct within the batch."""
        n = len(self.split(split))
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be in 1..{n} for split {split!r}, got {batch_size}")
        index = torch.randperm(n, generator=generator, device=self.device)[:batch_size]
        return self.minibatch(split, index, generator)

    def binarized(self, split: str, generator: torch.Generator | None = None) -> torch.Tensor:
        """The whole split binarized, float32 [N, D] (for evaluation).

        ``dynamic`` draws one sample with ``generator``; without one it uses a generator on the
        data's device seeded with the dataset's seed, so evaluations repeat exactly.
        """
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(self.seed)
        return self.minibatch(split, slice(None), generator)[0]

    def minibatch(
        self, split: str, index: torch.Tensor | slice, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Binarized images and labels of ``split`` at ``index`` (a device tensor or a slice);
        ``generator`` draws the ``dynamic`` binarization."""
        data = self.split(split)
        if self.binarization == "fixed":
            images = self.fixed[split][index].to(torch.float32)
        elif self.binarization == "dynamic":
            images = torch.bernoulli(data.images[index], generator=generator)
        else:
            images = (data.images[index] >= THRESHOLD).to(torch.float32)
        return images, data.labels[index]

    _minibatch = minibatch  # the name gradbench.measure.variance calls


def cache_dir() -> Path:
    """The user cache directory of gradbench.

    ``$XDG_CACHE_HOME/gradbench`` when that variable is set (on every platform, so a run can be
    pointed at a private cache), else the platform's user cache folder from platformdirs:
    ``~/.cache/gradbench`` on Linux, ``~/Library/Caches/gradbench`` on macOS,
    ``%LOCALAPPDATA%\\gradbench\\Cache`` on Windows.
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "gradbench"
    return Path(platformdirs.user_cache_dir("gradbench", appauthor=False))


def search_dirs(
    name: str, data_dir: str | os.PathLike[str] | None = None
) -> list[tuple[Path, str]]:
    """The folders searched for dataset ``name``'s files, in order, each with a label."""
    roots: list[tuple[Path, str]] = []
    if data_dir is not None:
        roots.append((Path(data_dir).expanduser(), "--data-dir"))
    env_dir = os.environ.get("GRADBENCH_DATA")
    if env_dir:
        roots.append((Path(env_dir).expanduser(), "$GRADBENCH_DATA"))
    dirs: list[tuple[Path, str]] = []
    for root, label in roots:
        dirs.append((root / name, f"{label}/{name}"))
        dirs.append((root, label))
    dirs.append((cache_dir() / name, "user cache"))
    dirs.extend((Path(d), "system folder") for d in SYSTEM_DIRS.get(name, ()))
    return dirs


def mirrors_for(name: str, mirrors: Sequence[str] | None = None) -> list[str]:
    """The mirrors tried in turn for dataset ``name``.

    ``mirrors`` if given, else the list in its environment variable (:data:`MIRRORS_ENV`) if
    set, else the module's default list.
    """
    if mirrors is not None:
        return list(mirrors)
    env_value = os.environ.get(MIRRORS_ENV[name])
    if env_value is not None:
        return env_value.replace(",", " ").split()
    return list(DEFAULT_MIRRORS[name])


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _parse_idx(raw: bytes, ndim: int, what: str) -> np.ndarray:
    """The uint8 array of an uncompressed IDX file (big-endian header, then the data)."""
    if len(raw) < 4 + 4 * ndim or raw[0] != 0 or raw[1] != 0:
        raise ChecksumError(f"{what}: not an IDX file")
    if raw[2] != _IDX_UINT8 or raw[3] != ndim:
        raise ChecksumError(
            f"{what}: IDX type {raw[2]:#x} with {raw[3]} dims, expected uint8 with {ndim}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise ChecksumError(f"{what}: {len(raw) - offset} data bytes, header says shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()


def read_verified(path: Path, spec: IdxFile, role: str, dataset: str) -> np.ndarray:
    """Read one ``.gz`` IDX file after checking its MD5; raise :class:`ChecksumError` if wrong.

    The file passes when the ``.gz`` bytes have the official compressed MD5, or when their
    content has the official uncompressed MD5 (a recompressed copy of the same data).
    """
    blob = path.read_bytes()
    gz_md5 = _md5(blob)
    try:
        raw = gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as exc:
        raise ChecksumError(
            f"{path}: MD5 {gz_md5} is not the official {spec.gz_md5} of {dataset}'s "
            f"{spec.filename}, and it does not decompress ({exc})"
        ) from None
    if gz_md5 != spec.gz_md5:
        raw_md5 = _md5(raw)
        if raw_md5 != spec.raw_md5:
            raise ChecksumError(
                f"{path}: MD5 {gz_md5} (uncompressed {raw_md5}) matches neither the official "
                f"{spec.gz_md5} (uncompressed {spec.raw_md5}) of {dataset}'s {spec.filename}"
            )
    return _parse_idx(raw, _IDX_NDIM[role], str(path))


T = TypeVar("T")


def download_verified(
    filename: str, verify: Callable[[Path], T], target_dir: Path, mirrors: Sequence[str],
    timeout_s: float, failures: list[str], unreachable: set[str],
) -> tuple[T, Path] | None:
    """Fetch ``filename`` from the first mirror that serves a copy ``verify`` accepts (it returns
    the file's data, or raises :class:`ChecksumError`) into ``target_dir``.

    Each try streams to a temporary file in ``target_dir``, verifies it and only then renames it
    to its final name; a failed try removes its temporary file and appends its reason to
    ``failures``. A mirror that cannot be reached at all joins ``unreachable`` and is not tried
    again for the other files (so an offline run waits at most one timeout per mirror). Returns
    the verified data and the final path, or None when every mirror failed.
    """
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        failures.append(f"cannot create the cache folder {target_dir}: {exc}")
        return None
    for mirror in mirrors:
        if mirror in unreachable:
            continue
        url = mirror.rstrip("/") + "/" + filename
        fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{filename}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
                while chunk := resp.read(_CHUNK_BYTES):
                    out.write(chunk)
            verified = verify(tmp)
            final = target_dir / filename
            os.replace(tmp, final)
        except (urllib.error.HTTPError, ChecksumError) as exc:  # this file is bad or absent
            failures.append(f"download {url}: {exc}")
            continue
        except (OSError, ValueError) as exc:  # no connection, timeout or malformed URL
            failures.append(f"download {url}: {exc} (mirror not tried again)")
            unreachable.add(mirror)
            continue
        finally:
            tmp.unlink(missing_ok=True)  # gone already after a successful rename
        logger.info("downloaded %s into %s", url, final)
        return verified, final
    return None


def _not_found_message(
    dataset: str, missing: Sequence[str], looked: Sequence[str], failures: Sequence[str],
    download: bool,
) -> str:
    lines = [f"{dataset} not found: missing {', '.join(missing)}.", "Looked in:"]
    lines += [f"  - {place}" for place in looked]
    if not download:
        lines.append("  - (download disabled)")
    lines += [f"  - {failure}" for failure in failures]
    lines += [
        "To provide the files, put the four official .gz files "
        f"({', '.join(spec.filename for spec in IDX_FILES[dataset].values())}) in a folder and",
        "pass it with --data-dir DIR (DataConfig(data_dir=...)) or set GRADBENCH_DATA=DIR,",
        f"or copy them into {cache_dir() / dataset}, or allow the download (network needed;",
        f"mirrors can be set with {MIRRORS_ENV[dataset]}=URL[,URL...]).",
    ]
    if dataset == "fashion-mnist":
        lines.append("On Debian/Ubuntu, `apt-get install dataset-fashion-mnist` provides them too.")
    return "\n".join(lines)


def _load_idx_dataset(
    name: str, data_dir: str | os.PathLike[str] | None, download: bool,
    mirrors: Sequence[str] | None, timeout_s: float,
) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
    """The verified arrays of MNIST-like dataset ``name`` and the file each came from."""
    if name not in IDX_FILES:
        raise ValueError(f"unknown IDX dataset {name!r}; valid: {', '.join(IDX_FILES)}")
    dirs = search_dirs(name, data_dir)
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    rejected: list[str] = []
    for role, spec in IDX_FILES[name].items():
        for folder, _label in dirs:
            path = folder / spec.filename
            if not path.is_file():
                continue
            try:
                arrays[role] = read_verified(path, spec, role, name)
            except ChecksumError as exc:
                rejected.append(str(exc))
                continue
            paths[role] = path
            break
    missing = [spec.filename for role, spec in IDX_FILES[name].items() if role not in arrays]
    failures: list[str] = []
    if missing and download:
        urls = mirrors_for(name, mirrors)
        if not urls:
            failures.append("download: no mirrors configured")
        unreachable: set[str] = set()
        for role, spec in IDX_FILES[name].items():
            if role in arrays or not urls:
                continue
            fetched = download_verified(
                spec.filename, partial(read_verified, spec=spec, role=role, dataset=name),
                cache_dir() / name, urls, timeout_s, failures, unreachable,
            )
            if fetched is not None:
                arrays[role], paths[role] = fetched
        missing = [spec.filename for role, spec in IDX_FILES[name].items() if role not in arrays]
    looked = [f"{folder} ({label})" for folder, label in dirs]
    raise_unless_found(
        name, missing, rejected, failures,
        lambda: _not_found_message(name, missing, looked, failures, download),
    )
    return arrays, paths


def raise_unless_found(
    name: str, missing: Sequence[str], rejected: Sequence[str], failures: Sequence[str],
    not_found: Callable[[], str],
) -> None:
    """After a dataset's search: :class:`ChecksumError` listing the rejected copies when files
    are missing and corrupt copies were found, :class:`DataNotFoundError` (message
    ``not_found()``) when files are missing, else a warning for each corrupt copy skipped."""
    if missing and rejected:
        raise ChecksumError(
            f"{name}: no valid copy of {', '.join(missing)}; rejected:\n  - "
            + "\n  - ".join([*rejected, *failures])
        )
    if missing:
        raise DataNotFoundError(not_found())
    for reason in rejected:
        warnings.warn(f"skipped a corrupt data file: {reason}", stacklevel=4)


def mnist_arrays(
    name: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] | None = None,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> dict[str, np.ndarray]:
    """The raw uint8 arrays of MNIST or Fashion-MNIST, after checksum verification.

    Keys: ``train_images`` [60000, 28, 28], ``train_labels`` [60000], ``test_images``
    [10000, 28, 28], ``test_labels`` [10000]. See the module docstring for where the files are
    looked for; ``mirrors`` replaces the mirror list. Raises :class:`DataNotFoundError` when a
    file is nowhere to be found or fetched, :class:`ChecksumError` when only corrupt copies exist.
    """
    return _load_idx_dataset(name, data_dir, download, mirrors, timeout_s)[0]


def _to_device(
    images: np.ndarray, labels: np.ndarray, scale: float, device: torch.device
) -> Split:
    """A split on ``device`` from uint8 images [N, D] (grey = pixel / scale) and labels [N]."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return Split(
        images=pixels.to(torch.float32).div_(scale),
        labels=torch.from_numpy(labels.astype(np.int64)).to(device),
    )


def _mnist_splits(
    arrays: dict[str, np.ndarray], config: DataConfig
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The thesis' split of MNIST-like arrays: first n_train, next n_valid, official test."""
    train_x = arrays["train_images"].reshape(len(arrays["train_images"]), -1)  # [60000, 784]
    test_x = arrays["test_images"].reshape(len(arrays["test_images"]), -1)
    train_y, test_y = arrays["train_labels"], arrays["test_labels"]
    end = config.n_train + config.n_valid
    if end > len(train_x):
        raise ValueError(
            f"n_train + n_valid = {end} exceeds the {len(train_x)} training images"
        )
    return {
        "train": (train_x[: config.n_train], train_y[: config.n_train]),
        "valid": (train_x[config.n_train : end], train_y[config.n_train : end]),
        "test": (test_x, test_y),
    }


def _digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's 8x8 digits (pixels 0..16) split 70/15/15 in a fixed shuffled order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.data.astype(np.uint8)  # [1797, 64]
    labels = digits.target
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    n_train = round(DIGITS_FRACTIONS[0] * len(labels))
    n_valid = round(DIGITS_FRACTIONS[1] * len(labels))
    parts = np.split(order, [n_train, n_train + n_valid])
    return {name: (images[idx], labels[idx]) for name, idx in zip(SPLITS, parts)}


NO_LABEL = -1
"""The label of every example of a dataset without labels (``LoadedData.n_classes`` 0)."""


@dataclass
class LoadedData:
    """What a registered dataset's loader hands to :func:`load_dataset`."""

    name: str  # the dataset actually used
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 images [N, D], labels [N])
    pixel_max: float  # grey level = pixel / pixel_max
    source: str  # where the data were read from, for provenance
    n_classes: int = N_CLASSES  # 0: no labels (every label NO_LABEL)


class DatasetSource:
    """A dataset of the registry: a class with ``name``, ``summary`` and :meth:`load`.

    Add one with ``@register_dataset`` in a module of :mod:`gradbench.datasets` or of an
    installed package (entry-point group ``gradbench.datasets``); ``DataConfig(dataset=name)``
    then loads it and every command accepts ``--dataset name``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    binary: ClassVar[bool] = False
    """True when the pixels are 0 or 1 as published (a binarization already made, such as
    Larochelle & Murray's): only ``threshold``, an identity on them, is accepted."""

    def load(self, config: DataConfig) -> LoadedData:
        """The three splits of the dataset as ``config`` asks for them (before ``subset``)."""
        raise NotImplementedError


DATASET_SOURCES: dict[str, type[DatasetSource]] = {}
"""Registered datasets by name, in registration order."""

S = TypeVar("S", bound=type[DatasetSource])


def register_dataset(cls: S) -> S:
    """Class decorator: add a dataset to the registry under ``cls.name``."""
    if cls.name in DATASET_SOURCES:
        raise ValueError(f"dataset {cls.name!r} registered twice")
    DATASET_SOURCES[cls.name] = cls
    return cls


def binarization_phrase(dataset: str, binarization: str) -> str:
    """How ``dataset``'s pixels were binarized, for provenance: "binary as published" for a
    dataset whose pixels are 0 or 1 already (its threshold is an identity), else
    "BINARIZATION binarization"; an unregistered dataset (an uninstalled plugin's) by the latter."""
    source = DATASET_SOURCES.get(dataset)
    return "binary as published" if source is not None and source.binary else (
        f"{binarization} binarization")


def dataset_names() -> tuple[str, ...]:
    """Every registered dataset, the values ``DataConfig.dataset`` accepts."""
    return tuple(DATASET_SOURCES)


def load_plugins() -> list[str]:
    """Import every entry point of the group ``gradbench.datasets``
    (:func:`gradbench.plugins.load_entry_points`); returns the names of the datasets they
    registered."""
    if entry_points(group=ENTRY_POINT_GROUP):
        # A plugin package may add estimators too, importing their registry at its top: that
        # registry loads its own plugins from the same package, so it must come first.
        import gradbench.estimators  # noqa: F401
    return load_entry_points(ENTRY_POINT_GROUP, DatasetSource, DATASET_SOURCES, register_dataset,
                             "dataset")


class _IdxSource(DatasetSource):
    """An MNIST-like dataset of four official IDX files (:data:`IDX_FILES`), split as the
    thesis: the first ``n_train`` training images, the next ``n_valid``, the official test."""

    def load(self, config: DataConfig) -> LoadedData:
        arrays, paths = _load_idx_dataset(
            self.name, config.data_dir, config.download, None, DOWNLOAD_TIMEOUT_S
        )
        source = ", ".join(sorted({str(path.parent) for path in paths.values()}))
        return LoadedData(self.name, _mnist_splits(arrays, config), MNIST_PIXEL_MAX, source)


@register_dataset
class Mnist(_IdxSource):
    """LeCun, Cortes & Burges' MNIST."""

    name = "mnist"
    summary = "MNIST 28x28 digits, 50,000 / 10,000 / 10,000 (the thesis' split)"


@register_dataset
class FashionMnist(_IdxSource):
    """Xiao, Rasul & Vollgraf's Fashion-MNIST."""

    name = "fashion-mnist"
    summary = "Fashion-MNIST 28x28 clothes, 50,000 / 10,000 / 10,000"


@register_dataset
class Digits(DatasetSource):
    """scikit-learn's 8x8 handwritten digits: no files, no network."""

    name = "digits"
    summary = "scikit-learn's 8x8 digits, 70 / 15 / 15 % of 1,797 (shipped, no download)"

    def load(self, config: DataConfig) -> LoadedData:
        return LoadedData(self.name, _digits_splits(), DIGITS_PIXEL_MAX, DIGITS_SOURCE)


def load_dataset(config: DataConfig, device: torch.device | str = "cpu") -> Dataset:
    """Load, split and move to ``device`` the dataset ``config`` describes.

    ``subset`` keeps the first examples of each split. The ``fixed`` binarization's sample is
    drawn here, once, on the CPU with ``config.seed`` (so it is the same on every device).
    """
    device = torch.device(device)
    loaded = DATASET_SOURCES[config.dataset]().load(config)
    parts, scale = loaded.splits, loaded.pixel_max
    if config.subset is not None:
        parts = {k: (x[: config.subset], y[: config.subset]) for k, (x, y) in parts.items()}
    splits = {k: _to_device(x, y, scale, device) for k, (x, y) in parts.items()}
    fixed: dict[str, torch.Tensor] = {}
    if config.binarization == "fixed":
        generator = torch.Generator().manual_seed(config.seed)
        for k in SPLITS:
            grey = torch.from_numpy(np.ascontiguousarray(parts[k][0])).to(torch.float32) / scale
            fixed[k] = torch.bernoulli(grey, generator=generator).to(torch.bool).to(device)
    return Dataset(
        name=loaded.name,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        input_dim=int(splits["train"].images.shape[1]),
        n_classes=loaded.n_classes,
        binarization=config.binarization,
        seed=config.seed,
        source=loaded.source,
        fixed=fixed,
    )


import gradbench.datasets  # noqa: E402, F401  (its modules register their datasets: binarized-mnist)

load_plugins()
DATASETS: tuple[str, ...] = dataset_names()
"""The dataset names at import (built-in and installed plugins), for help texts; the registry
itself is :data:`DATASET_SOURCES`."""
