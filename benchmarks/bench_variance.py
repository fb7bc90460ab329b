"""asv: gradient variance (tracked like a timing) and the cost of drawing many gradients.

``GradientVariance.track_grad_variance`` records, for every model × benchmarked estimator label
(``common.estimator_labels``: each variant its own case) and parameter group (``bottom`` and
``top``: the first and last weight layer, as in Kingma, Salimans & Welling 2015, Table 1;
``all``), the ``grad_variance`` of :mod:`gradbench.measure.variance`:
the mean over the group's parameters of Var ĝ, with ĝ the gradient of the mean surrogate over a
minibatch of M = 100, from R seeded draws (R = 16 fast, 100 full) at the seeded initial
parameters, the estimator settled first as in ``gradbench variance``. The number is
deterministic for a given profile, device and torch build, so a change that makes an estimator
noisier shows in asv's history as a step, like a slowdown. ``VarianceDraws.time_draws`` times R
draws through ``torch.func.vmap`` and, for comparison, through a Python loop over draws.
"""

from __future__ import annotations

from . import common


class GradientVariance:
    """Mean per-parameter gradient variance of a parameter group at fixed seed and parameters."""

    params = (
        list(common.MODEL_NAMES),
        list(common.ESTIMATOR_LABELS),
        list(common.VARIANCE_GROUPS),
    )
    param_names = ("model", "estimator", "group")
    timeout = common.bench_profile().timeout_s
    unit = "gradient variance (mean over parameters)"

    def setup(self, model: str, estimator: str, group: str) -> None:
        common.check_benchmarked(model, estimator)
        self.variance = common.gradient_variance(model, estimator, group)

    def track_grad_variance(self, model: str, estimator: str, group: str) -> float:
        return self.variance


class VarianceDraws:
    """R minibatch gradient draws at M = 100, batched with vmap or in a Python loop."""

    params = (list(common.MODEL_NAMES), list(common.ESTIMATOR_LABELS), ["vmap", "loop"])
    param_names = ("model", "estimator", "path")
    timeout = common.bench_profile().timeout_s
    number = 1
    repeat = (1, 5, 60.0)
    warmup_time = 0.0

    def setup(self, model: str, estimator: str, path: str) -> None:
        common.check_benchmarked(model, estimator)
        self.variance = common.variance_case(model, estimator)

    def time_draws(self, model: str, estimator: str, path: str) -> None:
        common.draw_gradients(self.variance, vectorize=path == "vmap")
