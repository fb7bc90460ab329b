"""Report tables: built from stored result rows only, rendered as Markdown, LaTeX and CSV.

Every builder takes the tidy rows of :mod:`gradbench.results` (as prepared by
:func:`prepare_rows`) and returns a :class:`Table`, or ``None`` when the rows it needs are absent.
Nothing here measures anything; published figures come from :mod:`gradbench.report.published`
and sit in their own, labelled columns. Rendering is deterministic: the same rows give the same
bytes.

Conventions (stated again in the reports): a minibatch gradient is the gradient of the *mean*
per-example loss; a group's gradient variance is the mean over the group's parameters of each
parameter's variance over independent draws (Kingma et al. 2015, Table 1); the Table-1 analogue
uses minibatches of 100 where measured.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tabulate import tabulate

from gradbench.estimators import ESTIMATORS
from gradbench.measure.variance_stats import MIN_MINIBATCHES_FOR_COVERAGE
from gradbench.report import published as pub
from gradbench.results import COLUMNS, STATUS_DIVERGED, STATUS_OK

CATALOGUE = "catalogue"
VARIANCE = "variance"
TIMING = "timing"
TRAINING = "train"
"""Experiment names of the stored cells (gradbench.measure.variance, .timing, .training)."""

DIVERGED = "diverged"
"""What a table shows instead of a number for a cell whose gradients or losses were NaN or inf."""

TABLE_BATCH_SIZE = 100
"""Minibatch size of the Table-1 analogue (Kingma et al. 2015 do not state theirs)."""

KINGMA_ORDER = ("local-reparam", "reparam-per-example", "reparam", "no-noise")
"""Row order of Kingma et al.'s Table 1."""

TIMING_ORDER = ("reparam-per-example", "reparam", "local-reparam", "no-noise")
"""Row order of the timing table: slowest reference first, as in the paper's comparison."""

HEADLINE_GROUPS = {"bayes-mlp": ("top", "bottom")}
"""Parameter groups a model's variance tables show; VAEs default to encoder and decoder."""

SPLIT_ORDER = ("train", "valid", "test")

DECOMPOSITION_METRICS = ("grad_variance", "grad_variance_noise", "grad_variance_data", "snr")

Value = float | str | None
"""A table cell: a number, a text (a name, ``DIVERGED``) or None (not measured)."""


@dataclass(frozen=True)
class Column:
    """A table column: its header and how its numbers are written.

    ``kind``: ``text``; ``sci`` (two significant digits, 7.8e3, as Kingma et al.'s Table 1);
    ``fixed1``/``fixed2``/``fixed3`` (decimals); ``ratio`` (a speed-up, 221x); ``int``;
    ``percent`` (a fraction in [0, 1] written as a percentage).
    """

    label: str
    kind: str = "text"


@dataclass(frozen=True)
class Table:
    """A report table: a file stem, a title, columns, rows and the notes printed under it."""

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Value, ...], ...]
    notes: tuple[str, ...] = ()

    @property
    def headers(self) -> list[str]:
        """The column labels."""
        return [c.label for c in self.columns]

    def markdown(self) -> str:
        """GitHub-flavoured Markdown (tabulate), numbers as in the papers' tables."""
        body = [[display(v, c.kind) for v, c in zip(row, self.columns)] for row in self.rows]
        aligns = ["left" if c.kind == "text" else "right" for c in self.columns]
        text = tabulate(
            body, headers=self.headers, tablefmt="github", disable_numparse=True, colalign=aligns
        )
        return text + "\n"

    def latex(self) -> str:
        """A booktabs ``tabular``, ready to ``\\input`` inside a ``table`` environment."""
        spec = "".join("l" if c.kind == "text" else "r" for c in self.columns)
        lines = [
            f"% gradbench: {self.title}",
            *(f"% {note}" for note in self.notes),
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            " & ".join(latex_escape(h) for h in self.headers) + " \\\\",
            "\\midrule",
        ]
        for row in self.rows:
            cells = [display(v, c.kind, latex=True) for v, c in zip(row, self.columns)]
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """CSV with full-precision numbers (10 significant digits); empty where not measured."""
        stream = io.StringIO()
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(self.headers)
        for row in self.rows:
            writer.writerow([raw(v) for v in row])
        return stream.getvalue()


