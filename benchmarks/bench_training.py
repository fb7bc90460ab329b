"""asv: wall-clock and peak memory of training, for every model × benchmarked estimator label.

``time_step``: one optimizer step (forward, backward, Adam, ``observe``) on one minibatch of
M = 100. ``time_gradient``: forward and backward only (seconds per gradient, no optimizer).
``peakmem_step``: the process's peak resident memory around one step. ``TrainingEpoch.time_epoch``:
one epoch's worth of steps, n_train // M minibatches drawn before the clock starts.
``DeterministicAutoencoder``: the gaussian-vae network trained with z = μ(x) and no estimator,
the reference the reparameterization step is compared with; ``DeterministicMLP``: bayes-mlp's
layer sizes as a plain MLP with fused Adam, the reference of the local-reparameterization step.
``BernoulliVAEProtocol``: the ARM/DisARM protocol's steps, and ``track_step_ratio``, each
estimator's step over the deterministic step of the same network (``BernoulliVAEDeterministic``
times that one alone). The estimator parameter is a label
(a variant such as ``gumbel-softmax[temperature=0.1]`` is its own case); combinations that are
not among the model's labels (``common.estimator_labels``) raise NotImplementedError in setup,
which asv reports as skipped.
"""

from __future__ import annotations

from . import common

RATIO_REPEATS = 15
"""Timed rounds of ``track_step_ratio``, which records the fastest step round over the fastest
deterministic one (:func:`common.fastest_ratio`)."""


class TrainingStep:
    """One step, one gradient and the peak memory of a step."""

    params = (list(common.MODEL_NAMES), list(common.ESTIMATOR_LABELS))
    param_names = ("model", "estimator")
    timeout = common.bench_profile().timeout_s

    def setup(self, model: str, estimator: str) -> None:
        common.check_benchmarked(model, estimator)
        self.case = common.training_case(model, estimator, steps=1)

    def time_step(self, model: str, estimator: str) -> None:
        common.train_steps(self.case)

    def time_gradient(self, model: str, estimator: str) -> None:
        common.gradient_once(self.case)

    def peakmem_step(self, model: str, estimator: str) -> None:
        common.train_steps(self.case)


class TrainingEpoch:
    """One epoch of optimizer steps; each sample is a single epoch, all in one round."""

    params = (list(common.MODEL_NAMES), list(common.ESTIMATOR_LABELS))
    param_names = ("model", "estimator")
    timeout = common.bench_profile().epoch_timeout_s
    number = 1
    repeat = (1, 5, 60.0)  # at least 1, at most 5 epochs, no new one started after 60 s
    rounds = 1
    warmup_time = 0.0

    def setup(self, model: str, estimator: str) -> None:
        common.check_benchmarked(model, estimator)
        self.case = common.training_case(model, estimator, steps=None)

    def time_epoch(self, model: str, estimator: str) -> None:
        common.train_steps(self.case)


class DeterministicAutoencoder:
    """The gaussian-vae network and data with the noise off: compare with reparam's step."""

    timeout = common.bench_profile().timeout_s

    def setup(self) -> None:
        self.case = common.training_case("gaussian-vae", "reparam", steps=1)

    def time_step(self) -> None:
        common.autoencoder_steps(self.case)


class DeterministicMLP:
    """bayes-mlp's layer sizes as a plain ReLU MLP with fused Adam: compare with local-reparam's
    step (the goal: at most 3×)."""

    timeout = common.bench_profile().timeout_s

    def setup(self) -> None:
        self.case = common.training_case("bayes-mlp", "local-reparam", steps=1)
        self.reference = common.deterministic_reference(self.case)

    def time_step(self) -> None:
        common.deterministic_steps(self.case, self.reference)


class BernoulliVAEProtocol:
    """The ARM/DisARM protocol's Bernoulli VAE (``arm`` profile's options, minibatch 50) with each
    of that profile's estimators: the step, and the step over the deterministic step of the same
    network on the same minibatches (issue 26's goal: at most 2× the estimator's evaluations)."""

    params = (common.protocol_labels(),)
    param_names = ("estimator",)
    timeout = common.bench_profile().timeout_s

    def setup(self, estimator: str) -> None:
        self.case = common.protocol_case(estimator)
        self.reference = common.deterministic_reference(self.case)

    def time_step(self, estimator: str) -> None:
        common.train_steps(self.case)

    def track_step_ratio(self, estimator: str) -> float:
        return common.fastest_ratio(*common.step_timings(self.case, self.reference, RATIO_REPEATS))

    track_step_ratio.unit = "step / deterministic step"


class BernoulliVAEDeterministic:
    """The protocol's Bernoulli VAE without noise (encoder, σ(l), decoder) with fused Adam."""

    timeout = common.bench_profile().timeout_s

    def setup(self) -> None:
        self.case = common.protocol_case("lr")
        self.reference = common.deterministic_reference(self.case)

    def time_step(self) -> None:
        common.deterministic_steps(self.case, self.reference)
