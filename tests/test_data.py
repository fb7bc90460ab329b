"""Tests of gradbench.data: checksums, loaders, binarizations, the download path, the fallback.

MNIST tests read the real files from ``shared/data/mnist`` beside the repository and are skipped
when it is absent. Every test runs with the user cache in a temporary folder and with mirrors
that point at a closed local port, so nothing here touches the network or the real home folder;
the download tests serve the shared files from an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import re
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from gradbench import data
from gradbench.datasets import binarized_mnist
from gradbench.data import (
    BINARIZATIONS,
    DATASETS,
    IDX_FILES,
    ChecksumError,
    DataConfig,
    DataNotFoundError,
    Dataset,
    Split,
    load_dataset,
    mnist_arrays,
)

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(
    not SHARED_MNIST.is_dir(), reason=f"the shared MNIST files are absent ({SHARED_MNIST})"
)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

# The published facts of MNIST (shared/data/mnist/README.md).
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_PIXEL_MEAN = 0.130660  # mean of pixel/255, to the README's 6 decimals
TEST_PIXEL_MEAN = 0.132515
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def data_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, no $GRADBENCH_DATA, no system folders and unreachable mirrors."""
    cache_home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("GRADBENCH_DATA", raising=False)
    dead = _closed_port_url()
    monkeypatch.setenv("GRADBENCH_MNIST_MIRRORS", dead)
    monkeypatch.setenv("GRADBENCH_FASHION_MNIST_MIRRORS", dead)
    monkeypatch.setenv("GRADBENCH_BINARIZED_MNIST_MIRRORS", dead)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})
    return cache_home / "gradbench"


@pytest.fixture(scope="module")
def mnist_raw() -> dict[str, np.ndarray]:
    """The shared MNIST files parsed once for the whole module."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"the shared MNIST files are absent ({SHARED_MNIST})")
    return mnist_arrays(data_dir=SHARED_MNIST, download=False, mirrors=[])


def _corrupt_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` with one byte in the middle flipped."""
    blob = bytearray(source.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        """Keep the test output clean."""


@pytest.fixture(scope="module")
def mnist_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A local HTTP server with a good mirror (the shared files) and a corrupt one."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"the shared MNIST files are absent ({SHARED_MNIST})")
    root = tmp_path_factory.mktemp("mirror")
    (root / "good").mkdir()
    (root / "bad").mkdir()
    for spec in IDX_FILES["mnist"].values():
        (root / "good" / spec.filename).symlink_to(SHARED_MNIST / spec.filename)
        _corrupt_copy(SHARED_MNIST / spec.filename, root / "bad" / spec.filename)
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"good": f"{base}/good/", "bad": f"{base}/bad/", "missing": f"{base}/nothing/"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- configuration -------------------------------------------------------------------------


def test_config_defaults_are_the_thesis_split() -> None:
    config = DataConfig()
    assert (config.dataset, config.binarization) == ("mnist", "threshold")
    assert (config.n_train, config.n_valid) == (50_000, 10_000)
    assert DATASETS == ("mnist", "fashion-mnist", "digits", "binarized-mnist")
    assert BINARIZATIONS == ("threshold", "dynamic", "fixed")


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"dataset": "cifar"}, DATASETS),
        ({"dataset": "auto"}, ("mnist", "digits")),
        ({"binarization": "median"}, BINARIZATIONS),
    ],
)
def test_config_rejects_unknown_names_listing_valid_ones(
    kwargs: dict[str, str], names: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError) as excinfo:
        DataConfig(**kwargs)
    for name in names:
        assert name in str(excinfo.value)