def raw(value: Value) -> str:
    """A cell as CSV text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return format(float(value), ".10g")


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    replacements = {
        "\\": "\\textbackslash{}",
        "&": "\\&",
        "%": "\\%",
        "$": "\\$",
        "#": "\\#",
        "_": "\\_",
        "{": "\\{",
        "}": "\\}",
        "~": "\\textasciitilde{}",
        "†": "\\textsuperscript{\\dag}",
        "^": "\\textasciicircum{}",
    }
    return "".join(replacements.get(ch, ch) for ch in text)


def display(value: Value, kind: str, latex: bool = False) -> str:
    """A cell as Markdown text, or as LaTeX when ``latex``."""
    if value is None:
        return "--" if latex else "—"
    if isinstance(value, str):
        return latex_escape(value) if latex else value
    number = float(value)
    if not math.isfinite(number):
        return DIVERGED
    if kind == "sci":
        if number == 0.0:
            return "$0$" if latex else "0"
        mantissa, exponent = f"{number:.1e}".split("e")
        if latex:
            return f"${mantissa}\\times10^{{{int(exponent)}}}$"
        return f"{mantissa}e{int(exponent)}"
    if kind == "ratio":
        text = f"{number:.0f}" if number >= 10 else f"{number:.1f}"
        return f"${text}\\times$" if latex else f"{text}x"
    if kind == "percent":
        return f"${100 * number:.2f}\\,\\%$" if latex else f"{100 * number:.2f} %"
    if kind == "int":
        return f"${number:.0f}$" if latex else f"{number:.0f}"
    decimals = {"fixed1": 1, "fixed2": 2, "fixed3": 3}.get(kind, 3)
    text = f"{number:.{decimals}f}"
    return f"${text}$" if latex else text


# ---------------------------------------------------------------------------- reading rows


def prepare_rows(frame: pd.DataFrame, profile: str | None = None) -> pd.DataFrame:
    """The rows reports read: typed, one row per measured quantity, in a stable order.

    ``profile`` keeps that profile's rows; without it, when rows of several profiles are stored,
    those of the profile whose newest row is newest are kept. Where one quantity (experiment,
    model, estimator, metric, group, batch size, epoch) was stored under several configurations,
    the most recently created row is kept (ties broken by configuration hash).
    """
    rows = frame.copy()
    for column in COLUMNS:
        if column not in rows:
            rows[column] = None
    for column in ("batch_size", "epoch", "value", "ci_low", "ci_high", "n", "steps_timed", "seed"):
        rows[column] = pd.to_numeric(rows[column], errors="coerce")
    for column in ("experiment", "model", "estimator", "param_group", "metric"):
        rows[column] = rows[column].astype("string")
    for column in ("status", "created_at", "profile", "config_hash", "dataset", "device",
                   "device_name", "torch_version", "git_commit", "code_version",
                   "estimates_elbo_gradient", "contended", "coverage_checked"):
        if column not in rows:
            rows[column] = None
        rows[column] = rows[column].astype("string").fillna("")
    rows.loc[rows["status"] == "", "status"] = STATUS_OK
    if rows.empty:
        return rows.reset_index(drop=True)
    if profile is not None:
        rows = rows[rows["profile"] == profile]
    elif rows["profile"].nunique() > 1:
        newest = rows.groupby("profile")["created_at"].max().reset_index()
        chosen = newest.sort_values(["created_at", "profile"], kind="stable")["profile"].iloc[-1]
        rows = rows[rows["profile"] == chosen]
    keys = ["experiment", "model", "estimator", "metric", "param_group", "batch_size", "epoch"]
    order = keys + ["created_at", "config_hash"]
    rows = rows.sort_values(order, kind="stable", na_position="first")
    rows = rows.drop_duplicates(subset=keys, keep="last")
    return rows.reset_index(drop=True)


def select(rows: pd.DataFrame, **criteria: object) -> pd.DataFrame:
    """Rows whose columns equal the given values (numbers compared as numbers)."""
    mask = pd.Series(True, index=rows.index)
    for column, wanted in criteria.items():
        if wanted is None:
            mask &= rows[column].isna()
        else:
            mask &= rows[column] == wanted
    return rows[mask]


def is_diverged(rows: pd.DataFrame) -> bool:
    """True if any row is marked diverged or holds an infinite value (NaN alone: not measured)."""
    if rows.empty:
        return False
    values = rows["value"].to_numpy(float)
    infinite = np.isinf(values).any()
    return bool((rows["status"] == STATUS_DIVERGED).any() or infinite)


def lookup(
    rows: pd.DataFrame, experiment: str, model: str, estimator: str, **criteria: object
) -> Value:
    """One measured value, ``DIVERGED``, or None when it was not measured.

    Where no row matches but the cell diverged (training stopped before this checkpoint),
    the answer is ``DIVERGED``.
    """
    cell = select(rows, experiment=experiment, model=model, estimator=estimator)
    match = select(cell, **criteria)
    if match.empty:
        return DIVERGED if is_diverged(cell) else None
    if is_diverged(match):
        return DIVERGED
    value = float(match["value"].iloc[-1])
    return value if math.isfinite(value) else None


def interval(rows: pd.DataFrame, **criteria: object) -> tuple[float, float] | None:
    """The stored (ci_low, ci_high) of the one row matching ``criteria``, if any and finite."""
    match = select(rows, **criteria)
    if match.empty:
        return None
    low, high = match["ci_low"].iloc[-1], match["ci_high"].iloc[-1]
    if pd.isna(low) or pd.isna(high):
        return None
    return float(low), float(high)


def estimators_of(rows: pd.DataFrame, model: str, preferred: Sequence[str] = ()) -> list[str]:
    """Estimators with rows for ``model``: the ``preferred`` ones in that order, then sorted."""
    present = set(select(rows, model=model)["estimator"].dropna())
    return [e for e in preferred if e in present] + sorted(present - set(preferred))


def models_of(rows: pd.DataFrame, experiment: str) -> list[str]:
    """Models with rows of ``experiment``, sorted."""
    return sorted(set(select(rows, experiment=experiment)["model"].dropna()))


def headline_groups(model: str) -> tuple[str, ...]:
    """The parameter groups a model's variance table shows."""
    return HEADLINE_GROUPS.get(model, ("encoder", "decoder"))


