"""Every metric a result row can carry, declared once: its name, unit, which way is better and
whether it reads on a log scale. Modules that write or read rows import the names from here.

A :class:`Metric` is a ``str`` (its name), so it is what a row's ``metric`` column holds and what
a selection compares against; its attributes are what plots and tables need to know of it.
"""

from __future__ import annotations

from typing import Literal

Better = Literal["lower", "higher", "neither"]


class Metric(str):
    """A metric's name with its unit, the better direction and its natural scale."""

    unit: str
    better: Better
    log_scale: bool
    doc: str

    def __new__(
        cls, name: str, unit: str, better: Better, log_scale: bool, doc: str
    ) -> Metric:
        if better not in ("lower", "higher", "neither"):
            raise ValueError(f"metric {name}: better must be lower, higher or neither")
        metric = super().__new__(cls, name)
        metric.unit, metric.better, metric.log_scale, metric.doc = unit, better, log_scale, doc
        return metric

    def __reduce__(self) -> tuple:
        return (Metric, (str(self), self.unit, self.better, self.log_scale, self.doc))

    @property
    def name(self) -> str:
        """The plain name, as stored in the ``metric`` column."""
        return str(self)


# timing (gradbench.measure.timing)
SECONDS_PER_EPOCH = Metric("seconds_per_epoch", "s", "lower", True,
                           "wall-clock seconds of one training epoch (steps timed, scaled)")
SECONDS_PER_STEP = Metric("seconds_per_step", "s", "lower", True, "seconds of one Adam step")
SECONDS_PER_GRADIENT = Metric("seconds_per_gradient", "s", "lower", True,
                              "seconds of one gradient (forward and backward)")
EXAMPLES_PER_SECOND = Metric("examples_per_second", "1/s", "higher", True,
                             "training examples processed per second")
DETERMINISTIC_SECONDS_PER_STEP = Metric(
    "deterministic_seconds_per_step", "s", "lower", True,
    "seconds of one step of the model's deterministic counterpart")
STEP_RATIO_TO_DETERMINISTIC = Metric(
    "step_ratio_to_deterministic", "x", "lower", True,
    "a step's seconds over the deterministic counterpart's")
SPEEDUP = Metric("speedup", "x", "higher", True,
                 "another estimator's seconds per epoch over this one's")

# gradient variance (gradbench.measure.variance)
GRAD_VARIANCE = Metric("grad_variance", "", "lower", True,
                       "mean over a group's parameters of Var[g_i] (Kingma et al. 2015, Table 1)")
GRAD_VARIANCE_TRACE = Metric("grad_variance_trace", "", "lower", True,
                             "sum over a group's parameters of Var[g_i]")
GRAD_VARIANCE_NOISE = Metric("grad_variance_noise", "", "lower", True,
                             "E_x Var[g | x]: the estimator's noise within a minibatch")
GRAD_VARIANCE_DATA = Metric("grad_variance_data", "", "lower", True,
                            "Var_x E[g | x]: the minibatch sampling's share")
SNR = Metric("snr", "", "higher", True, "|E g| / sd(g), averaged over a group's parameters")
SNR_SQUARED = Metric("snr_squared", "", "higher", True, "(E g)² / Var g, averaged")
LOG_VARIANCE_SLOPE = Metric("log_variance_slope", "", "neither", False,
                            "slope of log variance against log M (−1: 1/M)")

# bias against the exact gradient (gradbench.measure.bias)
RELATIVE_BIAS = Metric("relative_bias", "", "lower", True, "‖E ĝ − g‖ / ‖g‖")
COSINE = Metric("cosine", "", "higher", False, "cosine of E ĝ with the exact gradient g")
MSE = Metric("mse", "", "lower", True, "E ‖ĝ − g‖², per parameter")
RELATIVE_STD = Metric("relative_std", "", "lower", True, "sd(ĝ) / ‖g‖")

# training (gradbench.measure.training)
ELBO = Metric("elbo", "nats", "higher", False, "evidence lower bound per example")
ERROR_RATE = Metric("error_rate", "", "lower", False, "classification error")
NLL = Metric("nll", "nats", "lower", False, "negative log-likelihood per example")
WALL_CLOCK_S = Metric("wall_clock_s", "s", "lower", False, "seconds of training so far")
TRAIN_LOSS = Metric("train_loss", "nats", "lower", False, "mean training loss of the epoch")
RECONSTRUCTION_LL = Metric("reconstruction_ll", "nats", "higher", False,
                           "E_q[log p(x|z)] per example")
IW_BOUND = Metric("iw_bound", "nats", "higher", False,
                  "importance-weighted bound log mean_k p(x,z_k)/q(z_k|x) (Burda et al. 2016)")

# annealing schedules (variance checkpoints and training)
TEMPERATURE = Metric("temperature", "", "neither", False, "Gumbel-softmax τ reached")
BETA = Metric("beta", "", "neither", False, "target propagation's β reached")

# the catalogue (gradbench.catalogue)
APPLIES = Metric("applies", "", "neither", False, "1 where the estimator applies to the target")
UNBIASED = Metric("unbiased", "", "neither", False, "1 where the estimator is unbiased")
EVALUATIONS = Metric("evaluations", "", "lower", False, "model evaluations per gradient")
