"""What every measurement command shares: data, model and estimator built from one setting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gradbench.catalogue import applicable
from gradbench.data import Dataset
from gradbench.estimators import Estimator, make_estimator
from gradbench.models import DataShape, StochasticModel, make_model


@dataclass(frozen=True)
class Setting:
    """A model with its options, trained and measured on one dataset with one seed."""

    model: str
    model_options: dict[str, Any] = field(default_factory=dict)
    estimator_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0


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
    """An estimator that applies to the setting's model, bound to the data's input size."""
    valid = applicable(setting.model)
    if name not in valid:
        raise ValueError(
            f"estimator {name!r} does not apply to model {setting.model!r}; "
            f"applicable: {', '.join(valid)}"
        )
    estimator = make_estimator(name, setting.estimator_options.get(name, {}))
    torch.manual_seed(setting.seed + 1)
    estimator.bind(dataset.input_dim)
    return estimator.to(device)