def nearest_batch_size(sizes: Sequence[float], target: int = TABLE_BATCH_SIZE) -> int | None:
    """The stored batch size closest to ``target`` (the smaller on a tie)."""
    finite = sorted({int(s) for s in sizes if pd.notna(s)})
    if not finite:
        return None
    return min(finite, key=lambda s: (abs(s - target), s))


def epoch_label(epoch: float) -> str:
    """A checkpoint's column label: "10 ep"."""
    return f"{int(epoch)} ep"


def label_key(label: str) -> tuple[int, str]:
    """Sort key of an estimator label: its estimator's registry position, then the label."""
    names = list(ESTIMATORS)
    base = label.partition("[")[0]
    return (names.index(base) if base in names else len(names), label)


def estimator_order(model: str, rows: pd.DataFrame) -> list[str]:
    """Row order for a model: Kingma et al.'s for bayes-mlp, registry order otherwise, each
    estimator's variants together."""
    if model == "bayes-mlp":
        return estimators_of(rows, model, KINGMA_ORDER)
    present = set(select(rows, model=model)["estimator"].dropna())
    return sorted(present, key=label_key)


OTHER_OBJECTIVE = "†"
"""Marks an estimator whose direction is the gradient of another objective than the ELBO."""

OTHER_OBJECTIVE_NOTE = (
    f"{OTHER_OBJECTIVE} Not an estimate of the ELBO's gradient: the direction of another "
    "objective (target propagation's encoder; no-noise: the network at its mean weights), "
    "shown for comparison, not beside unbiased estimates as their equal."
)


def other_objective(rows: pd.DataFrame, estimator: str) -> bool:
    """True when the stored rows of ``estimator`` say its direction is not the ELBO gradient's."""
    flags = select(rows, estimator=estimator)["estimates_elbo_gradient"]
    return bool((flags.str.lower() == "false").any())


def marked(rows: pd.DataFrame, estimator: str) -> str:
    """The estimator's label, with :data:`OTHER_OBJECTIVE` when its direction is not an ELBO
    gradient."""
    return f"{estimator} {OTHER_OBJECTIVE}" if other_objective(rows, estimator) else estimator


def coverage_notes(rows: pd.DataFrame) -> tuple[str, ...]:
    """A note when some variance intervals come from fewer minibatches than the number at which
    their coverage was verified by simulation (gradbench.measure.variance_stats)."""
    flags = select(rows, experiment=VARIANCE)["coverage_checked"].str.lower()
    if not (flags == "false").any():
        return ()
    return (
        f"Intervals of {int((flags == 'false').sum())} variance rows come from fewer than "
        f"{MIN_MINIBATCHES_FOR_COVERAGE} minibatches, below which their 95 % coverage was not "
        "verified in simulations with heavy-tailed (Student-t, 5 d.o.f.) gradients: read them as "
        "approximate.",
    )


NAMED_VARIANTS = {
    "lr-baseline[baseline=learned]": "NVIL (Mnih & Gregor 2014): the score function with a "
    "learned, input-dependent baseline",
}
"""Variants that the literature knows under a name of their own."""


def variant_notes(estimators: Sequence[str]) -> tuple[str, ...]:
    """A note naming each listed variant the literature knows by another name."""
    return tuple(
        f"{label} is {NAMED_VARIANTS[label]}." for label in estimators if label in NAMED_VARIANTS
    )


def objective_notes(rows: pd.DataFrame, estimators: Sequence[str]) -> tuple[str, ...]:
    """The other-objective note, when a table lists an estimator it marks."""
    return (OTHER_OBJECTIVE_NOTE,) if any(other_objective(rows, e) for e in estimators) else ()


# ---------------------------------------------------------------------------- timing


