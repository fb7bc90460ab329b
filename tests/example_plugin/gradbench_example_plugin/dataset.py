"""A dataset from another package, found through the entry-point group ``gradbench.datasets``.

MacKay's bars and stripes on a 4×4 grid: every image whose rows are all equal (a stripe pattern,
label 0) or whose columns are all equal (bars, label 1), the blank and the full image once each
(label 0): 2·2⁴ − 2 = 30 binary images. Training repeats them 10 times in a fixed order,
validation and test hold each once. The class is not decorated: the entry point names it and
gradbench registers it on load.
"""

from __future__ import annotations

import itertools

import numpy as np

from gradbench.data import DataConfig, DatasetSource, LoadedData

SIDE = 4
TRAIN_REPEATS = 10


def bars_and_stripes() -> tuple[np.ndarray, np.ndarray]:
    """The 30 distinct patterns, uint8 [30, 16], and their labels [30] (1: vertical bars)."""
    images, labels = [], []
    for bits in itertools.product([0, 1], repeat=SIDE):
        stripes = np.repeat(np.array(bits, dtype=np.uint8)[:, None], SIDE, axis=1)
        images.append(stripes.reshape(-1))
        labels.append(0)
        if 0 < sum(bits) < SIDE:
            images.append(stripes.T.reshape(-1))
            labels.append(1)
    return np.stack(images), np.array(labels, dtype=np.int64)


class BarsAndStripes(DatasetSource):
    """4×4 bars and stripes, 300 / 30 / 30."""

    name = "bars-and-stripes"
    summary = "plugin example: MacKay's 4x4 bars and stripes, 300 / 30 / 30"

    def load(self, config: DataConfig) -> LoadedData:
        images, labels = bars_and_stripes()
        splits = {
            "train": (np.tile(images, (TRAIN_REPEATS, 1)), np.tile(labels, TRAIN_REPEATS)),
            "valid": (images, labels),
            "test": (images, labels),
        }
        return LoadedData(self.name, splits, pixel_max=1.0, source=__name__, n_classes=2)
