"""Report figures: built from stored result rows only, saved as PNG and PDF.

Variance against minibatch size on log–log axes (one line per estimator, the stored confidence
band, the stored fitted slope in the legend), its noise and data parts, the signal-to-noise
ratio, training curves against epochs and wall-clock time, and seconds per epoch. Matplotlib
runs with the Agg backend; files carry no creation date or software stamp, so the same rows give
the same files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gradbench.report.tables import (  # noqa: E402
    TIMING,
    TRAINING,
    VARIANCE,
    DIVERGED,
    estimator_order,
    headline_groups,
    is_diverged,
    lookup,
    models_of,
    select,
    splits_of,
)

PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "Creator": None, "Producer": None}
DPI = 120


@dataclass
class Plot:
    """A report figure: file stem, title, the caption printed under it, and the figure."""

    name: str
    title: str
    caption: str
    figure: Figure

    def save(self, folder: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
        """Write ``name.png`` and/or ``name.pdf`` into ``folder``, close the figure; the paths."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for suffix in formats:
            path = folder / f"{self.name}.{suffix}"
            metadata = PNG_METADATA if suffix == "png" else PDF_METADATA
            self.figure.savefig(path, dpi=DPI, metadata=metadata)
            paths.append(path)
        plt.close(self.figure)
        return paths


def _style() -> dict[str, object]:
    return {"font.size": 9, "axes.grid": True, "grid.alpha": 0.3}


def _margins(
    figure: Figure, left: float = 0.75, right: float = 0.15, bottom: float = 0.5,
    top: float = 0.35, wspace: float = 0.3,
) -> None:
    """Fixed margins in inches (cheaper than tight_layout and the same on every run)."""
    width, height = figure.get_size_inches()
    figure.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height,
        top=1 - top / height, wspace=wspace,
    )


def _colors(names: list[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {n: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, n in enumerate(names)}


def _positive(values: pd.Series) -> bool:
    return bool(len(values)) and bool((values > 0).all())


def last_epoch(rows: pd.DataFrame) -> float | None:
    """The latest checkpoint (epoch) among the rows, or None."""
    epochs = rows["epoch"].dropna()
    return float(epochs.max()) if not epochs.empty else None


def _curve(rows: pd.DataFrame, metric: str, group: str, epoch: float | None) -> pd.DataFrame:
    """One estimator's metric against batch size, sorted, finite rows only."""
    chosen = select(rows, metric=metric, param_group=group)
    if epoch is not None:
        chosen = chosen[chosen["epoch"] == epoch]
    chosen = chosen.dropna(subset=["batch_size", "value"])
    chosen = chosen[np.isfinite(chosen["value"].to_numpy(float))]
    return chosen.sort_values("batch_size", kind="stable")


@dataclass(frozen=True)
class Series:
    """One metric drawn against minibatch size: its line style and legend suffix."""

    metric: str
    style: str = "-"
    suffix: str = ""


def _against_batch(
    rows: pd.DataFrame, model: str, series: tuple[Series, ...], ylabel: str, with_slope: bool
) -> Figure | None:
    """Per headline group, metrics against minibatch size on log–log axes, a colour per estimator.

    Non-positive values (an unbiased data-variance estimate can be negative) are left out of
    the log axis; confidence bands are drawn where the stored interval is positive.
    """
    variance = select(rows, experiment=VARIANCE, model=model)
    measured = variance[variance["metric"].isin([s.metric for s in series])]
    if measured["batch_size"].dropna().empty:
        return None
    epoch = last_epoch(measured)
    groups = headline_groups(model)
    names = estimator_order(model, variance)
    colors = _colors(names)
    with plt.rc_context(_style()):
        figure, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 3.5), squeeze=False)
        for axis, group in zip(axes[0], groups):
            for name in names:
                cell = select(variance, estimator=name)
                labelled = False
                for line in series:
                    curve = _curve(cell, line.metric, group, epoch)
                    curve = curve[curve["value"] > 0]
                    if curve.empty:
                        continue
                    label = None if labelled else name
                    labelled = True
                    if label is not None and with_slope:
                        slope = lookup(variance, VARIANCE, model, name,
                                       metric="log_variance_slope", param_group=group, epoch=epoch)
                        if isinstance(slope, float):
                            label = f"{label} (slope {slope:+.2f})"
                    x, y = curve["batch_size"].to_numpy(float), curve["value"].to_numpy(float)
                    axis.plot(x, y, line.style, marker="o", markersize=3, color=colors[name],
                              label=label)
                    low, high = curve["ci_low"], curve["ci_high"]
                    if low.notna().all() and high.notna().all() and _positive(low):
                        axis.fill_between(x, low.to_numpy(float), high.to_numpy(float),
                                          color=colors[name], alpha=0.15, linewidth=0)
                if not labelled and is_diverged(cell):
                    axis.plot([], [], " ", label=f"{name}: {DIVERGED}")
            if len(series) > 1:
                for line in series:
                    axis.plot([], [], line.style, color="black", label=line.suffix.strip(", "))
            axis.set_xscale("log")
            if axis.lines:
                axis.set_yscale("log")
            axis.set_xlabel("minibatch size M")
            axis.set_ylabel(ylabel)
            title = f"{model}, {group}" + (f", epoch {int(epoch)}" if epoch is not None else "")
            axis.set_title(title)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=6.5)
        _margins(figure)
    return figure