def timing_bayes_mlp(rows: pd.DataFrame) -> Table | None:
    """bayes-mlp's seconds per epoch per estimator, speed-up, Kingma et al.'s 1635 s / 7.4 s."""
    timing = select(rows, experiment=TIMING, model="bayes-mlp")
    if timing.empty:
        return None
    batch = nearest_batch_size(timing["batch_size"])
    if batch is not None:
        timing = timing[(timing["batch_size"] == batch) | timing["batch_size"].isna()]
    names = estimators_of(timing, "bayes-mlp", TIMING_ORDER)
    seconds = {e: lookup(timing, TIMING, "bayes-mlp", e, metric="seconds_per_epoch") for e in names}
    reference = seconds.get("reparam-per-example")
    published_seconds = pub.KINGMA_2015_SECONDS_PER_EPOCH
    published_reference = published_seconds["reparam-per-example"]
    table_rows = []
    for name in names:
        ours = seconds[name]
        speedup = lookup(
            timing, TIMING, "bayes-mlp", name, metric="speedup", param_group="reparam-per-example"
        )
        if speedup is None and isinstance(ours, float) and isinstance(reference, float):
            speedup = reference / ours if ours > 0 else None
        theirs = published_seconds.get(name)
        table_rows.append(
            (
                name,
                ours,
                speedup,
                extrapolation(timing, name),
                timing_conditions(timing, name),
                theirs,
                published_reference / theirs if theirs else None,
            )
        )
    return Table(
        name="timing_bayes_mlp",
        title="Seconds per training epoch, variational-dropout MLP (bayes-mlp)",
        columns=(
            Column("estimator"),
            Column("s/epoch (ours)", "fixed2"),
            Column("speed-up vs reparam-per-example (ours)", "ratio"),
            Column("extrapolated"),
            Column("conditions"),
            Column(pub.published_label(pub.KINGMA_2015, "s/epoch"), "fixed1"),
            Column(pub.published_label(pub.KINGMA_2015, "speed-up"), "ratio"),
        ),
        rows=tuple(table_rows),
        notes=(
            f"Ours: median over repeats of a full epoch's optimizer steps, minibatch {batch}; "
            "speed-up = s/epoch of reparam-per-example / s/epoch of the estimator (medians).",
            "Published: Kingma, Salimans & Welling (2015), separate weight samples per example "
            "1635 s vs local reparameterization 7.4 s per epoch, on the authors' hardware.",
            CONTENDED_NOTE,
        ),
    )


def extrapolation(timing: pd.DataFrame, estimator: str) -> Value:
    """"no", or "yes (N steps)" when an epoch's time was extrapolated from N timed steps."""
    match = select(timing, estimator=estimator, metric="seconds_per_epoch")
    if match.empty:
        return None
    flag = str(match["extrapolated"].iloc[-1]).strip().lower() in {"true", "1", "yes"}
    if not flag:
        return "no"
    steps = match["steps_timed"].iloc[-1]
    return f"yes ({int(steps)} steps)" if pd.notna(steps) else "yes"


def timing_conditions(timing: pd.DataFrame, estimator: str) -> Value:
    """Torch threads of the measurement, and ``contended`` when other processes kept the
    cores busy meanwhile (the row says so; gradbench.measure.timing)."""
    match = select(timing, estimator=estimator, metric="seconds_per_epoch")
    if match.empty:
        return None
    threads = match["torch_threads"].iloc[-1] if "torch_threads" in match else None
    text = f"{int(float(threads))} thr." if pd.notna(threads) and str(threads) != "" else ""
    if str(match["contended"].iloc[-1]).strip().lower() in {"true", "1"}:
        text = f"{text}, contended" if text else "contended"
    return text or None


CONTENDED_NOTE = (
    "thr.: torch threads during the measurement; contended: other processes kept more cores busy "
    "than the measurement left free, so that time is inflated and not comparable."
)


def timing_models(rows: pd.DataFrame) -> Table | None:
    """Seconds per epoch and per step, examples per second, of every model but bayes-mlp."""
    models = [m for m in models_of(rows, TIMING) if m != "bayes-mlp"]
    table_rows = []
    for model in models:
        timing = select(rows, experiment=TIMING, model=model)
        batch = nearest_batch_size(timing["batch_size"])
        if batch is not None:
            timing = timing[(timing["batch_size"] == batch) | timing["batch_size"].isna()]
        for name in estimator_order(model, timing):
            table_rows.append(
                (
                    model,
                    name,
                    float(batch) if batch is not None else None,
                    lookup(timing, TIMING, model, name, metric="seconds_per_epoch"),
                    lookup(timing, TIMING, model, name, metric="seconds_per_step"),
                    lookup(timing, TIMING, model, name, metric="examples_per_second"),
                    extrapolation(timing, name),
                    timing_conditions(timing, name),
                )
            )
    if not table_rows:
        return None
    return Table(
        name="timing_vaes",
        title="Seconds per training epoch of the VAEs, per estimator",
        columns=(
            Column("model"),
            Column("estimator"),
            Column("batch size", "int"),
            Column("s/epoch", "fixed2"),
            Column("s/step", "sci"),
            Column("examples/s", "int"),
            Column("extrapolated"),
            Column("conditions"),
        ),
        rows=tuple(table_rows),
        notes=(
            "Median over repeats; an epoch is a full pass of optimizer steps over the training "
            "set.",
            CONTENDED_NOTE,
        ),
    )