@pytest.mark.parametrize("kwargs", [{"n_train": 0}, {"n_valid": -1}, {"subset": 0}])
def test_config_rejects_bad_sizes(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DataConfig(**kwargs)


# --- where files are looked for ------------------------------------------------------------


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_isolated: Path) -> None:
    monkeypatch.setenv("GRADBENCH_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"mnist": ("/usr/share/datasets/mnist",)})
    dirs = [path for path, _label in data.search_dirs("mnist", tmp_path / "arg")]
    assert dirs == [
        tmp_path / "arg" / "mnist",
        tmp_path / "arg",
        tmp_path / "env" / "mnist",
        tmp_path / "env",
        data_isolated / "mnist",
        Path("/usr/share/datasets/mnist"),
    ]


def test_cache_dir_follows_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data.cache_dir() == Path(os.environ["XDG_CACHE_HOME"]) / "gradbench"
    if sys.platform.startswith("linux"):
        monkeypatch.delenv("XDG_CACHE_HOME")
        monkeypatch.setenv("HOME", str(tmp_path))
        assert data.cache_dir() == tmp_path / ".cache" / "gradbench"


def test_mirror_list_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADBENCH_MNIST_MIRRORS", "http://a/, http://b/ http://c/")
    assert data.mirrors_for("mnist") == ["http://a/", "http://b/", "http://c/"]
    assert data.mirrors_for("mnist", ["http://x/"]) == ["http://x/"]
    monkeypatch.delenv("GRADBENCH_MNIST_MIRRORS")
    monkeypatch.delenv("GRADBENCH_FASHION_MNIST_MIRRORS")
    assert data.mirrors_for("mnist") == list(data.MNIST_MIRRORS)
    assert len(data.MNIST_MIRRORS) >= 3
    assert data.mirrors_for("fashion-mnist") == list(data.FASHION_MNIST_MIRRORS)


# --- checksums -----------------------------------------------------------------------------


@needs_mnist
def test_mnist_md5_table_matches_the_shared_readme_and_files() -> None:
    readme = (SHARED_MNIST / "README.md").read_text()
    row = r"^\| (\S+\.gz) \| [\d,]+ \| ([0-9a-f]{32}) \| ([0-9a-f]{32}) \|"
    rows = re.findall(row, readme, re.MULTILINE)
    published = {name: (gz, raw) for name, gz, raw in rows}
    table = {spec.filename: (spec.gz_md5, spec.raw_md5) for spec in IDX_FILES["mnist"].values()}
    assert table == published
    for name, (gz_md5, _raw) in table.items():
        assert hashlib.md5((SHARED_MNIST / name).read_bytes()).hexdigest() == gz_md5


@needs_mnist
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda blob: blob[: len(blob) // 2], id="truncated"),
        pytest.param(lambda blob: blob[:100] + bytes([blob[100] ^ 1]) + blob[101:], id="bit-flip"),
        pytest.param(lambda blob: gzip.decompress(blob), id="not-gzip"),
        pytest.param(
            lambda blob: gzip.compress(gzip.decompress(blob)[:-1] + b"\x07", mtime=0),
            id="valid-gzip-wrong-content",
        ),
    ],
)
def test_damaged_file_is_rejected(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    spec = IDX_FILES["mnist"]["test_labels"]
    path = tmp_path / spec.filename
    path.write_bytes(damage((SHARED_MNIST / spec.filename).read_bytes()))
    with pytest.raises(ChecksumError, match=spec.gz_md5):
        data.read_verified(path, spec, "test_labels", "mnist")


@needs_mnist
def test_recompressed_copy_is_verified_by_its_content(tmp_path: Path) -> None:
    spec = IDX_FILES["mnist"]["train_labels"]
    raw = gzip.decompress((SHARED_MNIST / spec.filename).read_bytes())
    path = tmp_path / spec.filename
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    assert hashlib.md5(path.read_bytes()).hexdigest() != spec.gz_md5
    labels = data.read_verified(path, spec, "train_labels", "mnist")
    assert labels.tolist()[:10] == FIRST_TRAIN_LABELS


@needs_mnist
def test_loader_refuses_a_corrupt_file(tmp_path: Path) -> None:
    for spec in IDX_FILES["mnist"].values():
        (tmp_path / spec.filename).symlink_to(SHARED_MNIST / spec.filename)
    bad = IDX_FILES["mnist"]["train_labels"].filename
    (tmp_path / bad).unlink()
    _corrupt_copy(SHARED_MNIST / bad, tmp_path / bad)
    with pytest.raises(ChecksumError, match=re.escape(str(tmp_path / bad))):
        mnist_arrays(data_dir=tmp_path, download=False)


@needs_mnist
def test_corrupt_copy_is_skipped_for_a_valid_one_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_raw: dict[str, np.ndarray]
) -> None:
    bad = IDX_FILES["mnist"]["test_labels"].filename
    _corrupt_copy(SHARED_MNIST / bad, tmp_path / bad)
    monkeypatch.setenv("GRADBENCH_DATA", str(SHARED_MNIST))
    with pytest.warns(UserWarning, match="corrupt"):
        arrays = mnist_arrays(data_dir=tmp_path, download=False)
    assert np.array_equal(arrays["test_labels"], mnist_raw["test_labels"])


