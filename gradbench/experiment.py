"""What every measurement command shares: data, model and estimator built from one setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gradbench.catalogue import check_applicable
from gradbench.data import Dataset
from gradbench.estimators import Estimator, base_name, estimator_class, make_estimator
from gradbench.estimators import variant_options
from gradbench.models import DataShape, StochasticModel, make_model
from gradbench.options import resolve_options


@dataclass(frozen=True)
class Setting:
    """A model with its options, trained and measured on one dataset with one seed."""

    model: str
    model_options: dict[str, Any] = field(default_factory=dict)
    estimator_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # by estimator name
    seed: int = 0

    def options_for(self, label: str) -> dict[str, Any]:
        """An estimator's options: the setting's for its name, under the variant's own."""
        return variant_options(label, self.estimator_options.get(base_name(label), {}))

    def resolved_options(self, label: str) -> dict[str, Any]:
        """Every option of an estimator or variant, typed and JSON-ready (for cell hashes)."""
        return resolve_options(estimator_class(label), self.options_for(label))

    def same_estimator(self, a: str, b: str) -> bool:
        """True when two labels name one configuration (``lr-baseline`` and
        ``lr-baseline[baseline=ema]``)."""
        return base_name(a) == base_name(b) and self.resolved_options(a) == self.resolved_options(b)


def data_shape(dataset: Dataset) -> DataShape:
    """The model-facing shape of a dataset."""
    return DataShape(dataset.input_dim, dataset.n_classes, len(dataset.train))


def build_model(setting: Setting, dataset: Dataset, device: torch.device) -> StochasticModel:
    """The model, initialised from ``setting.seed`` alone (identical for every estimator)."""
    torch.manual_seed(setting.seed)
    return make_model(setting.model, data_shape(dataset), setting.model_options).to(device)


def build_estimator(
    setting: Setting, name: str, dataset: Dataset, device: torch.device
) -> Estimator:
    """An estimator (or variant) that applies to the setting's model, bound to the data's input
    size."""
    check_applicable(name, setting.model)
    estimator = make_estimator(name, setting.estimator_options.get(base_name(name), {}))
    torch.manual_seed(setting.seed + 1)
    estimator.bind(dataset.input_dim)
    return estimator.to(device)
