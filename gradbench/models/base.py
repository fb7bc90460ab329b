"""The shared-model contract and registry.

A model is an ``nn.Module`` whose forward pass takes a minibatch and an estimator, hands each
stochastic node to ``estimator.sample`` and returns a :class:`StochasticForward` of per-example
terms. Its parameters and initialisation do not depend on the estimator, so every estimator is
compared on the same network. Sizes come from the data (:class:`DataShape`) and from keyword
options with documented defaults (the papers' sizes).

What the rest of the suite knows of a model are attributes of its class, so that a model (one
file here, or a plugin's class) needs no edit elsewhere: its ``task``, the small sizes the
``smoke`` and ``quick`` profiles run it at (``profile_options``) and the parameter groups its
tables lead with (``headline_groups``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.estimators.base import Estimator, StochasticForward
from gradbench.options import build_with_options, option_defaults


TASKS = ("classifier", "autoencoder")
"""What a model does with an example (x, y): predict the label y from x (a classifier: its
evaluation has ``error_rate``), or reconstruct x (an autoencoder, y unused: ``elbo``,
``reconstruction_ll``, ``iw_bound``)."""


class OracleUnavailable(ValueError):
    """A model configuration (or data shape) too large for its exact oracle."""


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know of its data: input size, number of classes, training-set size."""

    input_dim: int
    n_classes: int
    n_train: int


@dataclass(frozen=True)
class DeterministicNetwork:
    """Plain layers (``network``) and a per-example loss ``loss(network, x, y)`` [B]."""

    network: nn.Module
    loss: Callable[[nn.Module, Tensor, Tensor], Tensor]


class StochasticModel(nn.Module):
    """Base class of the shared models; see the module docstring for the contract."""

    name: ClassVar[str]
    summary: ClassVar[str]
    node_kinds: ClassVar[frozenset[str]]
    has_inverse: ClassVar[bool] = False
    reference_estimator: ClassVar[str]
    oracle_options: ClassVar[dict[str, Any]] = {}
    """A small configuration (model options) in which :meth:`expected_loss` is exact; empty when
    the model has no exact oracle."""
    task: ClassVar[str]
    """One of :data:`TASKS`."""
    profile_options: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Model options by profile name (``smoke``, ``quick``): the smaller sizes that profile runs
    the model at; a profile not named here runs the defaults."""
    headline_groups: ClassVar[tuple[str, ...]] = ("top", "bottom")
    """The groups of :meth:`parameter_groups` the model's variance tables show, in order."""

    def forward(self, x: Tensor, y: Tensor, estimator: Estimator) -> StochasticForward:
        """Per-example terms of the loss for inputs ``x`` [batch, input_dim] and labels ``y``."""
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, list[str]]:
        """Parameter-group name → parameter names (``named_parameters``) for per-layer reports.

        One group per layer's weights and one per layer's biases, ``bottom`` and ``top`` (the
        first and last weight layer's mean parameters, as in Kingma et al. 2015, Table 1), and
        ``all``.
        """
        raise NotImplementedError

    def evaluate(self, x: Tensor, y: Tensor, samples: int, iw_samples: int) -> dict[str, Tensor]:
        """Per-example evaluation metrics, independent of any estimator (exact samples)."""
        raise NotImplementedError

    def sgd_parameters(self) -> dict[str, float]:
        """Parameters (``named_parameters`` names) that train by plain SGD at their own learning
        rate instead of the run's Adam, name → rate; empty by default."""
        return {}

    def deterministic_network(self) -> DeterministicNetwork | None:
        """The model's network with its noise off, as plain torch layers of the same sizes (new
        parameters), and its per-example loss: the estimator-free floor a training step is timed
        against. None for a model without one."""
        return None

    def expected_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """E over the model's noise of each example's loss (data_loss + regularizer), [B],
        computed exactly (enumeration, quadrature or a closed form) and differentiable in every
        parameter: the exact-gradient oracle. :class:`OracleUnavailable` when this configuration
        is too large to compute it exactly."""
        raise NotImplementedError(f"model {self.name!r} has no exact oracle")


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x|z) = Σ_d [x_d log σ(l_d) + (1 − x_d) log σ(−l_d)]; logits, x broadcast [..., D]."""
    logits, x = torch.broadcast_tensors(logits, x)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def bernoulli_log_likelihood_table(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x_b | z_c) for every decoded configuration c and example b, [C, B], from logits
    [C, D] and binary x [B, D], as two matrix products (x log σ(l)ᵀ + (1 − x) log σ(−l)ᵀ) instead
    of a [C, B, D] tensor: what enumeration over many latent configurations needs."""
    if logits.dim() != 2 or x.dim() != 2 or logits.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"need logits [C, D] and x [B, D], got {tuple(logits.shape)} and {tuple(x.shape)}"
        )
    return F.logsigmoid(logits) @ x.T + F.logsigmoid(-logits) @ (1.0 - x).T


def encoder_decoder_groups(model: nn.Module, top: str) -> dict[str, list[str]]:
    """A VAE's parameter groups: each parameter alone (``encoder.0.weight``, …), ``bottom`` (the
    encoder's first weight), ``top`` (the named last decoder weight), ``encoder``, ``decoder``
    and ``all``."""
    names = [name for name, _ in model.named_parameters()]
    groups = {name: [name] for name in names}
    groups["bottom"] = ["encoder.0.weight"]
    groups["top"] = [top]
    groups["encoder"] = [n for n in names if n.startswith("encoder.")]
    groups["decoder"] = [n for n in names if n.startswith("decoder.")]
    groups["all"] = names
    return groups


def check_hidden_sizes(hidden_sizes: tuple[int, ...]) -> None:
    """Raise ValueError unless ``hidden_sizes`` is one or more positive layer widths."""
    if not hidden_sizes or min(hidden_sizes) < 1:
        raise ValueError(f"hidden_sizes must be one or more positive ints, got {hidden_sizes}")


MODELS: dict[str, type[StochasticModel]] = {}

M = TypeVar("M", bound=type[StochasticModel])


def register_model(cls: M) -> M:
    """Class decorator: add a model to the registry under ``cls.name``; ValueError for a name
    registered twice or a task not in :data:`TASKS`."""
    if cls.name in MODELS:
        raise ValueError(f"model {cls.name!r} registered twice")
    if getattr(cls, "task", None) not in TASKS:
        raise ValueError(
            f"model {cls.name!r} has task {getattr(cls, 'task', None)!r}; valid: {', '.join(TASKS)}"
        )
    MODELS[cls.name] = cls
    return cls


def profile_model_options(profile: str) -> dict[str, dict[str, Any]]:
    """Model name → the options the profile named ``profile`` runs it at, for every registered
    model whose ``profile_options`` name that profile."""
    return {
        name: dict(cls.profile_options[profile])
        for name, cls in MODELS.items()
        if profile in cls.profile_options
    }


def model_options(name: str) -> dict[str, Any]:
    """The keyword options of a registered model and their defaults."""
    return option_defaults(get_model_class(name))


def get_model_class(name: str) -> type[StochasticModel]:
    """The registered model class; unknown names raise ValueError naming the valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return MODELS[name]


def make_model(name: str, shape: DataShape, options: dict[str, Any] | None = None) -> StochasticModel:
    """Build a registered model for data of ``shape``; options may be strings (command line)."""
    return build_with_options(get_model_class(name), options or {}, f"model {name!r}", shape)
