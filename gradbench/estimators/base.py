"""The estimator contract and registry.

We want ∇ E_{z~q}[f(z)]. A model's forward pass hands each stochastic node to the estimator
(``z = estimator.sample(node)``), computes per-example losses from the samples, and returns a
:class:`StochasticForward`. ``estimator.surrogate(forward)`` then returns per-example surrogate
losses whose *value* is the model's loss and whose autograd *gradient* is the estimator's update
direction (Pyro's trick: value + (s − stopgrad(s))). Models never branch on estimator names;
estimators declare what they need as attributes (``node_kinds``, ``needs_inverse``) and
measurement code branches on those.

Mutable estimator state (a moving-average baseline, an annealing clock) lives on the estimator
object and changes only in :meth:`Estimator.observe`, called once per optimizer step, so that
``sample`` and ``surrogate`` are pure and can run under ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from gradbench.estimators.nodes import StochasticNode
from gradbench.options import build_with_options, option_defaults


class NotApplicable(ValueError):
    """An estimator cannot run on this model configuration, though it supports its node kinds
    (e.g. more latent configurations than it may enumerate). Runs skip the pair and say why."""


@dataclass
class StochasticForward:
    """What a model's forward pass returns: per-sample, per-example terms.

    ``regularizer`` [batch]: the part of the loss computed analytically from the distributions'
    parameters (KL to the prior, a weight KL divided by the data size); its shape is the batch
    shape. ``data_loss`` [*sample_shape, batch]: the part that depends on the samples (−log p(x|z),
    the cross-entropy of a noisy network), one value per drawn sample when the estimator draws
    ``sample_shape`` values per example (:attr:`Estimator.sample_shape`). ``reconstruction``: the
    decoder's mean output, for estimators that need it (target propagation). ``nodes``/``samples``:
    each stochastic node and the value drawn from it. Shapes are checked: a data loss or a log
    probability that is not ``sample_shape + batch_shape`` raises ValueError instead of
    broadcasting.
    """

    data_loss: Tensor
    regularizer: Tensor
    nodes: list[StochasticNode] = field(default_factory=list)
    samples: list[Tensor] = field(default_factory=list)
    reconstruction: Tensor | None = None

    def __post_init__(self) -> None:
        batch = self.regularizer.shape
        if self.data_loss.shape[self.data_loss.dim() - len(batch) :] != batch:
            raise ValueError(
                f"data_loss of shape {tuple(self.data_loss.shape)} does not end with the batch "
                f"shape {tuple(batch)} of the regularizer"
            )

    @property
    def batch_shape(self) -> torch.Size:
        """The examples' shape, that of the regularizer."""
        return self.regularizer.shape

    @property
    def sample_shape(self) -> torch.Size:
        """The leading dimensions of ``data_loss`` over draws per example (empty for one)."""
        return self.data_loss.shape[: self.data_loss.dim() - self.regularizer.dim()]

    @property
    def loss(self) -> Tensor:
        """Per-sample, per-example loss data_loss + regularizer [*sample_shape, batch] (the
        negative ELBO for the VAEs)."""
        return self.data_loss + self.regularizer

    def mean_loss(self) -> Tensor:
        """The loss averaged over the sample dimensions, [batch]."""
        dims = tuple(range(len(self.sample_shape)))
        return self.loss.mean(dims) if dims else self.loss

    def log_prob(self) -> Tensor:
        """Σ over nodes of log q(sample), [*sample_shape, batch]: the score the LR estimators
        use. ValueError when a node's log probability has another shape."""
        total = torch.zeros_like(self.data_loss)
        for node, sample in zip(self.nodes, self.samples):
            log_q = node.log_prob(sample)
            if log_q.shape != self.data_loss.shape:
                raise ValueError(
                    f"log q of shape {tuple(log_q.shape)} does not match the data loss's "
                    f"{tuple(self.data_loss.shape)} (sample shape + batch shape)"
                )
            total = total + log_q
        return total

    def context(self) -> Tensor | None:
        """The model input the stochastic nodes were inferred from, if any node records it."""
        for node in self.nodes:
            if getattr(node, "context", None) is not None:
                return node.context
        return None


