"""Bernoulli-latent VAE with a Bernoulli decoder: the binary-latent benchmark of REBAR, RELAX, ARM
and DisARM (784-200-784 and its nonlinear variant).

ELBO(x) = E_{q(b|x)}[log p(x|b)] − KL(q(b|x) ‖ p(b)), q(b|x) = Π_j Bern(b_j; σ(l_j(x))), p(b)
Bern(½)^d or learned (``prior``), with the KL analytic by default: for the uniform prior
Σ_j [π_j log π_j + (1 − π_j) log(1 − π_j)] + d log 2, π = σ(l). The latent
is one :class:`BernoulliNode`; the estimator's sample may be relaxed (continuous, Gumbel-softmax)
and may carry leading sample dimensions, which the decoder and the data loss carry through.

The papers and their setups
    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein (2017), REBAR; Grathwohl, Choi, Wu, Roeder &
    Duvenaud (2018), RELAX; Yin & Zhou (2019), ARM; Dong, Mnih & Tucker (2020), DisARM. All four
    train one layer of 200 Bernoulli latents on binarized MNIST in two architectures: "linear"
    (the encoder's logits are an affine function of x, the decoder's an affine function of b)
    and "nonlinear" (two deterministic hidden layers of 200 units before the stochastic layer,
    mirrored in the decoder). Optimiser Adam at 1e-4 for the encoder and the decoder; minibatch
    50 in ARM's table, ARM's released scripts and DisARM's released code. ARM's figures use
    Larochelle's statically binarized MNIST (``binarized-mnist`` in :mod:`gradbench.data`),
    DisARM's launcher defaults to dynamic binarization. Priors: ARM's ``b_mnist_linear_slim.py``
    creates factorised Bernoulli prior logits at zero (Bern(½)) and trains them with plain
    gradient descent at 0.01 beside Adam for the networks; DisARM's
    ``experiment_launcher_singlelayer.py`` does the same (``prior_lr`` 1e-2,
    ``tf.keras.optimizers.SGD``), as REBAR's code (and RELAX, built on it) learns them too;
    ARM's ``b_mnist_nonlinear_slim.py`` keeps the prior fixed at Bern(½) (log p(b) at logits
    zero). Hidden units: tanh in REBAR's code, LeakyReLU in ARM's nonlinear script (negative
    slope 0.1) and DisARM's (0.3). The papers put log p(b) − log q(b|x) inside the function
    whose gradient is estimated (``signal="sampled-kl"`` here); gradbench's default takes the KL
    analytically (the regularizer), so an estimator sees f(b) = −log p(x|b) only: the same
    gradient in expectation, usually less variance in the encoder's (so gradbench's default
    variance figures are not comparable with theirs).

Options
    ``prior``: ``"uniform"`` (default) fixes p(b) = Bern(½)^d: the KL is analytic in the encoder
    alone and every parameter is the encoder's or the decoder's. ``"learned"`` adds the logits
    η of p(b) = Π_j Bern(σ(η_j)) as the parameter ``prior_logits``, created at zero as the
    released codes do and trained by plain SGD at ``prior_learning_rate`` (0.01, theirs) beside
    the run's Adam (:meth:`BernoulliVAE.sgd_parameters`).
    ``leaky_slope``: negative slope of the nonlinear architecture's LeakyReLU units, 0.3
    (DisARM's) by default, 0.1 in ARM's nonlinear script.
    ``signal``: ``"analytic-kl"`` (default): data_loss = −log p(x|b), regularizer =
    KL(q(b|x) ‖ p(b)) in closed form. ``"sampled-kl"``: the released codes' learning signal, data_loss
    = −f(b) with f(b) = log p(x|b) + log p(b) − log q(b|x) on the estimator's sample, regularizer
    0. The encoder's logits inside log q are held constant (detached), as those codes
    differentiate log q only through the estimator's term: the direct term E_q[∇ log q] is zero,
    so every unbiased estimator stays unbiased for the same ELBO. The prior's logits get the
    pathwise gradient b − σ(η) at the sample (theirs), whose expectation is −∇_η KL. On a
    relaxed sample (Gumbel-softmax, REBAR's control variate) f is the same expression with the
    continuous b, linear in each b_j.

gradbench's choices
    Weights Glorot-uniform, biases zero (the default of the TensorFlow layers ARM's and DisARM's
    codes build on). Inputs enter the networks as they are (0/1) and every bias starts at zero; ARM's
    scripts feed 2x − 1 and 2b − 1, and DisARM's README launches with ``--demean_input``
    (encoder input x minus the training mean, decoder input 2b − 1) and
    ``--initialize_with_bias`` (the decoder's output bias at the logit of the training mean):
    the same function class, started elsewhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.estimators.base import Estimator, StochasticForward
from gradbench.estimators.nodes import BernoulliNode, configuration_digits
from gradbench.experiments.metrics import ELBO, IW_BOUND, RECONSTRUCTION_LL
from gradbench.models.base import (
    DataShape,
    DeterministicNetwork,
    OracleUnavailable,
    StochasticModel,
    bernoulli_log_likelihood,
    bernoulli_log_likelihood_table,
    encoder_decoder_groups,
    register_model,
)

ARCHITECTURES = ("linear", "nonlinear")
PRIORS = ("uniform", "learned")
"""``prior``: fixed Bern(½)^d, or factorised logits learned from zero (the released codes)."""
SIGNALS = ("analytic-kl", "sampled-kl")
"""``signal``: what the estimator's f is; see the module docstring."""
PRIOR_LEARNING_RATE = 0.01
"""Plain SGD step of the learned prior's logits in ARM's and DisARM's released codes."""
LEAKY_SLOPE = 0.3
"""Default negative slope of the nonlinear architecture's LeakyReLU units (DisARM's code)."""
ARM_NONLINEAR_SCRIPT_SLOPE = 0.1
"""Negative slope of the LeakyReLU units in ARM's released ``b_mnist_nonlinear_slim.py``."""
MAX_ORACLE_LATENT_DIM = 16
"""Largest latent_dim :meth:`BernoulliVAE.expected_loss` enumerates: 2^16 = 65,536
configurations, each decoded once (about 400 MB of float64 decoder logits for MNIST)."""
_EVAL_ELEMENTS = 2**24
"""Largest draws × batch × input_dim decoded at once in :meth:`BernoulliVAE.evaluate`."""
_LOG_2 = math.log(2.0)