# ---------------------------------------------------------------------------- variance


def variance_table(rows: pd.DataFrame, model: str) -> Table | None:
    """Gradient variance per estimator × (group, checkpoint) at minibatch 100 (Kingma's Table 1).

    For bayes-mlp the groups are the top and bottom weight layers and the paper's Table 1 sits
    beside ours; for the VAEs, the encoder's and the decoder's parameters.
    """
    variance = select(rows, experiment=VARIANCE, model=model, metric="grad_variance")
    if variance.empty:
        return None
    batch = nearest_batch_size(variance["batch_size"])
    at_batch = variance[variance["batch_size"] == batch]
    epochs = sorted({float(e) for e in at_batch["epoch"].dropna()})
    groups = headline_groups(model)
    ours = [(g, e) for g in groups for e in epochs]
    columns = [Column("estimator")]
    columns += [Column(f"{g}, {epoch_label(e)}", "sci") for g, e in ours]
    theirs: list[tuple[str, int]] = []
    if model == "bayes-mlp":
        columns.insert(1, Column("Kingma et al. row"))
        theirs = [(g, e) for g in groups for e in (10, 100)]
        columns += [
            Column(pub.published_label(pub.KINGMA_2015, f"{g}, {e} ep"), "sci") for g, e in theirs
        ]
    table_rows = []
    cell_rows = select(rows, experiment=VARIANCE, model=model)
    names = estimator_order(model, cell_rows)
    for name in names:
        row: list[Value] = [marked(cell_rows, name)]
        if model == "bayes-mlp":
            row.append(pub.KINGMA_2015_ROW_NAMES.get(name))
        scoped = cell_rows[(cell_rows["batch_size"] == batch) | cell_rows["batch_size"].isna()]
        row += [
            lookup(scoped, VARIANCE, model, name, metric="grad_variance", param_group=g, epoch=e)
            for g, e in ours
        ]
        row += [pub.KINGMA_2015_TABLE1.get(name, {}).get(key) for key in theirs]
        table_rows.append(tuple(row))
    notes = [
        f"Ours: mean over the group's parameters of each parameter's variance over independent "
        f"minibatch gradients (fresh data and noise), minibatch {batch}, at parameters after the "
        "given number of training epochs; gradient of the mean per-example loss.",
    ]
    if model == "bayes-mlp":
        notes.append(
            "Published: Kingma, Salimans & Welling (2015), Table 1, their hardware and scaling "
            "(minibatch size and sum/mean convention not stated); compare orderings, not values."
        )
    notes += variant_notes(names)
    notes += objective_notes(cell_rows, names)
    notes += coverage_notes(cell_rows)
    return Table(
        name=f"variance_{model.replace('-', '_')}",
        title=f"Gradient variance of {model} by estimator (Table 1 analogue)",
        columns=tuple(columns),
        rows=tuple(table_rows),
        notes=tuple(notes),
    )


def slope_table(rows: pd.DataFrame) -> Table | None:
    """Fitted slope of log variance against log minibatch size per model × estimator × group."""
    slopes = select(rows, experiment=VARIANCE, metric="log_variance_slope")
    if slopes.empty:
        return None
    table_rows = []
    for model in models_of(slopes, VARIANCE):
        groups = (*headline_groups(model), "all")
        for name in estimator_order(model, select(slopes, model=model)):
            cell = select(slopes, model=model, estimator=name)
            for group in groups:
                epochs = select(cell, param_group=group)["epoch"].dropna()
                for epoch in sorted({float(e) for e in epochs}):
                    value = lookup(cell, VARIANCE, model, name, metric="log_variance_slope",
                                   param_group=group, epoch=epoch)
                    bounds = interval(cell, param_group=group, epoch=epoch)
                    low, high = bounds if bounds and isinstance(value, float) else (None, None)
                    table_rows.append(
                        (model, marked(cell, name), group, epoch, value, low, high)
                    )
    if not table_rows:
        return None
    return Table(
        name="variance_slopes",
        title="Slope of log gradient variance against log minibatch size",
        columns=(
            Column("model"),
            Column("estimator"),
            Column("group"),
            Column("epoch", "int"),
            Column("slope", "fixed2"),
            Column("95% CI low", "fixed2"),
            Column("95% CI high", "fixed2"),
        ),
        rows=tuple(table_rows),
        notes=(
            "A slope near -1: variance falls as 1/M (independent noise per example); "
            "near 0: a shared noise sample's covariance dominates (Kingma et al. 2015).",
            *objective_notes(slopes, list(set(slopes["estimator"].dropna()))),
        ),
    )


