"""Monte Carlo gradient estimators, one module each, behind the registry in ``base``."""

# Imported to register, in the order every listing and report uses.
from gradbench.estimators import lr  # noqa: F401  isort: skip
from gradbench.estimators import lr_baseline  # noqa: F401  isort: skip
from gradbench.estimators import reparam  # noqa: F401  isort: skip
from gradbench.estimators import reparam_per_example  # noqa: F401  isort: skip
from gradbench.estimators import local_reparam  # noqa: F401  isort: skip
from gradbench.estimators import gumbel_softmax  # noqa: F401  isort: skip
from gradbench.estimators import st_gumbel  # noqa: F401  isort: skip
from gradbench.estimators import target_prop  # noqa: F401  isort: skip
from gradbench.estimators import no_noise  # noqa: F401  isort: skip
from gradbench.estimators.base import (
    ESTIMATORS,
    Estimator,
    StochasticForward,
    applicable_estimators,
    base_name,
    estimator_class,
    estimator_names,
    make_estimator,
    parse_label,
    split_labels,
    variant_options,
)

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "StochasticForward",
    "applicable_estimators",
    "base_name",
    "estimator_class",
    "estimator_names",
    "make_estimator",
    "parse_label",
    "split_labels",
    "variant_options",
]