def _labels_idx(labels: list[int]) -> bytes:
    """An uncompressed IDX labels file."""
    return bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + bytes(labels)


def test_fashion_mnist_is_checked_against_its_own_md5s(tmp_path: Path) -> None:
    spec = IDX_FILES["fashion-mnist"]["train_labels"]
    assert spec.gz_md5 == "25c81989df183df01b3e8a0aad5dffbe"  # the official release's
    assert spec.raw_md5 != IDX_FILES["mnist"]["train_labels"].raw_md5
    fake = tmp_path / spec.filename
    fake.write_bytes(gzip.compress(_labels_idx([i % 10 for i in range(60_000)])))
    with pytest.raises(ChecksumError, match=spec.raw_md5):
        data.read_verified(fake, spec, "train_labels", "fashion-mnist")


@needs_mnist
def test_mnist_files_do_not_pass_as_fashion_mnist(tmp_path: Path) -> None:
    for spec in IDX_FILES["fashion-mnist"].values():
        (tmp_path / spec.filename).symlink_to(SHARED_MNIST / spec.filename)
    with pytest.raises(ChecksumError, match="fashion-mnist"):
        mnist_arrays("fashion-mnist", data_dir=tmp_path, download=False)


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist package is not installed"
)
def test_fashion_mnist_from_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": (str(DEBIAN_FASHION),)})
    arrays = mnist_arrays("fashion-mnist", download=False)
    assert np.bincount(arrays["train_labels"]).tolist() == [6000] * 10
    assert np.bincount(arrays["test_labels"]).tolist() == [1000] * 10
    assert arrays["train_images"].shape == (60_000, 28, 28)


def test_fashion_mnist_not_found_says_how_to_install() -> None:
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist"):
        load_dataset(DataConfig(dataset="fashion-mnist"))


# --- the loaders' arrays -------------------------------------------------------------------


@needs_mnist
def test_mnist_arrays_match_the_published_facts(mnist_raw: dict[str, np.ndarray]) -> None:
    assert mnist_raw["train_images"].shape == (60_000, 28, 28)
    assert mnist_raw["test_images"].shape == (10_000, 28, 28)
    assert all(array.dtype == np.uint8 for array in mnist_raw.values())
    assert np.bincount(mnist_raw["train_labels"]).tolist() == TRAIN_LABEL_COUNTS
    assert np.bincount(mnist_raw["test_labels"]).tolist() == TEST_LABEL_COUNTS
    assert mnist_raw["train_images"].mean() / 255 == pytest.approx(TRAIN_PIXEL_MEAN, abs=5e-7)
    assert mnist_raw["test_images"].mean() / 255 == pytest.approx(TEST_PIXEL_MEAN, abs=5e-7)
    assert mnist_raw["train_labels"][:10].tolist() == FIRST_TRAIN_LABELS
    assert mnist_raw["test_labels"][:10].tolist() == FIRST_TEST_LABELS


@needs_mnist
def test_mnist_dataset_has_the_thesis_split(mnist_raw: dict[str, np.ndarray]) -> None:
    ds = load_dataset(DataConfig(dataset="mnist", data_dir=str(SHARED_MNIST.parent)))
    assert ds.name == "mnist"
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50_000, 10_000, 10_000)
    assert (ds.input_dim, ds.n_classes) == (784, 10)
    assert ds.source == str(SHARED_MNIST)
    assert ds.info()["dataset"] == "mnist"
    assert ds.train.images.dtype == torch.float32 and ds.train.labels.dtype == torch.int64
    assert np.array_equal(ds.valid.labels.numpy(), mnist_raw["train_labels"][50_000:])
    assert np.array_equal(ds.test.labels.numpy(), mnist_raw["test_labels"])
    expected = mnist_raw["train_images"][49_999].reshape(-1) / np.float32(255)
    assert torch.equal(ds.train.images[49_999], torch.from_numpy(expected))
    all_train = torch.cat([ds.train.images, ds.valid.images])
    assert all_train.double().mean().item() == pytest.approx(TRAIN_PIXEL_MEAN, abs=5e-7)
    assert 0.0 <= float(ds.train.images.min()) and float(ds.train.images.max()) == 1.0