def decomposition_table(rows: pd.DataFrame) -> Table | None:
    """Noise and data parts of the variance (law of total variance) and SNR, at minibatch 100."""
    variance = select(rows, experiment=VARIANCE)
    table_rows = []
    batches: set[int] = set()
    for model in models_of(variance, VARIANCE):
        scoped = select(variance, model=model)
        batch = nearest_batch_size(select(scoped, metric="grad_variance")["batch_size"])
        if batch is None:
            continue
        batches.add(batch)
        epochs = select(scoped, metric="grad_variance", batch_size=batch)["epoch"].dropna()
        epoch = float(epochs.max()) if not epochs.empty else None
        for name in estimator_order(model, scoped):
            for group in headline_groups(model):
                values = [
                    lookup(scoped, VARIANCE, model, name, metric=metric, param_group=group,
                           batch_size=batch, epoch=epoch)
                    for metric in DECOMPOSITION_METRICS
                ]
                total, noise, data, snr = values
                share: Value = DIVERGED if DIVERGED in values else None
                if isinstance(noise, float) and isinstance(total, float) and total > 0:
                    share = noise / total
                table_rows.append(
                    (model, marked(scoped, name), group, epoch, total, noise, data, share, snr)
                )
    if not table_rows:
        return None
    return Table(
        name="variance_decomposition",
        title="Noise and data parts of the gradient variance, and signal-to-noise ratio",
        columns=(
            Column("model"),
            Column("estimator"),
            Column("group"),
            Column("epoch", "int"),
            Column("variance", "sci"),
            Column("noise part", "sci"),
            Column("data part", "sci"),
            Column("noise share", "percent"),
            Column("SNR", "sci"),
        ),
        rows=tuple(table_rows),
        notes=(
            f"Minibatch {', '.join(str(b) for b in sorted(batches))}, last checkpoint. "
            "Law of total "
            "variance: variance = E_B[Var_eps(g|B)] (noise) + Var_B(E_eps[g|B]) (data). SNR = "
            "|E[g]| / std[g] per parameter, root mean square over the group, squares debiased "
            "(Rainforth et al. 2018).",
            *objective_notes(variance, list(set(variance["estimator"].dropna()))),
            *coverage_notes(variance),
        ),
    )


# ---------------------------------------------------------------------------- training


def final_epoch_rows(rows: pd.DataFrame, model: str) -> pd.DataFrame:
    """Each estimator's training rows at its last recorded epoch (diverged rows kept)."""
    training = select(rows, experiment=TRAINING, model=model)
    if training.empty:
        return training
    last = training.groupby("estimator")["epoch"].transform("max")
    return training[(training["epoch"] == last) | training["epoch"].isna()]


def splits_of(rows: pd.DataFrame, metric: str) -> list[str]:
    """The data splits (param_group) a metric was evaluated on, in train/valid/test order."""
    present = set(select(rows, metric=metric)["param_group"].dropna())
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