class Estimator(nn.Module):
    """Base class: turns stochastic nodes into samples and a surrogate loss.

    Subclasses set ``name``, ``summary``, ``unbiased`` and ``node_kinds`` and implement
    :meth:`sample` and :meth:`gradient_term` (a per-example tensor whose gradient is the
    estimator's). Hyperparameters are keyword arguments of ``__init__`` with typed defaults.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    unbiased: ClassVar[bool]
    node_kinds: ClassVar[frozenset[str]]
    needs_inverse: ClassVar[bool] = False
    estimates_elbo_gradient: ClassVar[bool] = True
    """False when the direction is the gradient of another objective (target propagation's
    encoder, a network without its noise): reports mark such rows."""
    objective: ClassVar[str] = "the model's loss (negative ELBO)"
    """What the direction is a gradient (or an estimate of the gradient) of, in words."""

    def __init__(self) -> None:
        super().__init__()
        self.label = self.name
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # The run the estimator is part of (0: not planned): annealing schedules are fractions
        # of it, so that every profile, however long, reaches its final temperature or weight.
        self.register_buffer("planned_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps_per_epoch", torch.zeros((), dtype=torch.long))

    def plan(self, total_steps: int, steps_per_epoch: int) -> None:
        """Tell the estimator how long the run it takes part in is (optimizer steps)."""
        if total_steps < 0 or steps_per_epoch < 1:
            raise ValueError(
                f"a run plan needs total_steps >= 0 and steps_per_epoch >= 1, got "
                f"{total_steps}, {steps_per_epoch}"
            )
        self.planned_steps.fill_(total_steps)
        self.steps_per_epoch.fill_(steps_per_epoch)

    def run_fraction(self, per_epoch: bool = False) -> float | None:
        """Fraction of the planned run done (completed epochs over planned epochs when
        ``per_epoch``, else steps over planned steps); None when no run was planned."""
        planned = int(self.planned_steps)
        if planned == 0:
            return None
        done = int(self.steps)
        if per_epoch:
            per = int(self.steps_per_epoch)
            return (done // per) / max(1.0, planned / per)
        return done / planned

    def schedule(self) -> dict[str, float]:
        """Annealed settings at the current step (e.g. ``{"temperature": 0.5}``); reports
        state them at every epoch and checkpoint. Empty for estimators without a schedule."""
        return {}

    def schedule_at(self, steps: int) -> dict[str, float]:
        """:meth:`schedule` as it stood when the clock read ``steps`` (the clock is kept)."""
        clock = self.steps.clone()
        self.steps.fill_(steps)
        try:
            return self.schedule()
        finally:
            self.steps.copy_(clock)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Values drawn per example and node: ``sample`` returns ``sample_shape + batch_shape +
        event_shape`` and the model's data loss is ``sample_shape + batch_shape``."""
        return ()

    @property
    def evaluations(self) -> int:
        """Evaluations of the model's sample-dependent part (the decoder) per gradient; compare
        estimators at matched evaluations."""
        return math.prod(self.sample_shape)

    def sample(self, node: StochasticNode) -> Tensor:
        """Draw the value the model continues with; how gradients flow through it is the estimator."""
        raise NotImplementedError

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        """Per-example tensor [batch] whose autograd gradient is the estimator's update direction."""
        return forward.mean_loss()

    def value(self, forward: StochasticForward) -> Tensor:
        """The per-example loss the surrogate reports, [batch]: the mean over the samples drawn
        (an exact expectation for the enumerating estimator)."""
        return forward.mean_loss()

    def surrogate(self, forward: StochasticForward) -> Tensor:
        """Per-example surrogate [batch]: value = :meth:`value`, gradient = that of
        :meth:`gradient_term`. ValueError when the term's shape is not the batch shape."""
        term = self.gradient_term(forward)
        if term.shape != forward.batch_shape:
            raise ValueError(
                f"estimator {self.label!r} returned a gradient term of shape "
                f"{tuple(term.shape)}; expected the batch shape {tuple(forward.batch_shape)}"
            )
        return self.value(forward).detach() + (term - term.detach())

    def observe(self, forward: StochasticForward) -> None:
        """Update state after an optimizer step (baselines, annealing clocks)."""
        self.steps += 1

    @property
    def tracks_losses(self) -> bool:
        """True when ``observe`` adapts the estimator to the losses it sees (a moving-average
        baseline), so measurements at fixed parameters must let it settle there first."""
        return False

    def bind(self, input_dim: int | None) -> None:
        """Build parameters that depend on the model's input size (e.g. a learned baseline)."""

    def applies_to(self, node_kinds: frozenset[str], has_inverse: bool) -> bool:
        """True when every node kind of a model is supported and its structural needs are met."""
        return node_kinds <= self.node_kinds and (has_inverse or not self.needs_inverse)

    def _check_kind(self, node: StochasticNode) -> None:
        if node.kind not in self.node_kinds:
            raise TypeError(
                f"estimator {self.name!r} does not support {node.kind} nodes "
                f"(supports: {', '.join(sorted(self.node_kinds))})"
            )