def test_digits_split_70_15_15_keeps_every_image_once() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset(DataConfig(dataset="digits", seed=3))
    assert ds.name == "digits"
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1258, 270, 269)
    assert (ds.input_dim, ds.n_classes) == (64, 10)
    grey = torch.cat([ds.train.images, ds.valid.images, ds.test.images]).numpy()
    labels = torch.cat([ds.train.labels, ds.valid.labels, ds.test.labels]).numpy()
    digits = load_digits()
    rows = np.column_stack([digits.data / 16, digits.target])
    ours = np.column_stack([grey, labels])
    assert np.array_equal(
        rows[np.lexsort(rows.T[::-1])], ours[np.lexsort(ours.T[::-1])].astype(rows.dtype)
    )
    assert float(ds.train.images.max()) == 1.0
    other = load_dataset(DataConfig(dataset="digits", seed=4))
    assert torch.equal(other.test.labels, ds.test.labels), "the split must not depend on seed"


def test_subset_keeps_the_first_examples() -> None:
    full = load_dataset(DataConfig(dataset="digits"))
    small = load_dataset(DataConfig(dataset="digits", subset=100))
    for name in data.SPLITS:
        assert len(small.split(name)) == 100
        assert torch.equal(small.split(name).images, full.split(name).images[:100])


# --- binarizations -------------------------------------------------------------------------


def _digits(binarization: str, device: str = "cpu", seed: int = 0) -> Dataset:
    return load_dataset(DataConfig(dataset="digits", binarization=binarization, seed=seed), device)


def test_threshold_is_deterministic_and_at_one_half() -> None:
    ds = _digits("threshold")
    first = ds.binarized("train", torch.Generator().manual_seed(1))
    second = ds.binarized("train", torch.Generator().manual_seed(2))
    assert torch.equal(first, second)
    assert torch.equal(first, (ds.train.images >= 0.5).float())
    # digits' pixel 8 is grey 0.5 exactly (binarized to 1), pixel 7 is below.
    assert first[ds.train.images == 0.5].all()
    assert not first[ds.train.images == 7 / 16].any()


def test_dynamic_mean_equals_the_grey_level_within_se() -> None:
    ds = _digits("dynamic")
    generator = torch.Generator().manual_seed(0)
    draws = 200
    first = ds.binarized("train", generator)
    assert bool((first * (1 - first) == 0).all()), "samples must be 0 or 1"
    total = first.clone()  # float32 counts, exact up to 2**24
    for _ in range(draws - 1):
        total += ds.binarized("train", generator)
    p = ds.train.images.double()
    mean = total.double() / draws
    # pixels that are certain stay certain
    assert torch.equal(mean[p == 0], p[p == 0]) and torch.equal(mean[p == 1], p[p == 1])
    # every other pixel: z = (mean - p) / SE; their squares sum to a chi-square with df terms
    inner = (p > 0) & (p < 1)
    z = (mean[inner] - p[inner]) / torch.sqrt(p[inner] * (1 - p[inner]) / draws)
    df = int(inner.sum())
    assert abs(float((z**2).sum()) - df) < 5 * (2 * df) ** 0.5
    # and the grand mean within 4 SE
    se = float(torch.sqrt((p * (1 - p)).sum() / draws)) / p.numel()
    assert abs(float(mean.mean() - p.mean())) < 4 * se


def test_dynamic_draws_afresh_for_every_minibatch_and_repeats_with_the_seed() -> None:
    ds = _digits("dynamic")
    generator = torch.Generator().manual_seed(5)
    epoch_a = torch.cat([x for x, _ in ds.batches("valid", 64, generator, shuffle=False)])
    epoch_b = torch.cat([x for x, _ in ds.batches("valid", 64, generator, shuffle=False)])
    assert epoch_a.shape == ds.valid.images.shape
    assert not torch.equal(epoch_a, epoch_b)
    again = torch.Generator().manual_seed(5)
    assert torch.equal(
        epoch_a, torch.cat([x for x, _ in ds.batches("valid", 64, again, shuffle=False)])
    )


