"""Every metric a result row can carry, declared once: its name, unit, which way is better and
whether it reads on a log scale. Modules that write or read rows import the names from here.

Each constant is the plain name (a ``str``, what a row's ``metric`` column holds, what a
selection compares against and what a checkpoint may store); :data:`DECLARED` maps it to its
:class:`Metric`, what plots and tables need to know of it. A plugin declares its own with
:func:`declare`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Better = Literal["lower", "higher", "neither"]


@dataclass(frozen=True)
class Metric:
    """A metric: its name, unit, the better direction and its natural scale."""

    name: str
    unit: str
    better: Better
    log_scale: bool
    doc: str

    def __post_init__(self) -> None:
        if self.better not in ("lower", "higher", "neither"):
            raise ValueError(f"metric {self.name}: better must be lower, higher or neither")


DECLARED: dict[str, Metric] = {}
"""Every declared metric by name."""


def declare(name: str, unit: str, better: Better, log_scale: bool, doc: str) -> str:
    """Declare a metric; returns its name. ValueError when the name is declared already."""
    if name in DECLARED:
        raise ValueError(f"metric {name!r} is declared twice")
    DECLARED[name] = Metric(name, unit, better, log_scale, doc)
    return name


# timing (gradbench.measure.timing)
SECONDS_PER_EPOCH = declare("seconds_per_epoch", "s", "lower", True,
                            "wall-clock seconds of one training epoch (steps timed, scaled)")
SECONDS_PER_STEP = declare("seconds_per_step", "s", "lower", True, "seconds of one Adam step")
SECONDS_PER_GRADIENT = declare("seconds_per_gradient", "s", "lower", True,
                               "seconds of one gradient (forward and backward)")
EXAMPLES_PER_SECOND = declare("examples_per_second", "1/s", "higher", True,
                              "training examples processed per second")
DETERMINISTIC_SECONDS_PER_STEP = declare(
    "deterministic_seconds_per_step", "s", "lower", True,
    "seconds of one step of the model's deterministic counterpart")
STEP_RATIO_TO_DETERMINISTIC = declare(
    "step_ratio_to_deterministic", "x", "lower", True,
    "a step's seconds over the deterministic counterpart's")
SPEEDUP = declare("speedup", "x", "higher", True,
                  "another estimator's seconds per epoch over this one's")

# gradient variance (gradbench.measure.variance)
GRAD_VARIANCE = declare("grad_variance", "", "lower", True,
                        "mean over a group's parameters of Var[g_i] (Kingma et al. 2015, Table 1)")
GRAD_VARIANCE_TRACE = declare("grad_variance_trace", "", "lower", True,
                              "sum over a group's parameters of Var[g_i]")
GRAD_VARIANCE_NOISE = declare("grad_variance_noise", "", "lower", True,
                              "E_x Var[g | x]: the estimator's noise within a minibatch")
GRAD_VARIANCE_DATA = declare("grad_variance_data", "", "lower", True,
                             "Var_x E[g | x]: the minibatch sampling's share")
SNR = declare("snr", "", "higher", True, "|E g| / sd(g), averaged over a group's parameters")
SNR_SQUARED = declare("snr_squared", "", "higher", True, "(E g)² / Var g, averaged")
GRAD_VARIANCE_SINGLE = declare("grad_variance_single", "", "lower", True,
                               "variance with one weight sample per minibatch, paired draws")
GRAD_VARIANCE_SEPARATE = declare("grad_variance_separate", "", "lower", True,
                                 "variance with a weight sample per example, the same draws")
VARIANCE_RATIO = declare("variance_ratio", "", "neither", True,
                         "single-sample over separate-sample variance on identical draws")
LOG_VARIANCE_SLOPE = declare("log_variance_slope", "", "neither", False,
                             "slope of log variance against log M (−1: 1/M)")

# bias against the exact gradient (gradbench.measure.bias)
RELATIVE_BIAS = declare("relative_bias", "", "lower", True, "‖E ĝ − g‖ / ‖g‖")
COSINE = declare("cosine", "", "higher", False, "cosine of E ĝ with the exact gradient g")
MSE = declare("mse", "", "lower", True, "E ‖ĝ − g‖², per parameter")
RELATIVE_STD = declare("relative_std", "", "lower", True, "sd(ĝ) / ‖g‖")

# training (gradbench.measure.training)
ELBO = declare("elbo", "nats", "higher", False, "evidence lower bound per example")
ERROR_RATE = declare("error_rate", "", "lower", False, "classification error")
NLL = declare("nll", "nats", "lower", False, "negative log-likelihood per example")
WALL_CLOCK_S = declare("wall_clock_s", "s", "lower", False, "seconds of training so far")
TRAIN_LOSS = declare("train_loss", "nats", "lower", False, "mean training loss of the epoch")
RECONSTRUCTION_LL = declare("reconstruction_ll", "nats", "higher", False,
                            "E_q[log p(x|z)] per example")
RECONSTRUCTION_LL_RELAXED = declare(
    "reconstruction_ll_relaxed", "nats", "higher", False,
    "log p(x|y) with the relaxed Concrete sample y (the thesis' Table 5.1, Gumbel rows)")
KL = declare("kl", "nats", "lower", False, "KL(q(z|x) ‖ p(z)) per example: reconstruction − ELBO")
IW_BOUND = declare("iw_bound", "nats", "higher", False,
                   "importance-weighted bound log mean_k p(x,z_k)/q(z_k|x) (Burda et al. 2016)")
BEST_VALID_EPOCH = declare("best_valid_epoch", "", "neither", False,
                           "the epoch of the best validation bound (ARM's and DisARM's protocol)")


def iw_bound_k(k: int) -> str:
    """The validation bound with ``k`` samples, tracked for the best epoch: ``iw_bound_k<k>``."""
    return f"{IW_BOUND}_k{k}"


def iw_bound_at_best_valid(k: int) -> str:
    """The test bound with ``k`` samples at the parameters of the best validation bound (ARM's
    and DisARM's test figure): ``iw_bound_k<k>_at_best_valid``."""
    return f"{iw_bound_k(k)}_at_best_valid"


BEST_VALID_KS = (100, 1000)
"""The k of the bounds declared at the best validation epoch (the arm profile's)."""
IW_BOUNDS_AT_BEST_VALID = tuple(
    declare(iw_bound_at_best_valid(k), "nats", "higher", False,
            f"importance-weighted test bound, k = {k}, at the best validation epoch")
    for k in BEST_VALID_KS
)
IW_BOUND_VALID_TRACKED = declare(iw_bound_k(BEST_VALID_KS[0]), "nats", "higher", False,
                                 f"validation bound, k = {BEST_VALID_KS[0]}, every few epochs")

# annealing schedules (variance checkpoints and training)
TEMPERATURE = declare("temperature", "", "neither", False, "Gumbel-softmax τ reached")
BETA = declare("beta", "", "neither", False, "target propagation's β reached")

# the catalogue (gradbench.catalogue)
APPLIES = declare("applies", "", "neither", False, "1 where the estimator applies to the target")
UNBIASED = declare("unbiased", "", "neither", False, "1 where the estimator is unbiased")
EVALUATIONS = declare("evaluations", "", "lower", False, "model evaluations per gradient")