ESTIMATORS: dict[str, type[Estimator]] = {}

E = TypeVar("E", bound=type[Estimator])


def register_estimator(cls: E) -> E:
    """Class decorator: add an estimator to the registry under ``cls.name``."""
    if cls.name in ESTIMATORS:
        raise ValueError(f"estimator {cls.name!r} registered twice")
    ESTIMATORS[cls.name] = cls
    return cls


def estimator_names() -> list[str]:
    """Registered estimator names, in registration order."""
    return list(ESTIMATORS)


def split_labels(text: str) -> list[str]:
    """Split a comma-separated list of estimator labels, keeping commas inside ``[...]``.

    ``"lr,gumbel-softmax[temperature=0.5,anneal_rate=0]"`` → ``["lr",
    "gumbel-softmax[temperature=0.5,anneal_rate=0]"]``. Unbalanced brackets raise ValueError.
    """
    labels, depth, current = [], 0, []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in estimator list {text!r}")
        if char == "," and depth == 0:
            labels.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise ValueError(f"unbalanced '[' in estimator list {text!r}")
    labels.append("".join(current))
    return [label.strip() for label in labels if label.strip()]


def parse_label(label: str) -> tuple[str, dict[str, str]]:
    """An estimator label ``NAME`` or ``NAME[KEY=VALUE,...]`` → (registered name, options).

    A variant is one configuration of an estimator; its label is what result rows, tables and
    plots call it. Unknown names, malformed brackets and unknown keys raise ValueError naming
    the valid choices; option values stay strings (the estimator converts and validates them).
    """
    text = label.strip()
    name, bracket, rest = text.partition("[")
    name = name.strip()
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; valid: {', '.join(ESTIMATORS)}")
    options: dict[str, str] = {}
    if not bracket:
        return name, options
    if not rest.endswith("]") or "[" in rest[:-1] or "]" in rest[:-1]:
        raise ValueError(f"malformed estimator variant {label!r}; expected NAME[KEY=VALUE,...]")
    valid = option_defaults(ESTIMATORS[name])
    for item in rest[:-1].split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(
                f"malformed option {item.strip()!r} in estimator variant {label!r}; "
                "expected KEY=VALUE"
            )
        if key not in valid:
            raise ValueError(
                f"unknown option {key!r} for estimator {name!r} in {label!r}; "
                f"valid: {', '.join(valid) or 'none'}"
            )
        if key in options:
            raise ValueError(f"option {key!r} given twice in estimator variant {label!r}")
        options[key] = value
    if not options:
        raise ValueError(f"empty estimator variant {label!r}; expected NAME[KEY=VALUE,...]")
    return name, options


def base_name(label: str) -> str:
    """The registered estimator name of a label (``gumbel-softmax[temperature=0.1]`` → ``gumbel-softmax``)."""
    return parse_label(label)[0]


def estimator_class(label: str) -> type[Estimator]:
    """The estimator class a label names."""
    return ESTIMATORS[base_name(label)]


def variant_options(label: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``options`` (e.g. a profile's, for every variant of the estimator) with the label's own
    options laid over them."""
    return dict(options or {}) | parse_label(label)[1]


def make_estimator(label: str, options: dict[str, Any] | None = None) -> Estimator:
    """Build a registered estimator or variant; unknown names or options raise ValueError naming
    valid ones.

    ``label`` is ``NAME`` or ``NAME[KEY=VALUE,...]``; the bracketed options override
    ``options``. Values may be strings (from the command line): they are converted to the types
    of the constructor's defaults. The instance's ``label`` is the label it was built from.
    """
    name = base_name(label)
    estimator = build_with_options(
        ESTIMATORS[name], variant_options(label, options), what=f"estimator {label!r}"
    )
    estimator.label = label.strip()
    return estimator


def applicable_estimators(
    node_kinds: frozenset[str], has_inverse: bool, names: Sequence[str] | None = None
) -> list[str]:
    """Names (of ``names`` or all registered) of the estimators that apply to a model."""
    chosen = names if names is not None else list(ESTIMATORS)
    return [n for n in chosen if make_estimator(n).applies_to(node_kinds, has_inverse)]


def geometric_anneal(start: float, end: float, progress: float | None) -> float:
    """start · (end / start)^min(1, progress): exponential decay from ``start`` that reaches
    ``end`` at progress 1 and stays there (Jang, Gu & Poole 2017's τ = max(τ_min, τ₀ e^(−rt))
    with the rate r set by the run's length). ``progress`` None (no run planned): ``end``."""
    if progress is None:
        return end
    return start * math.exp(math.log(end / start) * min(1.0, max(0.0, progress)))