def test_fixed_is_one_seeded_sample_kept() -> None:
    ds = _digits("fixed", seed=7)
    first = ds.binarized("train", torch.Generator().manual_seed(1))
    assert torch.equal(first, ds.binarized("train", torch.Generator().manual_seed(2)))
    batches = ds.batches("train", 100, torch.Generator().manual_seed(3), shuffle=False)
    assert torch.equal(torch.cat([x for x, _ in batches]), first)
    assert torch.equal(first, _digits("fixed", seed=7).binarized("train"))
    assert not torch.equal(first, _digits("fixed", seed=8).binarized("train"))
    # one Bernoulli draw of every pixel: its mean is the grey mean within 4 SE
    p = ds.train.images.double()
    se = float(torch.sqrt((p * (1 - p)).sum())) / p.numel()
    assert abs(float(first.double().mean() - p.mean())) < 4 * se
    assert not first[p == 0].any() and first[p == 1].all()


# --- minibatches ---------------------------------------------------------------------------


def _indexed(n: int, device: str = "cpu") -> Dataset:
    """A tiny dataset whose labels are the example indices."""
    images = torch.rand(n, 3, generator=torch.Generator().manual_seed(0)).to(device)
    split = Split(images=images, labels=torch.arange(n, device=device))
    return Dataset(
        name="digits", train=split, valid=split, test=split, input_dim=3, n_classes=10,
        binarization="threshold",
    )


@pytest.mark.parametrize("device", DEVICES)
def test_shuffled_epoch_is_a_permutation_without_the_last_partial_batch(device: str) -> None:
    ds = _indexed(103, device)
    generator = torch.Generator(device=device).manual_seed(0)
    batches = list(ds.batches("train", 10, generator))
    assert len(batches) == 10
    seen = torch.cat([y for _, y in batches])
    assert seen.unique().numel() == 100 and seen.device.type == device
    assert all(x.shape == (10, 3) and x.device.type == device for x, _ in batches)
    assert not torch.equal(seen.cpu(), torch.arange(100))
    again = torch.Generator(device=device).manual_seed(0)
    assert torch.equal(torch.cat([y for _, y in ds.batches("train", 10, again)]), seen)


def test_unshuffled_epoch_keeps_order_and_the_last_batch() -> None:
    ds = _indexed(103)
    batches = list(ds.batches("test", 10, torch.Generator(), shuffle=False))
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(103))


@pytest.mark.parametrize("device", DEVICES)
def test_sample_batch_draws_distinct_examples(device: str) -> None:
    ds = _indexed(50, device)
    x, y = ds.sample_batch("valid", 50, torch.Generator(device=device).manual_seed(1))
    assert sorted(y.tolist()) == list(range(50))
    assert x.shape == (50, 3) and x.dtype == torch.float32 and x.device.type == device
    x2, y2 = ds.sample_batch("valid", 20, torch.Generator(device=device).manual_seed(1))
    x3, y3 = ds.sample_batch("valid", 20, torch.Generator(device=device).manual_seed(1))
    assert torch.equal(y2, y3) and torch.equal(x2, x3) and y2.unique().numel() == 20


def test_batch_arguments_are_checked() -> None:
    ds = _indexed(10)
    with pytest.raises(ValueError, match="batch_size"):
        ds.sample_batch("train", 11, torch.Generator())
    with pytest.raises(ValueError, match="batch_size"):
        next(ds.batches("train", 0, torch.Generator()))
    with pytest.raises(ValueError, match="train, valid, test"):
        ds.sample_batch("training", 1, torch.Generator())


@pytest.mark.parametrize("device", DEVICES)
def test_data_live_on_the_requested_device(device: str) -> None:
    ds = _digits("dynamic", device)
    assert ds.device.type == device
    assert all(ds.split(name).images.device.type == device for name in data.SPLITS)
    x, y = next(ds.batches("train", 32, torch.Generator(device=device).manual_seed(0)))
    assert x.device.type == device and y.device.type == device


# --- the download path (a real HTTP server on 127.0.0.1) -----------------------------------


def _cache_listing(cache: Path) -> list[str]:
    folder = cache / "mnist"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


