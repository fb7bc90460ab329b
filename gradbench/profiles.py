"""Named run profiles for ``gradbench all``: plain, documented values that flags override.

A profile fixes every setting of a full run — data, network sizes, the variance, timing and
training measurements — so that a report says exactly how it was made.

- ``smoke``: seconds per cell, for tests and a first look (under 2 minutes on a 2-core CPU):
  scikit-learn's 8×8 digits, tiny networks, few draws, one epoch, one seed, one torch thread.
- ``quick``: the default without CUDA: 3 seeds of every registered estimator on every core of
  a CPU (about 39 cell-minutes: one cell per core); the first 5000 images of each MNIST split
  (the run stops when MNIST is not found: ``--dataset digits`` asks for the 8×8 digits),
  narrower networks (3×256 MLP, 200-unit VAEs), 3 training epochs, variance at 1 and 3 epochs
  with 100 draws, bias with 300 draws on a minibatch of 25, the IW bound (k = 20) on the first
  1000 test examples, one thread per cell.
- ``paper``: the papers' settings, meant for a GPU (the default with CUDA): full MNIST, the
  papers' architectures (Kingma et al. 2015: 3×1024 ReLU MLP; the thesis: 784-500-300(30×10)-500
  -784; Kingma & Welling 2014: one hidden layer of 500, 20 latents), variance at 10 and 100
  epochs, 50 training epochs at learning rate 3e-4, batch 100, many draws, 5 seeds. On a CPU
  a cell estimated over 2 hours (``max_cell_hours``; e.g. 50 epochs of separate weight samples)
  is stored as skipped with its estimate instead of run.
- ``arm``: ARM's and DisARM's Bernoulli-VAE protocol (Larochelle's static binarization, batch
  50, Adam at 1e-4, the prior learned, 1 M steps, the linear network), the estimators of Yin &
  Zhou's table and DisARM's; ``arm-nonlinear`` the same with the nonlinear network;
  ``arm-nonlinear-script`` that network at ARM's released nonlinear script's settings (the
  prior fixed at Bern(½), LeakyReLU slope 0.1) for Yin & Zhou's own rows (REINFORCE, ARM);
  ``disarm-dynamic`` DisARM's launcher setting (dynamically binarized MNIST; rloo, arm, disarm).

Each profile writes its own report folder, ``reports/<name>/`` (:mod:`gradbench.api`).
smoke, quick and paper run every registered model and every registered estimator (those of
installed plugins too), the estimators that have variants as those variants (``VARIANTS``),
with the same options; a new model or estimator file joins them without an edit here. The arm
profiles run the models whose ``profile_options`` name them, with the estimators they list.
smoke and quick train at a constant learning rate 1e-3 (the paper profile: the thesis' 3e-4,
annealed per epoch) so that their few steps make progress. Annealing schedules (Gumbel-softmax's
τ, target propagation's β) are fractions of each run, so every profile reaches their final values.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from gradbench.data import binarization_phrase
from gradbench.models import profile_model_options

VARIANTS = (
    "lr-baseline[baseline=ema]",
    "lr-baseline[baseline=learned]",
    "gumbel-softmax[temperature=0.5]",
    "gumbel-softmax[temperature=0.1]",
)
"""Variants every profile runs in place of their estimator's plain name: the thesis' two
Gumbel-softmax rows (τ = 0.5 and 0.1, annealed per epoch from 1 over the first half of the run),
and lr-baseline with its moving-average and its learned, input-dependent (NVIL) baseline."""


def default_estimators() -> tuple[str, ...]:
    """Every registered estimator in registry order, those with ``VARIANTS`` as their variants."""
    from gradbench.estimators import ESTIMATORS, base_name

    labels: list[str] = []
    for name in ESTIMATORS:
        labels += [v for v in VARIANTS if base_name(v) == name] or [name]
    return tuple(labels)


def setting(default: Any, doc: str, *, factory: Any = None) -> Any:
    """A profile field with its one default and its one doc (``--help`` and the README read
    it from here)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Profile:
    """Every setting of a ``gradbench all`` run, each with its default (the papers') and its
    doc; ``--set KEY=VALUE`` and the flag ``--KEY`` override any field. The experiments read
    theirs through their ``Config`` (:mod:`gradbench.experiments`)."""

    name: str = field(metadata={"doc": "stamped on every result row and in the reports' header"})
    summary: str = field(metadata={"doc": "one line for --help and the README"})
    dataset: str = setting("mnist", "a registered dataset (gradbench list names them); the "
                           "run stops, saying where it looked, when its files are not found")
    subset: int | None = setting(None, "keep the first N examples of each split; none: all")
    binarization: str = setting("threshold", "threshold (the thesis': grey level >= 0.5), "
                                "dynamic (a fresh Bernoulli sample per use, DisARM's) or fixed "
                                "(one sample); threshold only for a dataset binary as "
                                "published (binarized-mnist)")
    seeds: tuple[int, ...] = setting((0, 1, 2, 3, 4), "one run of every cell per seed: "
                                     "initialisation, data order, noise")
    data_seed: int = setting(0, "the fixed binarization's sample, the same for every seed")
    torch_threads: int | None = setting(None, "torch threads per cell; none: torch's default")
    models: tuple[str, ...] = setting((), "models to run; empty: every registered model")
    estimators: tuple[str, ...] = setting(
        (), "estimators and variants NAME[KEY=VALUE,...] run on every model they apply to; "
        "empty: every registered one (variants per VARIANTS)")
    model_options: dict[str, dict[str, Any]] = setting(
        None, "options per model (--model-arg MODEL:KEY=VALUE)", factory=dict)
    estimator_options: dict[str, dict[str, Any]] = setting(
        None, "options per estimator name (--estimator-arg ESTIMATOR:KEY=VALUE)", factory=dict)
    variance_batch_sizes: tuple[int, ...] = setting((1, 10, 100, 1000), "minibatch sizes M")
    variance_draws: int = setting(1000, "gradient draws per estimator × M × checkpoint "
                                  "(B minibatches × K)")
    variance_noise_draws: int = setting(2, "K noise draws per minibatch (K > 1 splits noise "
                                        "from data)")
    variance_epochs: tuple[int, ...] = setting((10, 100), "checkpoints: epochs of reference "
                                               "training")
    variance_replicates: int = setting(1000, "bootstrap replicates of the intervals")
    paired_variance_units: int = setting(
        1000, "pairs of minibatches of the paired single / separate weight-sample variance "
        "(two single-sample draws on each), at each variance M above 1 and checkpoint, on "
        "weight-noise models; 0: off. On in every profile (smoke 10, quick 100: seconds a "
        "cell); at Kingma et al.'s Table 1 (M = 100) 1000 gives the ratio to about ±0.01")
    checkpoint_batch_size: int = setting(100, "minibatch of the reference training to the "
                                         "checkpoints")
    checkpoint_learning_rate: float = setting(1e-3, "Adam's rate of the reference training")
    checkpoint_max_steps: int | None = setting(None, "steps per checkpoint epoch; none: full "
                                               "epochs")
    bias_draws: int = setting(10_000, "gradient draws with fresh noise on one fixed minibatch, "
                              "on each model's oracle configuration")
    bias_batch_size: int = setting(100, "examples in that minibatch")
    timing_batch_size: int = setting(100, "minibatch of the timed steps")
    timing_steps: int | None = setting(None, "steps timed per repeat, scaled to an epoch; "
                                       "none: a full epoch")
    timing_repeats: int = setting(5, "timed repeats")
    timing_warmup_steps: int = setting(5, "untimed steps first")
    train_epochs: int = setting(50, "training epochs (the thesis)")
    train_batch_size: int = setting(100, "training minibatch")
    train_learning_rate: float = setting(3e-4, "Adam's learning rate (the thesis)")
    train_lr_decay: float = setting(1.0, "multiply the rate by this after every epoch")
    eval_samples: int = setting(1, "draws per example of E_q[log p(x|z)] (the thesis' L = 1)")
    eval_iw_samples: int = setting(1000, "k of the importance-weighted bound (Jang et al.: "
                                   "1000)")
    eval_iw_every: int = setting(0, "also compute the bound every N epochs (0: epoch 0 and the "
                                 "last)")
    eval_train_subset: int | None = setting(None, "training ELBO on the first N training "
                                            "examples; none: all")
    eval_iw_subset: int | None = setting(None, "the bound on the first N test examples; "
                                         "none: all")
    eval_best_valid_iw_samples: tuple[int, ...] = setting(
        (), "k of the test bounds computed at the epoch of the best validation bound (its first "
        "k); empty: none")
    max_cell_hours: float | None = setting(
        None, "on a CPU, cells estimated over this many hours are stored as skipped with "
        "their estimate; none: no limit")

    def __post_init__(self) -> None:
        from gradbench.models import MODELS

        if not self.models:
            object.__setattr__(self, "models", tuple(MODELS))
        if not self.estimators:
            object.__setattr__(self, "estimators", default_estimators())
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model {unknown[0]!r}; valid: {', '.join(MODELS)}")
        if not self.models:
            raise ValueError(f"profile {self.name!r} runs no model; valid: {', '.join(MODELS)}")
        if not self.variance_batch_sizes or min(self.variance_batch_sizes) < 1:
            raise ValueError(
                f"variance_batch_sizes must be positive, got {self.variance_batch_sizes}"
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be None or positive, got {self.torch_threads}")
        if self.max_cell_hours is not None and not self.max_cell_hours > 0:
            raise ValueError(f"max_cell_hours must be None or positive, got {self.max_cell_hours}")
        if not self.seeds or min(self.seeds) < 0 or len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
        for name in ("variance_draws", "variance_noise_draws", "train_epochs", "timing_repeats",
                     "bias_draws", "bias_batch_size"):
            if getattr(self, name) < (0 if name == "train_epochs" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def estimator_labels(self, model: str) -> list[str]:
        """The estimators and variants this profile runs on ``model``, in profile order."""
        from gradbench.catalogue import applicable
        from gradbench.estimators import base_name

        valid = applicable(model)
        return [label for label in self.estimators if base_name(label) in valid]

    def options_for(self, model: str) -> dict[str, Any]:
        """The model's options in this profile (empty: the model's defaults)."""
        return dict(self.model_options.get(model, {}))

    def values(self) -> dict[str, Any]:
        """Every field, JSON-ready, for the README and ``all --show-profile``."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }


SMOKE = Profile(
    name="smoke",
    summary="under 2 minutes on 2 CPU cores: digits, tiny networks, few draws, 1 epoch",
    dataset="digits",
    seeds=(0,),
    torch_threads=1,  # tiny tensors: threads cost more than they save, badly so on a busy CPU
    model_options=profile_model_options("smoke"),  # each model's StochasticModel.profile_options
    variance_batch_sizes=(1, 10, 100),
    variance_draws=16,
    variance_noise_draws=2,
    variance_epochs=(0, 1),
    variance_replicates=50,
    paired_variance_units=10,
    bias_draws=200,
    bias_batch_size=20,
    checkpoint_max_steps=5,
    timing_steps=3,
    timing_repeats=2,
    timing_warmup_steps=1,
    train_epochs=1,
    train_learning_rate=1e-3,
    eval_iw_samples=5,
    eval_train_subset=200,
)

QUICK = Profile(
    name="quick",
    summary="3 seeds of every estimator on a CPU without a GPU: an MNIST subset, narrower "
    "networks",
    dataset="mnist",
    subset=5000,
    seeds=(0, 1, 2),
    torch_threads=1,  # predictable on a shared 2-core machine: two threads contend badly there
    model_options=profile_model_options("quick"),  # each model's StochasticModel.profile_options
    variance_batch_sizes=(1, 10, 100),
    variance_draws=100,
    variance_noise_draws=2,
    variance_epochs=(1, 3),
    variance_replicates=200,
    paired_variance_units=100,
    bias_draws=300,
    bias_batch_size=25,
    timing_steps=10,
    timing_repeats=3,
    timing_warmup_steps=2,
    train_epochs=3,
    train_learning_rate=1e-3,
    eval_iw_samples=20,
    eval_iw_subset=1000,
    eval_train_subset=1000,
)

PAPER = Profile(
    name="paper",
    summary="the papers' settings on full MNIST, meant for a GPU",
    dataset="mnist",
    timing_steps=100,
    # The thesis anneals the learning rate per epoch (following Jang et al.) without the rate:
    # x0.95 per epoch, 3e-4 to 2.3e-5 over 50 epochs, is gradbench's choice.
    train_lr_decay=0.95,
    max_cell_hours=2.0,
)

ARM = Profile(
    name="arm",
    summary="ARM's and DisARM's Bernoulli VAE protocol: static binarized MNIST, batch 50, "
    "Adam 1e-4, 1 M steps per cell (1.2-1.5 h on a core, REBAR about 4; resumable)",
    # Yin & Zhou's (2019) b_mnist_linear_slim.py and Dong et al.'s (2020) launcher, setting by
    # setting: Larochelle's static binarization (DisARM's launcher defaults to dynamic:
    # the disarm-dynamic profile); minibatch 50; Adam at a constant 1e-4 for
    # encoder and decoder; the prior's logits learned from zero by plain SGD at 0.01 and the
    # learning signal f = log p(x, b) - log q(b|x) (the model options below); DisARM's 1 M steps
    # (1,000 epochs of 50,000 / 50; ARM's script runs 1,200); linear 784-200-784 here,
    # nonlinear in the arm-nonlinear profile. Test figure: the iw bound
    # with k = 100 and 1000 on the whole test split at the epoch of the best validation bound
    # (k = 100 on the first 2,000 validation images, every 10 epochs = 10,000 steps, as
    # DisARM's launcher evaluates every 1,000 steps with 100 samples).
    dataset="binarized-mnist",
    seeds=(0,),
    torch_threads=1,
    models=tuple(profile_model_options("arm")),  # the models whose profile_options name it
    estimators=("lr", "lr-baseline[baseline=learned]", "gumbel-softmax", "rebar", "arm",
                "disarm", "rloo"),
    model_options=profile_model_options("arm"),
    train_epochs=1000,
    train_batch_size=50,
    timing_batch_size=50,  # the step the protocol trains with
    train_learning_rate=1e-4,
    eval_iw_samples=100,
    eval_iw_every=10,
    eval_iw_subset=2000,
    eval_train_subset=10_000,
    eval_best_valid_iw_samples=(100, 1000),
)

ARM_NONLINEAR = replace(
    ARM,
    name="arm-nonlinear",
    summary="the arm profile's protocol with Yin & Zhou's nonlinear Bernoulli VAE (two "
    "LeakyReLU layers of 200 each side of the 200 latents), the figures of their second column",
    models=tuple(profile_model_options("arm-nonlinear")),
    model_options=profile_model_options("arm-nonlinear"),
)

ARM_NONLINEAR_SCRIPT = replace(
    ARM_NONLINEAR,
    name="arm-nonlinear-script",
    summary="the arm-nonlinear protocol at ARM's released nonlinear script's settings (the "
    "prior fixed at Bern(1/2), LeakyReLU slope 0.1): Yin & Zhou's own nonlinear rows",
    # b_mnist_nonlinear_slim.py: log p(b) at logits zero (no prior variable), lrelu alpha 0.1;
    # the rest as the arm profile (its 1,200 epochs and 500-image validation every 5 epochs
    # against our 1,000 and 2,000 images every 10, as for the linear script).
    models=tuple(profile_model_options("arm-nonlinear-script")),
    model_options=profile_model_options("arm-nonlinear-script"),
    estimators=("lr", "arm"),
)

DISARM_DYNAMIC = replace(
    ARM,
    name="disarm-dynamic",
    summary="DisARM's launcher setting: the arm protocol on dynamically binarized MNIST "
    "(50,000 / 10,000 / 10,000), REINFORCE leave-one-out, ARM and DisARM, linear",
    # Dong et al.'s (2020) launcher defaults: MNIST binarized afresh for every minibatch, the
    # rest as the arm profile. They show these runs as curves only (their Figure 5).
    dataset="mnist",
    binarization="dynamic",
    models=tuple(profile_model_options("disarm-dynamic")),
    model_options=profile_model_options("disarm-dynamic"),
    estimators=("rloo", "arm", "disarm"),
)

CUSTOM_SUFFIX = "+custom"
"""Appended to a profile's name when an override changed what its cells compute."""

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (SMOKE, QUICK, PAPER, ARM, ARM_NONLINEAR, ARM_NONLINEAR_SCRIPT, DISARM_DYNAMIC)
}
"""The named profiles, in order of size."""


def profile_table() -> list[dict[str, Any]]:
    """One row per named profile: its name, data, models, seeds, training epochs, summary."""
    return [
        {"profile": p.name,
         "dataset": f"{p.dataset} ({binarization_phrase(p.dataset, p.binarization)})",
         "models": ", ".join(p.models),
         "seeds": len(p.seeds), "train epochs": p.train_epochs, "summary": p.summary}
        for p in PROFILES.values()
    ]


def default_profile_name() -> str:
    """``paper`` when CUDA is available, else ``quick``."""
    return "paper" if torch.cuda.is_available() else "quick"


def get_profile(name: str) -> Profile:
    """A named profile; an unknown name raises ValueError naming the valid ones."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    return PROFILES[name]


SETTABLE_ELSEWHERE = ("name", "summary", "model_options", "estimator_options")
"""Fields no ``--set`` changes: the name and summary, and the options (``--model-arg`` and
``--estimator-arg``)."""


def settable() -> tuple[str, ...]:
    """The fields ``--set KEY=VALUE`` and their generated flags change."""
    return tuple(f.name for f in fields(Profile) if f.name not in SETTABLE_ELSEWHERE)


def setting_doc(name: str) -> str:
    """A field's one doc."""
    return next(f.metadata["doc"] for f in fields(Profile) if f.name == name)


def setting_default(name: str) -> Any:
    """A field's one default (the papers' setting): what the measurement commands default to."""
    return next(f.default for f in fields(Profile) if f.name == name)


def _field_type(name: str) -> Any:
    hints = typing.get_type_hints(Profile)
    if name not in settable():
        raise ValueError(f"unknown profile setting {name!r}; valid: {', '.join(settable())}")
    return hints[name]


def parse_setting(key: str, raw: str) -> Any:
    """``raw`` as field ``key``'s type: int, float, str, tuple[int/str, ...] (comma-separated;
    estimators as labels, whose brackets may hold commas), or None ("none")."""
    kind = _field_type(key)
    args = typing.get_args(kind)
    optional = type(None) in args and (
        typing.get_origin(kind) is typing.Union or isinstance(kind, types.UnionType)
    )
    if optional:
        if raw.strip().lower() == "none":
            return None
        kind = next(a for a in args if a is not type(None))
    if key == "estimators":
        from gradbench.estimators import split_labels

        return tuple(split_labels(raw))
    try:
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            return tuple(item(v.strip()) for v in raw.split(",") if v.strip())
        if kind in (int, float, str):
            return kind(raw)
    except ValueError:
        raise ValueError(f"bad value {raw!r} for profile setting {key}: expected {kind}") from None
    raise ValueError(f"profile setting {key} cannot be set from the command line")


def override(profile: Profile, settings: dict[str, str]) -> Profile:
    """``profile`` with ``KEY=VALUE`` strings applied (``--set``); validated like the profile.

    ``model_options`` and ``estimator_options`` are set with ``--model-arg MODEL:KEY=VALUE`` and
    ``--estimator-arg ESTIMATOR:KEY=VALUE`` (see :func:`with_options`).
    """
    changes = {key: parse_setting(key, value) for key, value in settings.items()}
    return replace(profile, **changes)


def with_options(
    profile: Profile, option_items: dict[str, str], what: str, valid: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Merge ``NAME:KEY=VALUE`` items into a copy of the profile's model or estimator options.

    ``what`` is "model" or "estimator"; ``valid`` the names it may prefix. Values stay strings:
    the models and estimators convert and validate them.
    """
    current = profile.model_options if what == "model" else profile.estimator_options
    merged = {k: dict(v) for k, v in current.items()}
    for key, value in option_items.items():
        target, sep, option = key.partition(":")
        if not sep or not option:
            raise ValueError(
                f"malformed --{what}-arg {key}={value}; expected {what.upper()}:KEY=VALUE"
            )
        if target not in valid:
            raise ValueError(f"unknown {what} {target!r}; valid: {', '.join(valid)}")
        merged.setdefault(target, {})[option] = value
    return merged


__all__ = [
    "CUSTOM_SUFFIX",
    "PROFILES",
    "Profile",
    "default_profile_name",
    "get_profile",
    "override",
    "parse_setting",
    "setting_default",
    "setting_doc",
    "settable",
    "with_options",
]
