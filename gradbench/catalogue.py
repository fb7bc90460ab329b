"""What gradbench contains, as tables: estimators, models, toy problems, applicability."""

from __future__ import annotations

import pandas as pd

from gradbench.data import DATASET_SOURCES
from gradbench.estimators import ESTIMATORS, base_name, estimator_class, make_estimator
from gradbench.experiments.metrics import APPLIES, EVALUATIONS, UNBIASED
from gradbench.models import MODELS
from gradbench.models.toy import PROBLEMS


def default_evaluations(name: str) -> str:
    """Decoder evaluations per gradient of an estimator with its default options, or "latent
    size" where they depend on the model's latent (enumeration)."""
    try:
        return str(make_estimator(name).evaluations)
    except RuntimeError:
        return "latent size"


def estimator_table() -> pd.DataFrame:
    """One row per estimator: name, unbiased, node kinds, evaluations per gradient, summary."""
    return pd.DataFrame(
        [
            {
                "estimator": name,
                UNBIASED: cls.unbiased,
                "nodes": ", ".join(sorted(cls.node_kinds)),
                EVALUATIONS: default_evaluations(name),
                "summary": cls.summary,
            }
            for name, cls in ESTIMATORS.items()
        ]
    )


def model_table() -> pd.DataFrame:
    """One row per shared model: name, task, node kinds, reference estimator, summary."""
    return pd.DataFrame(
        [
            {
                "model": name,
                "task": cls.task,
                "nodes": ", ".join(sorted(cls.node_kinds)),
                "reference": cls.reference_estimator,
                "summary": cls.summary,
            }
            for name, cls in MODELS.items()
        ]
    )


def dataset_table() -> pd.DataFrame:
    """One row per registered dataset (built-in and plugins'): name, summary."""
    return pd.DataFrame([{"dataset": name, "summary": cls.summary}
                         for name, cls in DATASET_SOURCES.items()])


def problem_table() -> pd.DataFrame:
    """One row per toy problem: name, node kinds, summary."""
    return pd.DataFrame(
        [
            {"problem": name, "nodes": ", ".join(sorted(cls.node_kinds)), "summary": cls.summary}
            for name, cls in PROBLEMS.items()
        ]
    )


def applicable(model_or_problem: str) -> list[str]:
    """Estimators that apply to a model or toy problem, in registry order."""
    cls = MODELS.get(model_or_problem) or PROBLEMS.get(model_or_problem)
    if cls is None:
        valid = ", ".join([*MODELS, *PROBLEMS])
        raise ValueError(f"unknown model or problem {model_or_problem!r}; valid: {valid}")
    return [
        name
        for name in ESTIMATORS
        if make_estimator(name).applies_to(cls.node_kinds, cls.has_inverse)
    ]


def check_applicable(label: str, model_or_problem: str) -> None:
    """ValueError unless the estimator (or variant) ``label`` applies to the model or problem,
    naming the applicable ones; an unknown name is an error naming the registered ones."""
    valid = applicable(model_or_problem)
    if base_name(label) not in valid:
        what = "model" if model_or_problem in MODELS else "problem"
        raise ValueError(
            f"estimator {label!r} does not apply to {what} {model_or_problem!r}; "
            f"applicable: {', '.join(valid)}"
        )


def applicability() -> pd.DataFrame:
    """Matrix: one row per model and toy problem, one column per estimator, "yes" where it applies."""
    rows = []
    for target in [*MODELS, *PROBLEMS]:
        chosen = set(applicable(target))
        rows.append({"model": target, **{e: "yes" if e in chosen else "" for e in ESTIMATORS}})
    return pd.DataFrame(rows)


CATALOGUE = "catalogue"
"""Experiment name of the stored catalogue cells: what applied to what when a run was made."""


def catalogue_rows(
    label: str, targets: list[str], evaluations: dict[str, int] | None = None
) -> list[dict[str, object]]:
    """Rows of one estimator or variant: ``applies`` (1/0) per model or toy problem (in
    ``param_group``), ``unbiased`` (1/0), and ``evaluations`` per model it ran on (decoder
    evaluations per gradient), so reports need not ask the live registry."""
    cls = estimator_class(label)
    rows: list[dict[str, object]] = [
        {"param_group": target, "metric": APPLIES,
         "value": float(base_name(label) in applicable(target))}
        for target in targets
    ]
    rows.append({"param_group": None, "metric": UNBIASED, "value": float(cls.unbiased)})
    rows += [
        {"param_group": model, "metric": EVALUATIONS, "value": float(count)}
        for model, count in (evaluations or {}).items()
    ]
    return rows