@needs_mnist
def test_download_tries_mirrors_in_turn_verifies_and_caches(
    mnist_server: dict[str, str], mnist_raw: dict[str, np.ndarray], data_isolated: Path
) -> None:
    dead = _closed_port_url()
    mirrors = [dead, mnist_server["missing"], mnist_server["bad"], mnist_server["good"]]
    arrays = mnist_arrays(mirrors=mirrors, timeout_s=10)
    for key, array in mnist_raw.items():
        assert np.array_equal(arrays[key], array)
    names = sorted(spec.filename for spec in IDX_FILES["mnist"].values())
    assert _cache_listing(data_isolated) == names  # no temporary or corrupt file left
    for spec in IDX_FILES["mnist"].values():
        digest = hashlib.md5((data_isolated / "mnist" / spec.filename).read_bytes()).hexdigest()
        assert digest == spec.gz_md5
    # now offline: the cache alone provides the data
    ds = load_dataset(DataConfig(dataset="mnist", download=False, subset=10))
    assert ds.source == str(data_isolated / "mnist")


@needs_mnist
def test_corrupt_download_is_rejected_and_not_cached(
    mnist_server: dict[str, str], monkeypatch: pytest.MonkeyPatch, data_isolated: Path
) -> None:
    monkeypatch.setenv("GRADBENCH_MNIST_MIRRORS", mnist_server["bad"])
    with pytest.raises(DataNotFoundError) as excinfo:
        mnist_arrays()
    message = str(excinfo.value)
    for spec in IDX_FILES["mnist"].values():
        assert f"{mnist_server['bad']}{spec.filename}" in message
        assert spec.gz_md5 in message
    assert _cache_listing(data_isolated) == []


# --- offline ------------------------------------------------------------------------------


def test_offline_error_lists_every_place_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_isolated: Path
) -> None:
    monkeypatch.setenv("GRADBENCH_DATA", str(tmp_path / "env"))
    dead = os.environ["GRADBENCH_MNIST_MIRRORS"]
    with pytest.raises(DataNotFoundError) as excinfo:
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path / "arg")))
    message = str(excinfo.value)
    for place in [tmp_path / "arg", tmp_path / "env", data_isolated / "mnist"]:
        assert str(place) in message
    assert message.count(dead) == 1, "an unreachable mirror is tried once, not once per file"
    assert "--data-dir" in message and "GRADBENCH_DATA" in message
    assert _cache_listing(data_isolated) == []


def test_no_download_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded although download=False")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    with pytest.raises(DataNotFoundError, match="download disabled"):
        mnist_arrays(download=False)


def test_missing_mnist_is_an_error_saying_where_it_looked(data_isolated: Path) -> None:
    """The data are what the configuration names: no MNIST never means the digits."""
    with pytest.raises(DataNotFoundError) as excinfo:
        load_dataset(DataConfig())
    assert str(data_isolated / "mnist") in str(excinfo.value)


def test_the_digits_load_when_asked_for() -> None:
    ds = load_dataset(DataConfig(dataset="digits"))
    assert ds.name == "digits" and ds.info()["dataset"] == "digits"
    assert ds.input_dim == 64
    assert ds.source == "sklearn.datasets.load_digits"


@needs_mnist
def test_the_default_is_mnist() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(DataConfig(data_dir=str(SHARED_MNIST), subset=50))
    assert ds.name == "mnist" and ds.input_dim == 784 and len(ds.train) == 50


def test_explicit_dataset_never_falls_back() -> None:
    with pytest.raises(DataNotFoundError):
        load_dataset(DataConfig(dataset="mnist"))


@needs_mnist
def test_split_sizes_beyond_the_training_images_are_refused() -> None:
    config = DataConfig(dataset="mnist", data_dir=str(SHARED_MNIST), n_train=55_000)
    with pytest.raises(ValueError, match="60000"):
        load_dataset(config)


# --- the registry and its plugins ---------------------------------------------------------------

PLUGIN_DIR = Path(__file__).parent / "example_plugin"


def test_every_dataset_is_registered_with_a_summary() -> None:
    assert data.dataset_names() == DATASETS
    for name, source in data.DATASET_SOURCES.items():
        assert source.name == name and source.summary


def test_a_dataset_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        data.register_dataset(data.Digits)


