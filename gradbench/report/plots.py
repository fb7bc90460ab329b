"""Report figures: built from stored result rows only, saved as PNG and PDF.

Variance against minibatch size on log–log axes (one line per estimator, the fitted slope in
the legend), its noise and data parts, the signal-to-noise ratio, training curves against epochs
and wall-clock time, and seconds per epoch. Over several seeds a line is the mean over seeds and
its band the 95 % t-interval over seeds (:mod:`gradbench.report.aggregate`); with one seed the
line is that seed's and the band its stored within-seed interval, where it has one. Each
estimator keeps one colour and marker in every figure (:func:`estimator_styles`, distinct for 28
estimators), legends sit outside the axes and files are cropped to what is drawn, so nothing is
clipped. Matplotlib runs with the Agg backend; files carry no creation date or software stamp, so
the same rows give the same files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gradbench.experiments.metrics import (  # noqa: E402
    ELBO,
    ERROR_RATE,
    GRAD_VARIANCE,
    GRAD_VARIANCE_DATA,
    GRAD_VARIANCE_NOISE,
    LOG_VARIANCE_SLOPE,
    SECONDS_PER_EPOCH,
    SNR,
    WALL_CLOCK_S,
)
from gradbench.report.aggregate import Estimate, curve, over_seeds  # noqa: E402
from gradbench.report.notes import at_one_checkpoint, seed_phrase  # noqa: E402
from gradbench.report.paper import headline_groups  # noqa: E402
from gradbench.report.rows import (  # noqa: E402
    DIVERGED,
    TIMING,
    TRAINING,
    VARIANCE,
    estimator_order,
    is_diverged,
    label_key,
    models_of,
    seeds_of,
    select,
    splits_of,
)

if TYPE_CHECKING:
    from gradbench.experiments.base import Experiment

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
            self.figure.savefig(path, dpi=DPI, metadata=metadata, bbox_inches="tight",
                                pad_inches=0.05)
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


MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p")
MARKERS_PER_CURVE = 26
"""A training curve of more points than twice this shows a marker every few points (one per
point up to 51: the papers' 50 epochs and the start), so a 1,000-epoch curve stays a line."""


def palette() -> list[str]:
    """Distinct colours, strongest first: tab10, then Dark2's, then tab20's light shades."""
    found = [*plt.get_cmap("tab10").colors, *plt.get_cmap("Dark2").colors,
             *plt.get_cmap("tab20").colors[1::2]]
    return list(dict.fromkeys(matplotlib.colors.to_hex(c) for c in found))


@dataclass(frozen=True)
class Style:
    """How one estimator is drawn in every figure of a report."""

    color: str
    marker: str


def estimator_styles(rows: pd.DataFrame) -> dict[str, Style]:
    """One colour and marker per estimator label of the rows (every experiment), in registry
    order: the same in every figure; colours are distinct up to the palette's size, and
    (colour, marker) pairs beyond it."""
    names = sorted({str(n) for n in rows["estimator"].dropna()}, key=label_key)
    colors = palette()
    return {name: Style(colors[i % len(colors)], MARKERS[i % len(MARKERS)])
            for i, name in enumerate(names)}


def _legend_outside(axis: plt.Axes) -> None:
    """The axis' legend to its right, outside the data."""
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


PANEL_WIDTH = 4.0
"""Width of one panel's axes in inches, in figures whose panels sit side by side."""
NEXT_PANEL_LABELS = 0.85
"""Inches left of a panel's axes for its tick labels and y label."""


def _fit_panels(figure: Figure, axes: list[plt.Axes], left: float = 0.75) -> None:
    """Panels of :data:`PANEL_WIDTH` side by side, each followed by its legend: one gap for all,
    the widest legend (measured by the renderer) plus :data:`NEXT_PANEL_LABELS` for the next
    panel's tick and y labels, so no legend reaches the next panel and the widest fills its
    gap."""
    renderer = figure.canvas.get_renderer()
    legends = [axis.get_legend() for axis in axes]
    legend_width = max(
        (legend.get_window_extent(renderer).width / figure.dpi
         for legend in legends if legend is not None), default=0.0)
    gap = legend_width + 0.1 + NEXT_PANEL_LABELS
    width = left + len(axes) * PANEL_WIDTH + (len(axes) - 1) * gap + legend_width + 0.2
    figure.set_figwidth(width)
    _margins(figure, left=left, right=width - left - len(axes) * PANEL_WIDTH
             - (len(axes) - 1) * gap, wspace=gap / PANEL_WIDTH)


def last_epoch(rows: pd.DataFrame) -> float | None:
    """The latest checkpoint (epoch) among the rows, or None."""
    epochs = rows["epoch"].dropna()
    return float(epochs.max()) if not epochs.empty else None


def band(points: list[tuple[float, Estimate]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The band of a line: the t-interval over seeds, or one seed's stored interval; None where
    a point has none or (on a log axis) a bound is not positive."""
    low = np.array([e.low for _, e in points])
    high = np.array([e.high for _, e in points])
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (low > 0).all()):
        return None
    return low, high


def seeds_caption(rows: pd.DataFrame, several: str, one: str) -> str:
    """The part of a caption that says what a line and a band are, for the rows' seeds."""
    count = len(seeds_of(rows))
    return several.format(seeds=seed_phrase(count)) if count > 1 else one


@dataclass(frozen=True)
class Series:
    """One metric drawn against minibatch size: its line style and legend suffix."""

    metric: str
    style: str = "-"
    suffix: str = ""


def _against_batch(
    rows: pd.DataFrame, model: str, series: tuple[Series, ...], ylabel: str, with_slope: bool,
    styles: dict[str, Style],
) -> Figure | None:
    """Per headline group, metrics against minibatch size on log–log axes, a colour per estimator.

    Non-positive values (an unbiased data-variance estimate can be negative) are left out of
    the log axis; bands are drawn where every bound is positive. Only cells of one set of
    parameters per checkpoint are drawn (:func:`gradbench.report.notes.at_one_checkpoint`; the
    variance table lists those left out).
    """
    variance, _ = at_one_checkpoint(select(rows, experiment=VARIANCE, model=model))
    measured = variance[variance["metric"].isin([s.metric for s in series])]
    if measured["batch_size"].dropna().empty:
        return None
    epoch = last_epoch(measured)
    groups = headline_groups(model, measured["param_group"])
    names = estimator_order(model, variance)
    with plt.rc_context(_style()):
        figure, axes = plt.subplots(1, len(groups), figsize=(PANEL_WIDTH * len(groups), 3.5),
                                    squeeze=False)
        for axis, group in zip(axes[0], groups):
            for name in names:
                cell = select(variance, estimator=name)
                labelled = False
                for line in series:
                    chosen = select(cell, metric=line.metric, param_group=group, epoch=epoch)
                    points = [(x, e) for x, e in curve(chosen, "batch_size") if e.mean > 0]
                    if not points:
                        continue
                    label = None if labelled else name
                    labelled = True
                    if label is not None and with_slope:
                        slope = over_seeds(variance, VARIANCE, model, name,
                                           metric=LOG_VARIANCE_SLOPE, param_group=group,
                                           epoch=epoch)
                        if slope is not None and slope.n > 0:
                            label = f"{label} (slope {slope.mean:+.2f})"
                    x = np.array([x for x, _ in points])
                    style = styles[name]
                    axis.plot(x, [e.mean for _, e in points], line.style, marker=style.marker,
                              markersize=4, color=style.color, label=label)
                    bounds = band(points)
                    if bounds is not None:
                        axis.fill_between(x, *bounds, color=style.color, alpha=0.12, linewidth=0)
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
            _legend_outside(axis)
        _fit_panels(figure, list(axes[0]))
    return figure


def variance_plots(
    rows: pd.DataFrame, styles: dict[str, Style] | None = None
) -> Iterator[Plot]:
    """Variance, its noise and data parts, and SNR against minibatch size, per model; ``styles``:
    the report's (default: :func:`estimator_styles` of ``rows``)."""
    styles = styles if styles is not None else estimator_styles(rows)
    for model in models_of(rows, VARIANCE):
        stem = model.replace("-", "_")
        lines = seeds_caption(
            select(rows, experiment=VARIANCE, model=model),
            "Lines: mean over {seeds}; bands: 95 % t-interval over seeds.",
            "1 seed; bands: that seed's stored 95 % interval.",
        )
        figure = _against_batch(rows, model, (Series(GRAD_VARIANCE),),
                                "gradient variance (mean over group)", True, styles)
        if figure is not None:
            yield Plot(
                f"variance_vs_batch_{stem}",
                f"Gradient variance against minibatch size, {model}",
                f"Log–log. {lines} Legend: fitted slope of log variance on log M (mean over "
                "seeds; -1: variance falls as 1/M).",
                figure,
            )
        parts = (Series(GRAD_VARIANCE_NOISE, "-", ", noise"),
                 Series(GRAD_VARIANCE_DATA, "--", ", data"))
        figure = _against_batch(rows, model, parts, "variance part (mean over group)", False,
                                styles)
        if figure is not None:
            yield Plot(
                f"variance_parts_vs_batch_{stem}",
                f"Noise and data parts of the gradient variance, {model}",
                "Solid: noise part E_B[Var_eps(g|B)]; dashed: data part Var_B(E_eps[g|B]); they "
                "add up to the variance. Non-positive estimates of the data part are not drawn. "
                f"{lines}",
                figure,
            )
        figure = _against_batch(rows, model, (Series(SNR),),
                                "signal-to-noise ratio |E g| / std g", False, styles)
        if figure is not None:
            yield Plot(
                f"snr_vs_batch_{stem}",
                f"Signal-to-noise ratio against minibatch size, {model}",
                "SNR = |E[g]| / std[g] per parameter, root mean square over the group, "
                f"squares debiased (Rainforth et al. 2018). {lines}",
                figure,
            )


def _training_metric(rows: pd.DataFrame) -> tuple[str, str, str] | None:
    """(metric, split, axis label) a model's training curve shows: a classifier's held-out
    error, any other model's held-out ELBO."""
    if splits_of(rows, ERROR_RATE):
        metric, label = ERROR_RATE, "classification error"
    else:
        metric, label = ELBO, "ELBO (nats)"
    splits = splits_of(rows, metric)
    if not splits:
        return None
    split = next((s for s in ("valid", "test") if s in splits), splits[0])
    return metric, split, f"{label}, {split}"


def later_range(values: list[np.ndarray]) -> tuple[float, float] | None:
    """The y-range of the curves after their first point (the jump from the initial epoch
    would squeeze every estimator into one line), with a 5 % margin; None with too few."""
    later = np.concatenate([v[1:] for v in values if len(v) > 1] or [np.array([])])
    later = later[np.isfinite(later)]
    if later.size < 2 or later.max() == later.min():
        return None
    margin = 0.05 * (later.max() - later.min())
    return float(later.min() - margin), float(later.max() + margin)


def training_plots(
    rows: pd.DataFrame, styles: dict[str, Style] | None = None
) -> Iterator[Plot]:
    """Per model: the training curve against epochs and against wall-clock seconds, the y-axis
    fitted to the epochs after the first; ``styles`` as in :func:`variance_plots`."""
    styles = styles if styles is not None else estimator_styles(rows)
    for model in models_of(rows, TRAINING):
        training = select(rows, experiment=TRAINING, model=model)
        chosen = _training_metric(training)
        if chosen is None:
            continue
        metric, split, ylabel = chosen
        names = estimator_order(model, training)
        drawn: list[np.ndarray] = []
        with plt.rc_context(_style()):
            figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(9.0, 3.6))
            for name in names:
                cell = select(training, estimator=name)
                points = curve(select(cell, metric=metric, param_group=split), "epoch")
                label = f"{name} ({DIVERGED})" if is_diverged(cell) else name
                if not points:
                    by_epoch.plot([], [], " ", label=label)
                    continue
                epochs = np.array([x for x, _ in points])
                means = np.array([e.mean for _, e in points])
                style = styles[name]
                drawn.append(means)
                every = max(1, len(epochs) // MARKERS_PER_CURVE)
                by_epoch.plot(epochs, means, marker=style.marker, markersize=4, color=style.color,
                              label=label, markevery=every)
                spread = [(e.low, e.high) if e.over_seeds else (np.nan, np.nan)
                          for _, e in points]
                low, high = np.array(spread).T
                if np.isfinite(low).all():
                    by_epoch.fill_between(epochs, low, high, color=style.color, alpha=0.12,
                                          linewidth=0)
                clock = dict(curve(select(cell, metric=WALL_CLOCK_S), "epoch"))
                timed = [(clock[x].mean, e.mean) for x, e in points if x in clock]
                if timed:
                    seconds, values = zip(*timed)
                    by_time.plot(seconds, values, marker=style.marker, markersize=4,
                                 color=style.color, markevery=every)
            by_epoch.set_xlabel("epoch")
            by_time.set_xlabel("wall-clock time (s)")
            limits = later_range(drawn)
            for axis in (by_epoch, by_time):
                axis.set_ylabel(ylabel)
                if limits is not None:
                    axis.set_ylim(*limits)
            if by_epoch.get_legend_handles_labels()[0]:
                figure.legend(*by_epoch.get_legend_handles_labels(), fontsize=6.5,
                              loc="upper left", bbox_to_anchor=(1.0, 0.9))
            figure.suptitle(f"Training curves, {model}")
            _margins(figure, top=0.5, wspace=0.35)
        lines = seeds_caption(
            training,
            "Lines: mean over {seeds} (wall-clock: mean seconds at each epoch); band (left): "
            "95 % t-interval over seeds.",
            "1 seed.",
        )
        yield Plot(
            f"training_{model.replace('-', '_')}",
            f"Training curves of {model}",
            f"{ylabel} against epochs (left) and cumulative training wall-clock seconds (right); "
            f"the y-axis spans the epochs after the first, so the first point may lie below it. "
            f"{lines}",
            figure,
        )


def timing_plot(rows: pd.DataFrame) -> Iterator[Plot]:
    """Seconds per epoch per model × estimator, as horizontal bars on a log axis, with the
    t-interval over seeds as error bars where there are several seeds."""
    timing = select(rows, experiment=TIMING, metric=SECONDS_PER_EPOCH)
    bars: list[tuple[str, Estimate]] = []
    for model in models_of(timing, TIMING):
        for name in estimator_order(model, select(timing, model=model)):
            value = over_seeds(timing, TIMING, model, name, metric=SECONDS_PER_EPOCH)
            if value is not None and value.n > 0 and value.mean > 0:
                bars.append((f"{model} / {name}", value))
    if not bars:
        return
    with plt.rc_context(_style()):
        figure, axis = plt.subplots(figsize=(6.4, 0.3 * len(bars) + 1.2))
        positions = list(range(len(bars)))[::-1]
        means = np.array([e.mean for _, e in bars])
        errors = None
        if any(e.over_seeds for _, e in bars):
            half = np.array([e.half_width if e.over_seeds else 0.0 for _, e in bars])
            errors = np.vstack([half, half])
        axis.barh(positions, means, xerr=errors, color="#4c72b0", ecolor="black", capsize=2)
        axis.set_yticks(positions, [label for label, _ in bars])
        axis.set_xscale("log")
        axis.set_xlim(left=means.min() / 3)  # a whisker below 0 runs off the log axis
        axis.set_xlabel("seconds per epoch (median)")
        _margins(figure, left=0.3)
    yield Plot(
        "timing",
        "Seconds per training epoch",
        "Median over repeats; log axis. "
        + seeds_caption(timing, "Bars: mean over {seeds}; whiskers: 95 % t-interval over seeds.",
                        "1 seed."),
        figure,
    )


def owned_plots(rows: pd.DataFrame) -> Iterator[tuple[Experiment, Plot]]:
    """Every figure the rows support with the experiment whose ``PLOTS`` drew it, in the
    experiments' registry order, built one at a time."""
    from gradbench.experiments.registry import experiments  # the experiments import this module

    for experiment in experiments().values():
        for builder in experiment.PLOTS:
            for plot in builder(rows):
                yield experiment, plot


def all_plots(rows: pd.DataFrame) -> Iterator[Plot]:
    """Every figure the rows support, in report order (:func:`owned_plots`)."""
    for _, plot in owned_plots(rows):
        yield plot
