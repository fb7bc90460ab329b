"""Larochelle & Murray's statically binarized MNIST (``binarized-mnist``).

The fixed binarization of MNIST on which REBAR, RELAX, ARM and DisARM report their
Bernoulli-VAE log-likelihoods ("static MNIST"; Larochelle & Murray 2011, "The Neural
Autoregressive Distribution Estimator"): 50,000 training, 10,000 validation and 10,000 test
images of 784 pixels, each 0 or 1, no labels. The files are text (``.amat``): one image per
line, 784 digits separated by single spaces, ``\\n`` line ends.

Where the files come from
    ``binarized_mnist_{train,valid,test}.amat``, or the same gzip-compressed (``.amat.gz``), from
    the folders :func:`gradbench.data.search_dirs` lists (``--data-dir``, ``$GRADBENCH_DATA``,
    each directly or in a ``binarized-mnist`` sub-folder, then the user cache), else downloaded
    from Larochelle's original folder (:data:`MIRRORS`; ``$GRADBENCH_BINARIZED_MNIST_MIRRORS``
    replaces it) into the cache through a temporary file renamed into place once verified. Every
    file is verified by the SHA-256 of its uncompressed content (:data:`SHA256`); a copy that
    fails raises :class:`~gradbench.data.ChecksumError` naming the file, unless a valid copy is
    found elsewhere (then it is skipped with a warning).

Binarization
    The pixels are already 0 or 1 (``binary``): ``threshold``, an identity on them, is the only
    binarization accepted, so that no row names a binarization the data never had. Every label
    is :data:`gradbench.data.NO_LABEL` (``n_classes`` 0); ``n_train`` and ``n_valid`` do not
    apply (the splits are Larochelle's).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from functools import partial
from pathlib import Path

import numpy as np

from gradbench.data import (
    DEFAULT_MIRRORS,
    DOWNLOAD_TIMEOUT_S,
    MIRRORS_ENV,
    NO_LABEL,
    SPLITS,
    ChecksumError,
    DataConfig,
    DatasetSource,
    LoadedData,
    cache_dir,
    download_verified,
    mirrors_for,
    raise_unless_found,
    register_dataset,
    search_dirs,
)

NAME = "binarized-mnist"
MIRRORS: tuple[str, ...] = (
    "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
)
"""Larochelle's original folder, the files' only official home."""
DEFAULT_MIRRORS[NAME] = MIRRORS
MIRRORS_ENV[NAME] = "GRADBENCH_BINARIZED_MNIST_MIRRORS"

PIXELS = 784
ROWS: dict[str, int] = {"train": 50_000, "valid": 10_000, "test": 10_000}
SHA256: dict[str, str] = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
"""SHA-256 of each uncompressed original ``.amat`` file (what ``sha256sum`` prints)."""


def filename(split: str) -> str:
    """The original file name of ``split``: ``binarized_mnist_<split>.amat``."""
    return f"binarized_mnist_{split}.amat"


def parse_amat(raw: bytes, rows: int, what: str) -> np.ndarray:
    """The uint8 images [rows, 784] of an ``.amat`` text: every value one digit 0 or 1 followed
    by a space, the last of each line by ``\\n``; anything else raises ChecksumError."""
    if len(raw) != rows * PIXELS * 2:
        raise ChecksumError(f"{what}: {len(raw)} bytes, expected {rows * PIXELS * 2}")
    table = np.frombuffer(raw, dtype=np.uint8).reshape(rows, PIXELS, 2)
    separators = np.full((PIXELS,), ord(" "), dtype=np.uint8)
    separators[-1] = ord("\n")
    if not (table[:, :, 1] == separators).all():
        raise ChecksumError(f"{what}: not 784 space-separated values per line")
    pixels = table[:, :, 0] - ord("0")
    if pixels.max(initial=0) > 1:
        raise ChecksumError(f"{what}: a pixel is not 0 or 1")
    return pixels


def read_verified(path: Path, split: str) -> np.ndarray:
    """The images of ``split`` from ``path`` (``.amat`` or its gzip) after checking the SHA-256
    of the uncompressed content; ChecksumError naming the file when it differs."""
    blob = path.read_bytes()
    if blob[:2] == b"\x1f\x8b":
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as exc:
            raise ChecksumError(f"{path}: a damaged gzip file ({exc})") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SHA256[split]:
        raise ChecksumError(
            f"{path}: SHA-256 {digest} is not {SHA256[split]}, that of the original "
            f"{filename(split)}"
        )
    return parse_amat(blob, ROWS[split], str(path))


def binarized_mnist_arrays(
    data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
    """The verified images of every split, uint8 [N, 784], and the file each came from."""
    images: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    rejected: list[str] = []
    dirs = search_dirs(NAME, data_dir)
    for split in SPLITS:
        candidates = [d / name for d, _ in dirs for name in (filename(split), filename(split) + ".gz")]
        for path in candidates:
            if not path.is_file():
                continue
            try:
                images[split] = read_verified(path, split)
            except ChecksumError as exc:
                rejected.append(str(exc))
                continue
            paths[split] = path
            break
    failures: list[str] = []
    if download:
        mirrors, unreachable = mirrors_for(NAME), set()
        for split in [s for s in SPLITS if s not in images]:
            fetched = download_verified(
                filename(split), partial(read_verified, split=split), cache_dir() / NAME,
                mirrors, DOWNLOAD_TIMEOUT_S, failures, unreachable,
            )
            if fetched is not None:
                images[split], paths[split] = fetched
    missing = [filename(s) for s in SPLITS if s not in images]
    looked = [f"  - {folder} ({label})" for folder, label in dirs]
    if not download:
        looked.append("  - (download disabled)")
    raise_unless_found(NAME, missing, rejected, failures, lambda: "\n".join([
        f"{NAME} not found: missing {', '.join(missing)}.", "Looked in:", *looked,
        *(f"  - {failure}" for failure in failures),
        "Put the .amat files (or their .gz) in a folder and pass it with --data-dir DIR or "
        f"GRADBENCH_DATA=DIR, or allow the download ({MIRRORS_ENV[NAME]} sets the mirrors).",
    ]))
    return images, paths


@register_dataset
class BinarizedMnist(DatasetSource):
    """Larochelle & Murray's static binarization of MNIST: the ARM and DisARM papers' data."""

    name = NAME
    summary = "Larochelle's statically binarized MNIST, 50,000 / 10,000 / 10,000, no labels"
    binary = True

    def load(self, config: DataConfig) -> LoadedData:
        images, paths = binarized_mnist_arrays(config.data_dir, config.download)
        splits = {
            split: (pixels, np.full(len(pixels), NO_LABEL, dtype=np.int64))
            for split, pixels in images.items()
        }
        source = ", ".join(sorted({str(path.parent) for path in paths.values()}))
        return LoadedData(NAME, splits, 1.0, source, n_classes=0)