def bernoulli_kl_to_uniform(logits: Tensor) -> Tensor:
    """KL(Π_j Bern(σ(l_j)) ‖ Bern(½)^d) = Σ_j [σ(l) log σ(l) + σ(−l) log σ(−l) + log 2], summed
    over the last dimension; stable for large |l| (log σ by ``logsigmoid``)."""
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    return (log_p.exp() * log_p + log_not_p.exp() * log_not_p + _LOG_2).sum(-1)


def bernoulli_kl(logits: Tensor, prior_logits: Tensor) -> Tensor:
    """KL(Π_j Bern(σ(l_j)) ‖ Π_j Bern(σ(η_j))) = Σ_j [σ(l)(log σ(l) − log σ(η)) + σ(−l)(log σ(−l)
    − log σ(−η))], summed over the last dimension; l [..., d], η [d] (broadcast)."""
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    to_prior = log_p.exp() * (log_p - F.logsigmoid(prior_logits))
    return (to_prior + log_not_p.exp() * (log_not_p - F.logsigmoid(-prior_logits))).sum(-1)


def _reconstruction_loss(network: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """−log p(x | network(x)) per example, [B]: Bernoulli logits of x from x."""
    return -bernoulli_log_likelihood(network(x), x)


def _mlp(sizes: list[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))


@register_model
class BernoulliVAE(StochasticModel):
    """VAE with ``latent_dim`` independent Bernoulli latents: encoder x → logits [B, latent_dim],
    decoder b → Bernoulli logits [..., input_dim].

    ``architecture="linear"``: input_dim-latent_dim-input_dim, one affine layer each way.
    ``"nonlinear"``: two LeakyReLU hidden layers of ``hidden_size`` units before the latent
    layer and two after it (input_dim-h-h-latent_dim-h-h-input_dim); ``hidden_size`` is unused
    by the linear architecture. Defaults: linear, 200 latents, 200 hidden units, the uniform
    prior and the analytic KL; ``prior``, ``prior_learning_rate``, ``leaky_slope`` and ``signal``
    as in the module docstring (``prior="learned", signal="sampled-kl"``: ARM's linear and
    DisARM's released codes; ``prior="uniform", leaky_slope=0.1, signal="sampled-kl"``: ARM's
    nonlinear script).
    """

    name = "bernoulli-vae"
    summary = "Bernoulli-latent VAE with Bernoulli decoder (REBAR/ARM/DisARM 784-200-784)"
    node_kinds = frozenset({"bernoulli"})
    has_inverse = False
    reference_estimator = "lr-baseline"
    oracle_options = {"architecture": "linear", "latent_dim": 4}
    """16 latent configurations: :meth:`expected_loss` enumerates them all. Linear: on digits
    (tests/test_oracle.py) an encoder gradient off by 5 % is 6 (lr-baseline) to 10 (disarm)
    standard errors away at 10,000 draws, against 3 to 7 for a nonlinear 64-8-8-4 network, whose
    hidden layers add coordinates but nothing an estimator acts on (the decoder's gradient is
    pathwise given b for every estimator)."""

    task = "autoencoder"
    profile_options = {
        "smoke": {"latent_dim": 8},
        # ARM's and DisARM's released codes: the prior's logits learned, f = log p(x,b) - log q(b|x)
        "arm": {"prior": "learned", "signal": "sampled-kl"},
        "arm-nonlinear": {"prior": "learned", "signal": "sampled-kl", "architecture": "nonlinear"},
        "disarm-dynamic": {"prior": "learned", "signal": "sampled-kl"},
        # ARM's released nonlinear script: the prior fixed at Bern(1/2), LeakyReLU slope 0.1
        "arm-nonlinear-script": {"prior": "uniform", "signal": "sampled-kl",
                                 "architecture": "nonlinear",
                                 "leaky_slope": ARM_NONLINEAR_SCRIPT_SLOPE},
    }
    headline_groups = ("encoder", "decoder")

    def __init__(
        self,
        shape: DataShape,
        *,
        architecture: str = "linear",
        latent_dim: int = 200,
        hidden_size: int = 200,
        prior: str = "uniform",
        prior_learning_rate: float = PRIOR_LEARNING_RATE,
        leaky_slope: float = LEAKY_SLOPE,
        signal: str = "analytic-kl",
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}"
            )
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size}")
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; valid: {', '.join(PRIORS)}")
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}; valid: {', '.join(SIGNALS)}")
        if not (math.isfinite(prior_learning_rate) and prior_learning_rate > 0):
            raise ValueError(
                f"prior_learning_rate must be positive and finite, got {prior_learning_rate}"
            )
        if not (math.isfinite(leaky_slope) and leaky_slope >= 0):
            raise ValueError(f"leaky_slope must be non-negative and finite, got {leaky_slope}")
        self.latent_dim = latent_dim
        self.prior = prior
        self.prior_learning_rate = prior_learning_rate
        self.leaky_slope = leaky_slope
        self.signal = signal
        hidden = [hidden_size, hidden_size] if architecture == "nonlinear" else []
        self.encoder = _mlp([shape.input_dim, *hidden, latent_dim])
        self.decoder = _mlp([latent_dim, *hidden, shape.input_dim])
        for layer in [*self.encoder, *self.decoder]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        if prior == "learned":
            self.prior_logits = nn.Parameter(torch.zeros(latent_dim))

    def sgd_parameters(self) -> dict[str, float]:
        """The learned prior's logits train by plain SGD at ``prior_learning_rate`` (the released
        codes); empty for the uniform prior."""
        return {"prior_logits": self.prior_learning_rate} if self.prior == "learned" else {}

    def kl_to_prior(self, logits: Tensor) -> Tensor:
        """KL(q(b|x) ‖ p(b)) [...] for encoder logits [..., latent_dim], in closed form."""
        if self.prior == "learned":
            return bernoulli_kl(logits, self.prior_logits)
        return bernoulli_kl_to_uniform(logits)

    def log_prior(self, b: Tensor) -> Tensor:
        """log p(b) = Σ_j [b_j log σ(η_j) + (1 − b_j) log σ(−η_j)], [...] for b [..., latent_dim]
        (−latent_dim log 2 for the uniform prior)."""
        if self.prior == "learned":
            return bernoulli_log_likelihood(self.prior_logits, b)
        return torch.full(b.shape[:-1], -self.latent_dim * _LOG_2, dtype=b.dtype, device=b.device)

    def encode(self, x: Tensor) -> Tensor:
        """Logits of q(b|x), [B, latent_dim], for x [B, input_dim]."""
        h = x
        for layer in self.encoder[:-1]:
            h = F.leaky_relu(layer(h), self.leaky_slope)
        return self.encoder[-1](h)

    def decode(self, b: Tensor) -> Tensor:
        """Bernoulli logits of p(x|b), [..., input_dim], for b [..., latent_dim] (binary or
        relaxed)."""
        h = b
        for layer in self.decoder[:-1]:
            h = F.leaky_relu(layer(h), self.leaky_slope)
        return self.decoder[-1](h)

    def forward(self, x: Tensor, y: Tensor, estimator: Estimator) -> StochasticForward:
        """``signal="analytic-kl"``: data_loss = −log p(x|b) [*sample_shape, B], regularizer =
        KL(q(b|x) ‖ p(b)) [B]. ``"sampled-kl"``: data_loss = −[log p(x|b) + log p(b) − log q(b|x)]
        with q's logits detached, regularizer 0 [B]."""
        logits = self.encode(x)
        node = BernoulliNode(logits, event_dims=1, context=x)
        latent = estimator.sample(node)  # [*sample_shape, B, latent_dim]
        decoder_logits = self.decode(latent)  # [*sample_shape, B, input_dim]
        data_loss = -bernoulli_log_likelihood(decoder_logits, x)
        if self.signal == "sampled-kl":
            log_q = bernoulli_log_likelihood(logits.detach(), latent)
            data_loss = data_loss - self.log_prior(latent) + log_q
            regularizer = torch.zeros(logits.shape[:-1], dtype=logits.dtype, device=logits.device)
        else:
            regularizer = self.kl_to_prior(logits)
        return StochasticForward(
            data_loss=data_loss,
            regularizer=regularizer,
            nodes=[node],
            samples=[latent],
            reconstruction=torch.sigmoid(decoder_logits),
        )

    def deterministic_network(self) -> DeterministicNetwork:
        """The encoder and the decoder as plain torch layers of the same sizes with the latent's
        mean σ(l) between them, and the reconstruction loss −log p(x|σ(l)) per example: the
        network without the latent's noise and without the KL, the floor a step is timed
        against."""
        encoder = [layer.weight.shape for layer in self.encoder]
        decoder = [layer.weight.shape for layer in self.decoder]
        modules: list[nn.Module] = []
        for n_out, n_in in encoder:
            modules += [nn.Linear(n_in, n_out), nn.LeakyReLU(self.leaky_slope)]
        modules[-1] = nn.Sigmoid()
        for n_out, n_in in decoder:
            modules += [nn.Linear(n_in, n_out), nn.LeakyReLU(self.leaky_slope)]
        weight = self.encoder[0].weight
        network = nn.Sequential(*modules[:-1]).to(weight.device, weight.dtype)
        return DeterministicNetwork(network, _reconstruction_loss)

    def parameter_groups(self) -> dict[str, list[str]]:
        """Each parameter alone (``encoder.0.weight``, …); bottom, top, encoder, decoder, all."""
        return encoder_decoder_groups(self, f"decoder.{len(self.decoder) - 1}.weight")

    def all_latents(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """Every one of the 2^latent_dim binary configurations, [C, latent_dim]; configuration c
        has b_j = bit j of c. :class:`OracleUnavailable` above latent_dim 16."""
        if self.latent_dim > MAX_ORACLE_LATENT_DIM:
            raise OracleUnavailable(
                f"enumerating 2^{self.latent_dim} latent configurations is too large for an "
                f"exact oracle (latent_dim at most {MAX_ORACLE_LATENT_DIM}); use a smaller "
                "latent_dim"
            )
        return configuration_digits(self.latent_dim, 2, device).to(dtype)

    def _enumerated_log_likelihoods(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every configuration [C, latent_dim] and log p(x|b_c) [C, B] (matrix products: no
        C × B × input_dim tensor is formed)."""
        latents = self.all_latents(x.dtype, x.device)
        return latents, bernoulli_log_likelihood_table(self.decode(latents), x)

    def exact_log_likelihood(self, x: Tensor) -> Tensor:
        """log p(x) = logsumexp_b [log p(x|b) + log p(b)] over all 2^latent_dim latents, [B];
        :class:`OracleUnavailable` above latent_dim 16. Meant for tiny models in tests."""
        with torch.no_grad():
            latents, log_px_b = self._enumerated_log_likelihoods(x)
            return torch.logsumexp(log_px_b + self.log_prior(latents)[:, None], dim=0)

    def expected_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """E_{q(b|x)}[−log p(x|b)] + KL(q(b|x) ‖ p(b)), [B], by enumerating all 2^latent_dim
        configurations: Σ_c q(b_c|x) (−log p(x|b_c)), q(b_c|x) = Π_j σ(l_j)^b_cj σ(−l_j)^(1−b_cj).

        Exact and differentiable in the encoder (through q and the KL) and the decoder (through
        every log p(x|b_c)) and the learned prior (through the KL); the same expectation for
        either ``signal``; :class:`OracleUnavailable` above latent_dim 16.
        """
        latents, log_px_b = self._enumerated_log_likelihoods(x)  # [C, d], [C, B]
        logits = self.encode(x)  # [B, d]
        log_q = latents @ F.logsigmoid(logits).T + (1.0 - latents) @ F.logsigmoid(-logits).T
        return -(log_q.exp() * log_px_b).sum(0) + self.kl_to_prior(logits)

    def _log_weights(self, x: Tensor, logits: Tensor, draws: int) -> tuple[Tensor, Tensor]:
        """log p(x|b_k) and log p(b_k) − log q(b_k|x), each [draws, B], for exact draws b_k."""
        node = BernoulliNode(logits, event_dims=1)
        log_px_b, log_ratio = [], []
        chunk = max(1, _EVAL_ELEMENTS // x.numel())
        for start in range(0, draws, chunk):
            draw = node.sample((min(chunk, draws - start),))  # [size, B, latent_dim]
            log_px_b.append(bernoulli_log_likelihood(self.decode(draw), x))
            log_ratio.append(self.log_prior(draw) - node.log_prob(draw))
        return torch.cat(log_px_b), torch.cat(log_ratio)

    def evaluate(self, x: Tensor, y: Tensor, samples: int, iw_samples: int) -> dict[str, Tensor]:
        """Per-example elbo, reconstruction_ll (``samples`` draws) and iw_bound (``iw_samples``).

        iw_bound = log (1/K) Σ_k p(x|b_k) p(b_k) / q(b_k|x), b_k ~ q(b|x) (Burda et al. 2016),
        drawn in chunks of at most 2^24 decoded elements.
        """
        if samples < 1 or iw_samples < 1:
            raise ValueError(f"samples and iw_samples must be >= 1, got {samples}, {iw_samples}")
        with torch.no_grad():
            logits = self.encode(x)
            reconstruction_ll = self._log_weights(x, logits, samples)[0].mean(0)
            log_px_b, log_ratio = self._log_weights(x, logits, iw_samples)
            iw_bound = torch.logsumexp(log_px_b + log_ratio, dim=0) - math.log(iw_samples)
            return {
                ELBO: reconstruction_ll - self.kl_to_prior(logits),
                RECONSTRUCTION_LL: reconstruction_ll,
                IW_BOUND: iw_bound,
            }