def variance_plots(rows: pd.DataFrame) -> Iterator[Plot]:
    """Variance, its noise and data parts, and SNR against minibatch size, per model."""
    for model in models_of(rows, VARIANCE):
        stem = model.replace("-", "_")
        figure = _against_batch(rows, model, (Series("grad_variance"),),
                                "gradient variance (mean over group)", True)
        if figure is not None:
            yield Plot(
                f"variance_vs_batch_{stem}",
                f"Gradient variance against minibatch size, {model}",
                "Log–log; band: stored 95% confidence interval; legend: fitted slope of log "
                "variance on log M (-1: variance falls as 1/M).",
                figure,
            )
        parts = (Series("grad_variance_noise", "-", ", noise"),
                 Series("grad_variance_data", "--", ", data"))
        figure = _against_batch(rows, model, parts, "variance part (mean over group)", False)
        if figure is not None:
            yield Plot(
                f"variance_parts_vs_batch_{stem}",
                f"Noise and data parts of the gradient variance, {model}",
                "Solid: noise part E_B[Var_eps(g|B)]; dashed: data part Var_B(E_eps[g|B]); they "
                "add up to the variance. Non-positive estimates of the data part are not drawn.",
                figure,
            )
        figure = _against_batch(rows, model, (Series("snr"),),
                                "signal-to-noise ratio |E g| / std g", False)
        if figure is not None:
            yield Plot(
                f"snr_vs_batch_{stem}",
                f"Signal-to-noise ratio against minibatch size, {model}",
                "SNR = |E[g]| / std[g] per parameter, root mean square over the group, "
                "squares debiased (Rainforth et al. 2018).",
                figure,
            )


def _training_metric(model: str, rows: pd.DataFrame) -> tuple[str, str, str] | None:
    """(metric, split, axis label) a model's training curve shows: held-out ELBO, or error."""
    if model == "bayes-mlp" and splits_of(rows, "error_rate"):
        metric, label = "error_rate", "classification error"
    else:
        metric, label = "elbo", "ELBO (nats)"
    splits = splits_of(rows, metric)
    if not splits:
        return None
    split = next((s for s in ("valid", "test") if s in splits), splits[0])
    return metric, split, f"{label}, {split}"


def training_plots(rows: pd.DataFrame) -> Iterator[Plot]:
    """Per model: the training curve against epochs and against wall-clock seconds."""
    for model in models_of(rows, TRAINING):
        training = select(rows, experiment=TRAINING, model=model)
        chosen = _training_metric(model, training)
        if chosen is None:
            continue
        metric, split, ylabel = chosen
        names = estimator_order(model, training)
        colors = _colors(names)
        with plt.rc_context(_style()):
            figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(8.4, 3.4))
            for name in names:
                cell = select(training, estimator=name)
                curve = select(cell, metric=metric, param_group=split)
                curve = curve.dropna(subset=["epoch", "value"])
                curve = curve[np.isfinite(curve["value"].to_numpy(float))].sort_values("epoch")
                label = f"{name} ({DIVERGED})" if is_diverged(cell) else name
                if curve.empty:
                    by_epoch.plot([], [], " ", label=label)
                    continue
                by_epoch.plot(curve["epoch"], curve["value"], marker="o", markersize=3,
                              color=colors[name], label=label)
                clock = select(cell, metric="wall_clock_s").dropna(subset=["epoch", "value"])
                clock = clock.drop_duplicates("epoch").set_index("epoch")["value"]
                joined = curve.set_index("epoch")["value"].to_frame("y").join(clock.rename("t"))
                joined = joined.dropna()
                if not joined.empty:
                    by_time.plot(joined["t"], joined["y"], marker="o", markersize=3,
                                 color=colors[name], label=label)
            by_epoch.set_xlabel("epoch")
            by_time.set_xlabel("wall-clock time (s)")
            for axis in (by_epoch, by_time):
                axis.set_ylabel(ylabel)
                if axis.get_legend_handles_labels()[0]:
                    axis.legend(fontsize=7)
            figure.suptitle(f"Training curves, {model}")
            _margins(figure, top=0.5)
        yield Plot(
            f"training_{model.replace('-', '_')}",
            f"Training curves of {model}",
            f"{ylabel} against epochs (left) and cumulative training wall-clock seconds (right).",
            figure,
        )


def timing_plot(rows: pd.DataFrame) -> Iterator[Plot]:
    """Seconds per epoch per model × estimator, as horizontal bars on a log axis."""
    timing = select(rows, experiment=TIMING, metric="seconds_per_epoch")
    models = models_of(timing, TIMING)
    bars = []
    for model in models:
        for name in estimator_order(model, select(timing, model=model)):
            value = lookup(timing, TIMING, model, name, metric="seconds_per_epoch")
            if isinstance(value, float) and value > 0:
                bars.append((f"{model} / {name}", value))
    if not bars:
        return
    with plt.rc_context(_style()):
        figure, axis = plt.subplots(figsize=(6.4, 0.3 * len(bars) + 1.2))
        labels, values = zip(*bars)
        positions = list(range(len(bars)))[::-1]
        axis.barh(positions, values, color="#4c72b0")
        axis.set_yticks(positions, labels)
        axis.set_xscale("log")
        axis.set_xlabel("seconds per epoch (median)")
        _margins(figure, left=2.4)
    yield Plot(
        "timing",
        "Seconds per training epoch",
        "Median over repeats; log axis.",
        figure,
    )


def all_plots(rows: pd.DataFrame) -> Iterator[Plot]:
    """Every figure the rows support, in report order, built one at a time."""
    yield from timing_plot(rows)
    yield from variance_plots(rows)
    yield from training_plots(rows)