def test_the_plugin_dataset_is_registered_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    try:
        assert data.load_plugins() == ["bars-and-stripes"]
        assert "bars-and-stripes" in data.dataset_names()
        ds = load_dataset(DataConfig(dataset="bars-and-stripes", binarization="dynamic"))
    finally:
        data.DATASET_SOURCES.pop("bars-and-stripes", None)
        sys.modules.pop("gradbench_example_plugin.dataset", None)
        sys.modules.pop("gradbench_example_plugin", None)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (300, 30, 30)
    assert (ds.name, ds.input_dim, ds.n_classes) == ("bars-and-stripes", 16, 2)
    images = ds.test.images.view(30, 4, 4)
    rows_equal = (images == images[:, :, :1]).all(-1).all(-1)
    columns_equal = (images == images[:, :1, :]).all(-1).all(-1)
    assert torch.equal(rows_equal | columns_equal, torch.ones(30, dtype=torch.bool))
    assert images.unique(dim=0).shape[0] == 30
    with pytest.raises(ValueError, match="valid: mnist, fashion-mnist, digits, binarized-mnist$"):
        DataConfig(dataset="bars-and-stripes")


# --- Larochelle & Murray's binarized MNIST -----------------------------------------------------

SHARED_BINARIZED = SHARED_MNIST.parent / "binarized-mnist"
needs_binarized = pytest.mark.skipif(
    not SHARED_BINARIZED.is_dir(), reason=f"the shared binarized MNIST is absent ({SHARED_BINARIZED})"
)
BINARIZED_PIXEL_MEANS = {"train": 0.13056, "valid": 0.13113, "test": 0.13251}  # its README's


@pytest.fixture(scope="module")
def plain_test_amat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test split's original .amat, uncompressed from the shared copy."""
    if not SHARED_BINARIZED.is_dir():
        pytest.skip(f"the shared binarized MNIST is absent ({SHARED_BINARIZED})")
    folder = tmp_path_factory.mktemp("amat")
    name = binarized_mnist.filename("test")
    (folder / name).write_bytes(gzip.decompress((SHARED_BINARIZED / f"{name}.gz").read_bytes()))
    return folder / name


@needs_binarized
def test_binarized_mnist_checksums_are_the_shared_sha256sums() -> None:
    listed = dict(
        reversed(line.split()) for line in (SHARED_BINARIZED / "SHA256SUMS").read_text().splitlines()
    )
    assert {binarized_mnist.filename(s): h for s, h in binarized_mnist.SHA256.items()} == listed


@needs_binarized
def test_binarized_mnist_from_the_shared_copy_has_larochelles_splits() -> None:
    ds = load_dataset(DataConfig(dataset="binarized-mnist", data_dir=str(SHARED_BINARIZED.parent)))
    assert ds.name == "binarized-mnist" and ds.source == str(SHARED_BINARIZED)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50_000, 10_000, 10_000)
    assert (ds.input_dim, ds.n_classes) == (784, 0)
    for split, mean in BINARIZED_PIXEL_MEANS.items():
        images = ds.split(split).images
        assert images.double().mean().item() == pytest.approx(mean, abs=5e-6)
        assert set(images.unique().tolist()) == {0.0, 1.0}
        assert (ds.split(split).labels == data.NO_LABEL).all()
    kept = load_dataset(DataConfig(dataset="binarized-mnist", data_dir=str(SHARED_BINARIZED),
                                   subset=100))
    assert torch.equal(kept.binarized("test", torch.Generator().manual_seed(1)),
                       ds.test.images[:100])  # the threshold: an identity on its pixels


@pytest.mark.parametrize("binarization", [b for b in BINARIZATIONS if b != "threshold"])
def test_a_binary_dataset_refuses_a_binarization_it_would_not_have(binarization: str) -> None:
    """Larochelle's pixels are 0 or 1 as published: a dynamic or fixed binarization of them would
    change nothing while the rows named it, so the configuration is refused before any work."""
    with pytest.raises(ValueError, match=f"binarized-mnist's pixels are binary as published: "
                                         f"binarization '{binarization}'"):
        DataConfig(dataset="binarized-mnist", binarization=binarization)
    assert DataConfig(dataset="mnist", binarization=binarization).binarization == binarization
    assert data.binarization_phrase("binarized-mnist", "threshold") == "binary as published"
    assert data.binarization_phrase("mnist", binarization) == f"{binarization} binarization"
    assert data.binarization_phrase("uninstalled", binarization) == f"{binarization} binarization"