def elbo_table(rows: pd.DataFrame, model: str) -> Table | None:
    """Final reconstruction log-likelihood, ELBO and importance-weighted bound per estimator.

    For the categorical VAE, the thesis' Table 5.1 (train / validation reconstruction
    log-likelihood) and Jang et al.'s negative ELBO sit beside ours.
    """
    final = final_epoch_rows(rows, model)
    if final.empty:
        return None
    specs = [("reconstruction_ll", "recon. log-lik."), ("elbo", "ELBO"), ("iw_bound", "IW bound")]
    measured = [(metric, split, f"{label}, {split}") for metric, label in specs
                for split in splits_of(final, metric)]
    columns = [Column("estimator"), Column("epoch", "int")]
    columns += [Column(label, "fixed2") for _, _, label in measured]
    categorical = model == "categorical-vae"
    bernoulli = model == "bernoulli-vae"
    if bernoulli:
        columns += [
            Column(pub.published_label(pub.JANG_2017, "-ELBO, their model", False), "fixed1"),
            Column(pub.published_label(pub.YIN_ZHOU_2019, "-log p(x), linear", False), "fixed1"),
            Column(pub.published_label(pub.YIN_ZHOU_2019, "-log p(x), nonlinear", False),
                   "fixed1"),
        ]
    if categorical:
        columns += [
            Column(pub.published_label(pub.NITTA_2017, "recon. log-lik., train", False), "fixed3"),
            Column(pub.published_label(pub.NITTA_2017, "recon. log-lik., valid", False), "fixed3"),
            Column(pub.published_label(pub.JANG_2017, "-ELBO, their model", False), "fixed1"),
        ]
    table_rows = []
    names = estimator_order(model, final)
    for name in names:
        epochs = select(final, estimator=name)["epoch"].dropna()
        row: list[Value] = [marked(final, name), float(epochs.max()) if not epochs.empty else None]
        row += [
            lookup(final, TRAINING, model, name, metric=metric, param_group=split)
            for metric, split, _ in measured
        ]
        if bernoulli:
            arm_table = pub.YIN_ZHOU_2019_NEG_LOG_LIKELIHOOD.get(name, {})
            row += [pub.JANG_2017_VAE_BERN_NEG_ELBO.get(name), arm_table.get("linear"),
                    arm_table.get("nonlinear")]
        if categorical:
            thesis = pub.NITTA_2017_TABLE51.get(pub.NITTA_2017_ROW_FOR.get(name, ""))
            row += [thesis[0] if thesis else None, thesis[1] if thesis else None]
            row.append(pub.JANG_2017_VAE_CAT_NEG_ELBO.get(name))
        table_rows.append(tuple(row))
    notes = ["Ours: nats per example, higher is better, at the last epoch trained."]
    notes += variant_notes(names)
    notes += objective_notes(final, names)
    if bernoulli:
        notes += [
            "Published: Jang, Gu & Poole (2017), Table 1, VAE (Bern.) negative ELBO, and Yin & "
            "Zhou (2019), test -log p(x), both in nats (lower is better: compare with minus our "
            "ELBO and IW bound), on MNIST with Larochelle's static binarization, which gradbench "
            "does not ship (ours: the run's binarization, stated in the header); Yin & Zhou's "
            "linear and nonlinear networks as gradbench's bernoulli-vae architectures.",
        ]
    if categorical:
        shown = {pub.NITTA_2017_ROW_FOR.get(name) for name in names}
        for label, (train, valid) in pub.NITTA_2017_TABLE51.items():
            if label not in shown:
                blanks: list[Value] = [None] * (1 + len(measured))
                table_rows.append((f"{label} (published only)", *blanks, train, valid, None))
        notes += [
            "Published: Nitta (2017), Table 5.1, 784-500-300(30x10)-500-784 after 50 epochs, "
            "train / validation reconstruction log-likelihood; its Gumbel-softmax rows used "
            "tau = 0.5 and 0.1, annealed per epoch.",
            "Published: Jang, Gu & Poole (2017), Table 1, VAE (Cat.) negative ELBO in nats "
            "(lower is better) of their 20x10 model with a learned prior.",
        ]
    return Table(
        name=f"elbo_{model.replace('-', '_')}",
        title=f"Reconstruction log-likelihood and bounds of {model} by estimator",
        columns=tuple(columns),
        rows=tuple(table_rows),
        notes=tuple(notes),
    )


def classification_table(rows: pd.DataFrame) -> Table | None:
    """bayes-mlp's final test error and ELBO per estimator, Kingma et al.'s best error beside."""
    model = "bayes-mlp"
    final = final_epoch_rows(rows, model)
    if final.empty:
        return None
    measured = [("error_rate", s, f"error, {s}", "percent") for s in splits_of(final, "error_rate")]
    measured += [("elbo", s, f"ELBO, {s}", "fixed2") for s in splits_of(final, "elbo")]
    low, high = pub.KINGMA_2015_TEST_ERROR_PERCENT
    columns = [Column("estimator"), Column("epoch", "int")]
    columns += [Column(label, kind) for _, _, label, kind in measured]
    columns.append(Column(pub.published_label(pub.KINGMA_2015, "best test error, Fig. 1")))
    table_rows = []
    names = estimator_order(model, final)
    for name in names:
        epochs = select(final, estimator=name)["epoch"].dropna()
        row: list[Value] = [marked(final, name), float(epochs.max()) if not epochs.empty else None]
        row += [
            lookup(final, TRAINING, model, name, metric=metric, param_group=split)
            for metric, split, _, _ in measured
        ]
        row.append(f"{low:.2f}-{high:.2f} %" if name == "local-reparam" else None)
        table_rows.append(tuple(row))
    return Table(
        name="classification_bayes_mlp",
        title="Classification error and ELBO of bayes-mlp by estimator",
        columns=tuple(columns),
        rows=tuple(table_rows),
        notes=(
            "Published: Kingma, Salimans & Welling (2015), Figure 1, variational dropout (A2), "
            "750-1250 units per layer, many more epochs; read from the plot.",
            *objective_notes(final, names),
        ),
    )


# ---------------------------------------------------------------------------- catalogue


SCHEDULE_METRICS = ("temperature", "beta")


