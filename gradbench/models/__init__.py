"""Shared models and toy problems."""

# Imported to register, in the order every listing and report uses.
from gradbench.models import gaussian_vae  # noqa: F401  isort: skip
from gradbench.models import categorical_vae  # noqa: F401  isort: skip
from gradbench.models import bayes_mlp  # noqa: F401  isort: skip
from gradbench.models.base import MODELS, DataShape, StochasticModel, make_model

__all__ = ["MODELS", "DataShape", "StochasticModel", "make_model"]