@needs_binarized
def test_binarized_mnist_reads_the_plain_amat_like_its_gzip(plain_test_amat: Path) -> None:
    plain = binarized_mnist.read_verified(plain_test_amat, "test")
    packed = binarized_mnist.read_verified(SHARED_BINARIZED / f"{plain_test_amat.name}.gz", "test")
    assert plain.shape == (10_000, 784) and plain.dtype == np.uint8
    assert np.array_equal(plain, packed)
    first_line = plain_test_amat.read_bytes()[: 2 * 784].decode()
    assert plain[0].tolist() == [int(v) for v in first_line.split()]


@needs_binarized
@pytest.mark.parametrize("damage", ["bit-flip", "truncated", "wrong-split"])
def test_binarized_mnist_checksum_mismatch_names_the_file(
    tmp_path: Path, plain_test_amat: Path, damage: str
) -> None:
    blob = plain_test_amat.read_bytes()
    if damage == "bit-flip":
        blob = blob[:1000] + (b"1" if blob[1000:1001] == b"0" else b"0") + blob[1001:]
    elif damage == "truncated":
        blob = blob[: len(blob) // 2]
    bad = tmp_path / plain_test_amat.name
    bad.write_bytes(gzip.compress(blob) if damage == "truncated" else blob)
    split = "valid" if damage == "wrong-split" else "test"
    with pytest.raises(ChecksumError, match=re.escape(str(bad)) + ".*" + binarized_mnist.SHA256[split]):
        binarized_mnist.read_verified(bad, split)
    for name in ("train", "valid"):
        (tmp_path / f"{binarized_mnist.filename(name)}.gz").symlink_to(
            SHARED_BINARIZED / f"{binarized_mnist.filename(name)}.gz"
        )
    if damage != "wrong-split":
        with pytest.raises(ChecksumError, match=re.escape(str(bad))):
            load_dataset(DataConfig(dataset="binarized-mnist", data_dir=str(tmp_path), download=False))


@needs_binarized
def test_binarized_mnist_download_verifies_and_caches(
    tmp_path: Path, plain_test_amat: Path, monkeypatch: pytest.MonkeyPatch, data_isolated: Path
) -> None:
    """The test split missing locally: a corrupt mirror is rejected, the good one (a file://
    folder serving the original .amat) is verified and cached; then the cache alone serves it."""
    local = tmp_path / "local"
    local.mkdir()
    for name in ("train", "valid"):
        (local / f"{binarized_mnist.filename(name)}.gz").symlink_to(
            SHARED_BINARIZED / f"{binarized_mnist.filename(name)}.gz"
        )
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / plain_test_amat.name).symlink_to(plain_test_amat)
    _corrupt_copy(plain_test_amat, bad / plain_test_amat.name)
    monkeypatch.setenv("GRADBENCH_BINARIZED_MNIST_MIRRORS", f"{bad.as_uri()}/ {good.as_uri()}/")
    ds = load_dataset(DataConfig(dataset="binarized-mnist", data_dir=str(local)))
    cached = data_isolated / "binarized-mnist"
    assert sorted(os.listdir(cached)) == [plain_test_amat.name]
    assert ds.source == ", ".join(sorted([str(cached), str(local)]))
    assert ds.test.images.double().mean().item() == pytest.approx(0.13251, abs=5e-6)
    monkeypatch.setenv("GRADBENCH_BINARIZED_MNIST_MIRRORS", _closed_port_url())
    again = load_dataset(DataConfig(dataset="binarized-mnist", data_dir=str(local), download=False))
    assert torch.equal(again.test.images, ds.test.images)


def test_binarized_mnist_not_found_lists_the_places_and_the_mirror(data_isolated: Path) -> None:
    with pytest.raises(DataNotFoundError) as excinfo:
        load_dataset(DataConfig(dataset="binarized-mnist"))
    message = str(excinfo.value)
    assert str(data_isolated / "binarized-mnist") in message
    assert "binarized_mnist_train.amat" in message and "GRADBENCH_BINARIZED_MNIST_MIRRORS" in message
    assert binarized_mnist.MIRRORS[0].startswith("http://www.cs.toronto.edu/~larocheh/")