def schedule_table(rows: pd.DataFrame) -> Table | None:
    """The annealed settings actually in force: Gumbel-softmax's τ and target propagation's β at
    every variance checkpoint and at the first, the checkpoint and the last training epochs."""
    stored = rows[(rows["param_group"] == "schedule") & rows["metric"].isin(SCHEDULE_METRICS)]
    if stored.empty:
        return None
    table_rows = []
    for model in sorted(set(stored["model"].dropna())):
        scoped = select(stored, model=model)
        checkpoints = {float(e) for e in select(scoped, experiment=VARIANCE)["epoch"].dropna()}
        for name in estimator_order(model, scoped):
            for experiment, what in ((TRAINING, "training"), (VARIANCE, "variance checkpoint")):
                cell = select(scoped, estimator=name, experiment=experiment)
                epochs = sorted({float(e) for e in cell["epoch"].dropna()})
                if experiment == TRAINING and epochs:
                    epochs = sorted({epochs[0], epochs[-1], *(checkpoints & set(epochs))})
                for epoch in epochs:
                    at = select(cell, epoch=epoch)
                    values = [
                        float(select(at, metric=m)["value"].iloc[-1])
                        if not select(at, metric=m).empty else None
                        for m in SCHEDULE_METRICS
                    ]
                    table_rows.append((model, marked(scoped, name), what, epoch, *values))
    return Table(
        name="schedules",
        title="Annealed temperature and KL weight actually reached",
        columns=(
            Column("model"), Column("estimator"), Column("measurement"), Column("epoch", "int"),
            Column("temperature", "fixed3"), Column("beta", "fixed3"),
        ),
        rows=tuple(table_rows),
        notes=(
            "Training: the value the epoch's last optimizer step used (epoch 0: the first step's); "
            "variance checkpoint: the value the gradient draws used. Every epoch's value is in the "
            "stored rows (param_group schedule).",
            *objective_notes(stored, list(set(stored["estimator"].dropna()))),
        ),
    )


def applicability_table(rows: pd.DataFrame) -> Table | None:
    """Which estimator (or variant) applied to which model and toy problem, from the stored
    catalogue cells of the run (gradbench.catalogue.catalogue_rows)."""
    stored = select(rows, experiment=CATALOGUE, metric="applies")
    if stored.empty:
        return None
    labels = sorted(set(stored["estimator"].dropna()), key=label_key)
    targets = list(dict.fromkeys(stored["param_group"].dropna()))
    table_rows = []
    for target in targets:
        entry: list[Value] = [target]
        for label in labels:
            match = select(stored, estimator=label, param_group=target)
            entry.append("yes" if not match.empty and float(match["value"].iloc[-1]) else "")
        table_rows.append(tuple(entry))
    return Table(
        name="applicability",
        title="Which estimator applies to which model",
        columns=(Column("model"), *(Column(label) for label in labels)),
        rows=tuple(table_rows),
        notes=("Stored with the run: the node kinds each estimator supported then.",),
    )


def diverged_table(rows: pd.DataFrame) -> Table | None:
    """Every experiment × model × estimator whose gradients or losses became NaN or inf."""
    keys = ["experiment", "model", "estimator"]
    found = []
    for key, cell in rows.groupby(keys, sort=True, dropna=False):
        if is_diverged(cell):
            epochs = cell[cell["status"] == STATUS_DIVERGED]["epoch"].dropna()
            first = float(epochs.min()) if not epochs.empty else None
            found.append((*(str(k) for k in key), first))
    if not found:
        return None
    return Table(
        name="diverged",
        title="Diverged cells (NaN or inf gradients or losses)",
        columns=(
            Column("experiment"), Column("model"), Column("estimator"), Column("epoch", "int")
        ),
        rows=tuple(found),
        notes=("The run recorded these and went on with the other cells.",),
    )


def all_tables(rows: pd.DataFrame) -> list[Table]:
    """Every table the rows support, in report order."""
    from gradbench.report.bias_tables import bias_table  # it builds on this module's pieces
    from gradbench.report.work_tables import work_normalised_table

    models = sorted(set(rows["model"].dropna())) if not rows.empty else []
    candidates: list[Table | None] = [timing_bayes_mlp(rows), timing_models(rows)]
    variance_models = ["bayes-mlp"] + [m for m in models if m != "bayes-mlp"]
    candidates += [variance_table(rows, m) for m in variance_models]
    candidates += [slope_table(rows), decomposition_table(rows), work_normalised_table(rows)]
    candidates += [bias_table(rows)]
    others = [m for m in models if m not in ("categorical-vae", "bayes-mlp")]
    elbo_models = ["categorical-vae", *others]
    candidates += [elbo_table(rows, m) for m in elbo_models]
    candidates += [schedule_table(rows), classification_table(rows), applicability_table(rows)]
    candidates += [diverged_table(rows)]
    return [t for t in candidates if t is not None]
