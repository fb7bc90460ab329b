"""Statistics of gradient draws: per-parameter variance, its law-of-total-variance split, SNR.

Layout of the draws. R = B·K draws ĝ_bk: B minibatches b, K noise draws k on each (K = 1: every
draw has its own minibatch and its own noise). Per parameter, the one-way ANOVA of Searle, Casella
& McCulloch (1992), ch. 3:

    ḡ_b = mean_k ĝ_bk,   ḡ = mean_b ḡ_b,   SSW = Σ_b Σ_k (ĝ_bk − ḡ_b)²,   SSB = Σ_b (ḡ_b − ḡ)²
    noise  σ̂²_ε = SSW / (B (K − 1))                unbiased for E_B[Var_ε(ĝ | B)]
    data   σ̂²_B = SSB / (B − 1) − σ̂²_ε / K         unbiased for Var_B(E_ε[ĝ | B]) (can be < 0)
    total  σ̂²   = σ̂²_ε + σ̂²_B = SSW / (B K) + SSB / (B − 1)     unbiased for Var(ĝ)

so noise + data = total holds by construction (to round-off). With K = 1 the total is the usual
sample variance and the split is not identified.

SNR. Estimand: the root mean square over a group's parameters of |E ĝ_p| / std ĝ_p (Rainforth et
al. 2018's per-component SNR, aggregated as √(mean_p SNR_p²)), leaving out parameters whose
gradient is deterministic (σ̂ zero up to round-off: SNR infinite). The plug-in |ḡ_p| / σ̂_p is
biased up by the noise of the mean, E|ḡ| − |μ| ≈ 0.80 sd(ḡ) at μ = 0, so a weak-signal group's
SNR fell as 1 / √R with the number of draws R, and no estimator of |μ| is unbiased for every μ.
The square can be debiased: per parameter (:func:`debiased_squared_snr`)

    SNR²_p ≈ (ḡ_p² − SSB_p / (B (B − 1))) / σ̂_p² · (ν_p − 2) / ν_p,

unbiased for μ_p² in the numerator (SSB / (B (B − 1)) is unbiased for Var ḡ) and for 1 / σ_p²
up to O(1 / ν²) for normal draws (ν the Satterthwaite degrees of freedom of σ̂²). It is not
clamped, so its group mean ``snr_squared`` is unbiased whatever the signal and does not drift
with R; ``snr`` is √max(0, snr_squared). The root of a group mean clamps once, not per
parameter: at zero signal its floor is 0.41 √s with s ≈ √2 / (R √P) the spread of the mean over
P parameters (about 0.013 at R = 100, P = 200; 5e-4 for an encoder of 10⁵ parameters at
R = 1600), against 0.34 / √R for a mean of per-parameter roots.

A group's figures are means over its parameters (``grad_variance``, ``grad_variance_noise``,
``grad_variance_data``, ``snr_squared``), the root of such a mean (``snr``), or the sum
(``grad_variance_trace`` = tr Cov ĝ).

Intervals (``INTERVAL_METHOD``): B minibatches, each with its K noise draws (so the
within-minibatch correlation is kept), are resampled with replacement. A variance's interval is
the longer, on each side, of two:

- the studentised bootstrap (bootstrap-t; Davison & Hinkley 1997, §5.2.1): t* = (θ* − θ̃) / ŝ*,
  with ŝ the linearisation (influence-function) standard error over minibatches and θ̃ = E*θ*
  exactly: the estimators are unbiased for any distribution of minibatches, so θ̃ is their value
  at the empirical one (SSB / B in place of SSB / (B − 1));
- a t interval θ̂ ± t_ν ŝ (:func:`kurtosis_t_interval`) whose ŝ carries the small-sample factor
  B / (B − 2) and whose degrees of freedom ν come from the kurtosis of the minibatches'
  influence values (Satterthwaite: ν = B − 1 for normal draws, fewer for heavy tails, where ŝ
  is itself uncertain). Heavy tails make a minibatch sample without an extreme draw look light:
  the bootstrap world then has no extremes either and its t* is too short; ν and the factor
  make up for it.

``grad_variance`` and ``grad_variance_noise`` are positive and use both on log θ; the data part,
which can be negative, the raw scale. The squared SNR uses the basic bootstrap of its debiased
estimate around the bootstrap world's true value W (mean_p ḡ_p² / σ̃_p², σ̃² = SSW / (B K) +
SSB / B: :func:`bootstrap_world_squared_snr`), [θ̂ − (q_{1−α/2} − W), θ̂ − (q_{α/2} − W)] (a
resample's ratio has the resample's own σ̂*, so the basic interval also mirrors the Jensen bias
of 1 / σ̂² where normal theory misses it); the SNR's interval is the root of its bounds, cut at 0.
Every interval is widened where needed to hold its point.

Coverage (simulation, ``tests/test_variance_stats.py``: B minibatches × K = 2 noise draws, 300
parameters with data and noise parts, each a Student-t (ν = 5) with correlation 0.1 across
parameters through a common t factor, signal |μ_p| / σ_p uniform on [1, 2]; 400 replicates per
cell, so ±1.1 % binomial SE; 95 % intervals; total / noise / data / SNR, the SNR's truth the
root mean square of |μ_p| / σ_p, its square's interval covering exactly when the SNR's does):

    B = 25   94.2 / 94.2 / 93.0 / 97.5 %
    B = 50   93.8 / 95.2 / 93.0 / 93.5 %, second seed 93.5 / 93.5 / 94.2 / 93.2 %
             normal draws 94.0 / 96.2 / 93.5 / 97.5 %; correlation 0.3: 93.2 / 94.2 / 95.0 / 91.5 %
             K = 1, B = 100 (also 100 draws): total 95.5 %
    B = 100  94.2 / 96.0 / 95.2, second seed 94.2 / 94.5 / 93.5 % (variances)
    B = 200  96.2 / 96.8 / 95.2 / 93.2 %
    B = 400  97.0 / 92.8 / 95.8 % (variances)

so from B = 50 minibatches (``MIN_MINIBATCHES_FOR_COVERAGE``; 100 draws at K = 2) the variances
and the SNR cover within the 93–97 % band for heavy-tailed draws, up to single runs' scatter of
±1.1 % around it; at B = 25 the SNR's interval over-covers (97.5 %). The bootstrap-t alone covered
91.8 / 92.8 / 90.5 % at B = 50 (normal draws too: 91.8 / 95.2 / 90.2 %), the t interval alone
91.5 / 93.8 / 91.5 %; a calibrated double bootstrap (Davison & Hinkley 1997, §5.6) reached only
92.5 / 93.2 / 92.8 % at 6 times the cost. The SNR's misses lie on one side for heavy tails: there 1 / σ̂² has a Jensen bias beyond normal
theory's (ν − 2) / ν (it grows with the kurtosis), which the bootstrap reproduces only in part
(at correlation 0.3 it covers 91.5 %); for normal draws it is conservative (97.5 %). A mean of
per-parameter roots with a bias bound (Armstrong & Kolesár 2020) covered 94.5 % but drifted with
R, as any mean of per-parameter roots must. Every row carries
``coverage_checked``: B ≥ ``MIN_MINIBATCHES_FOR_COVERAGE``, so a report can mark the cells
below the draw count at which coverage was verified.

Every replicate is exact and vectorised: a replicate is a weight vector w of resampling counts
over minibatches, n_w = Σ w, and with centred minibatch means c_bp = ḡ_bp − ḡ_p

    Σ_p SSW* = w·a,  a_b = Σ_p Σ_k (ĝ_bkp − ḡ_bp)²;    Σ_p SSB* = w·q − wᵀ G w / n_w,
    q_b = Σ_p c_bp²,  G = c cᵀ  [B, B]

so a group costs one Gram matrix however many parameters it has, and so do the replicates'
standard errors: minibatch b's influence on the total is a_b / K + |c_b − (w c) / n_w|² ·
n_w / (n_w − 1), the squared distance q_b − 2 (G w)_b / n_w + wᵀ G w / n_w². The SNR, a
per-parameter ratio, needs the direct [replicates, B] × [B, P] product for every parameter:
above ``SNR_BOOTSTRAP_PARAMETERS`` its replicates are computed on a seeded subset of about that
many parameters, uniform within each tensor and at least ``SNR_BOOTSTRAP_PER_TENSOR`` of every
tensor (so a small bias vector is not left out); each tensor's subset sums are weighted by the
inverse of its sampled fraction (Horvitz–Thompson), and the interval is the subset's replicate
deviations around the (exact, all-parameter) estimate. A subset's mean spreads at least as much
as the whole's, so the interval is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from scipy import stats
from torch import Tensor

from gradbench.experiments.metrics import (
    GRAD_VARIANCE,
    GRAD_VARIANCE_DATA,
    GRAD_VARIANCE_NOISE,
    GRAD_VARIANCE_TRACE,
    LOG_VARIANCE_SLOPE,
    SNR,
    SNR_SQUARED,
)

METRICS = (
    GRAD_VARIANCE,
    GRAD_VARIANCE_TRACE,
    GRAD_VARIANCE_NOISE,
    GRAD_VARIANCE_DATA,
    SNR,
    SNR_SQUARED,
)
"""Per group and batch size, in the order reports list them."""

SLOPE_METRIC = LOG_VARIANCE_SLOPE
_MAX_EXPONENT = 700.0
"""Largest exponent math.exp takes in float64 without overflow (e^709.8 is the limit)."""

BOOTSTRAP_REPLICATES = 1000
CONFIDENCE = 0.95
SNR_BOOTSTRAP_PARAMETERS = 2**15
"""Parameters (a seeded subset, over the whole model) whose SNR is resampled."""
SNR_BOOTSTRAP_PER_TENSOR = 512
"""The fewest parameters of one tensor in that subset (all of a smaller tensor)."""
INTERVAL_METHOD = (
    "for variances, the longer on each side of a studentised bootstrap over minibatches "
    "(bootstrap-t with influence-function standard errors) and a t interval with "
    "kurtosis-based (Satterthwaite) degrees of freedom, on the log scale for the total and "
    "noise variances; for the squared SNR, a basic bootstrap of its debiased estimate around "
    "the bootstrap world's value, and for the SNR the root of its bounds, cut at 0 (Davison & "
    "Hinkley 1997, Bootstrap Methods and their Application, §5.2)"
)
"""One sentence for a report's conventions list."""
MIN_MINIBATCHES_FOR_COVERAGE: int | None = 50
"""Minibatches from which simulated coverage of the variances and the SNR lies in 93–97 % for
heavy-tailed (Student-t, ν = 5) draws, K = 2 (module docstring); below it (B = 25) the SNR's
interval over-covers. Rows with fewer minibatches have ``coverage_checked`` False."""
LOG_SCALE_METRICS = frozenset({GRAD_VARIANCE, GRAD_VARIANCE_NOISE})
"""Positive metrics whose bootstrap-t interval is built on log θ."""
_BLOCK_ELEMENTS = 2**22
"""Largest (replicates or minibatches) × parameters block held at once by the reductions."""


@dataclass
class DrawSummary:
    """Sufficient statistics of B·K draws, per parameter tensor (flattened to P values).

    ``means``: name → [B, P] minibatch means ḡ_b. ``within``: name → [B, P] within-minibatch
    sums of squares Σ_k (ĝ_bk − ḡ_b)², or None when K = 1.
    """

    means: dict[str, Tensor]
    within: dict[str, Tensor] | None
    noise_draws: int

    @property
    def minibatches(self) -> int:
        """B, the number of minibatches."""
        return int(next(iter(self.means.values())).shape[0])

    @property
    def draws(self) -> int:
        """R = B·K, the number of gradient draws."""
        return self.minibatches * self.noise_draws

    @classmethod
    def from_draws(cls, draws: Mapping[str, Tensor], noise_draws: int = 1) -> DrawSummary:
        """Summarise draws name → [B·K, ...], ordered minibatch-major (draw b·K + k)."""
        if noise_draws < 1:
            raise ValueError(f"noise_draws must be positive, got {noise_draws}")
        means: dict[str, Tensor] = {}
        within: dict[str, Tensor] = {}
        for name, values in draws.items():
            if values.shape[0] % noise_draws:
                raise ValueError(
                    f"{values.shape[0]} draws of {name!r} do not split into groups of "
                    f"{noise_draws} noise draws"
                )
            grouped = values.reshape(values.shape[0] // noise_draws, noise_draws, -1)  # [B, K, P]
            means[name] = grouped.mean(1)
            if noise_draws > 1:
                within[name] = (grouped - means[name].unsqueeze(1)).square().sum(1)
        return cls(means, within if noise_draws > 1 else None, noise_draws)


@dataclass
class _Reduced:
    """Per parameter tensor: minibatch-level sums over its parameters, and its SNR sums."""

    count: int  # parameters
    a: Tensor  # [B] a_b = Σ_p SSW_bp (zeros when K = 1)
    gram: Tensor  # [B, B] G = c cᵀ of the centred minibatch means
    snr_sum: float  # Σ over valid parameters of the debiased squared SNR (all of them)
    snr_count: int  # valid parameters (σ̂_p > 0 beyond round-off)
    world_sum: float  # Σ over valid parameters of the bootstrap world's true squared SNR
    subset_sum: Tensor  # [rows] Σ over the SNR subset's valid parameters of SNR*_p²
    subset_count: Tensor  # [rows] those with a non-zero SNR*_p²


def resampling_weights(
    minibatches: int, replicates: int, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Weights [1 + replicates, B] over minibatches, float64 on ``device``.

    Row 0: all ones (the estimate itself); then bootstrap resampling counts (each row sums to B).
    """
    index = torch.randint(minibatches, (replicates, minibatches), generator=generator)
    counts = torch.zeros(replicates, minibatches, dtype=torch.float64)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    ones = torch.ones(1, minibatches, dtype=torch.float64)
    return torch.cat([ones, counts]).to(device)


def debiased_squared_snr(
    grand: Tensor, ssb: Tensor, ssw: Tensor | float, n: Tensor | int, k: int
) -> Tensor:
    """Per-parameter squared SNR (ḡ² − Var̂ ḡ) / σ̂² · (ν − 2) / ν from n minibatches of k noise
    draws, not clamped (it is negative where the signal is below its noise).

    Var̂ ḡ = SSB / (n (n − 1)) is unbiased for the variance of the grand mean (the n minibatch
    means are independent), so ḡ² − Var̂ ḡ is unbiased for (E ĝ)²; σ̂² = SSW / (n k) +
    SSB / (n − 1). (ν − 2) / ν removes the Jensen bias of 1 / σ̂², E[1 / σ̂²] ≈ ν / ((ν − 2) σ²),
    with ν σ̂²'s Satterthwaite degrees of freedom (n − 1 for k = 1, where the correction is
    exact for normal draws up to 2 / (n (n − 1))). Zero where σ̂ is zero.
    """
    within = ssw / (n * k)
    between = ssb / (n - 1)
    var = within + between
    spread = between.square() / (n - 1)
    if k > 1:
        spread = spread + within.square() / (n * (k - 1))
    freedom = var.square() / spread.clamp(min=torch.finfo(var.dtype).tiny)
    jensen = ((freedom - 2.0) / freedom).clamp(min=0.0)
    square = (grand.square() - ssb / (n * (n - 1))) * jensen
    return torch.where(var > 0, square / var.clamp(min=torch.finfo(var.dtype).tiny), 0.0)


def bootstrap_world_squared_snr(
    grand: Tensor, ssb: Tensor, ssw: Tensor | float, n: int, k: int
) -> Tensor:
    """Per-parameter squared SNR of the empirical distribution of the n minibatches, ḡ² / σ̃²
    with σ̃² = SSW / (n k) + SSB / n, the variance that resampled minibatches have: the truth
    of the bootstrap world, from which the bootstrap's deviations are taken (as the variances'
    are from their own bootstrap-world values)."""
    var = ssw / (n * k) + ssb / n
    return torch.where(var > 0, grand.square() / var.clamp(min=torch.finfo(var.dtype).tiny), 0.0)


def _reduce(
    mean: Tensor,
    within: Tensor | None,
    noise_draws: int,
    weights: Tensor,
    snr_fraction: float,
    generator: torch.Generator,
) -> _Reduced:
    """One tensor's minibatch-level sums over parameters, a_b and G = c cᵀ (module docstring),
    and its debiased SNR (:func:`debiased_squared_snr`): exact over all parameters, and for every weight
    row on a uniform subset of a ``snr_fraction`` of them (drawn with ``generator``; its sums
    divided by ``snr_fraction``, so tensors sampled at different fractions add up), with
    ḡ* = ḡ + (w c)/n_w, SSB* = w·c² − n_w (ḡ* − ḡ)², SSW* = w·SSW. Parameters are taken in
    column blocks, so memory beyond the summary stays bounded.
    """
    b, k = mean.shape[0], noise_draws
    device, dtype, wide = weights.device, mean.dtype, torch.float64
    rows = weights.shape[0]
    # Sums over parameters run in the draws' dtype (float32 for models: memory-bound passes at
    # half the traffic); accumulators across blocks and the [B]-sized algebra in float64.
    totals = weights.sum(1, keepdim=True)  # [rows, 1]
    weights_d, totals_d = weights.to(dtype), totals.to(dtype)
    gram = torch.zeros(b, b, dtype=wide, device=device)
    a = torch.zeros(b, dtype=wide, device=device)
    subset_sum = torch.zeros(rows, dtype=wide, device=device)
    subset_count = torch.zeros(rows, dtype=wide, device=device)
    snr_sum, snr_count, world_sum = 0.0, 0, 0.0
    tolerance = 16 * torch.finfo(dtype).eps
    block = max(1, _BLOCK_ELEMENTS // max(b, math.ceil(rows * snr_fraction)))
    for start in range(0, mean.shape[1], block):
        means = mean[:, start : start + block].to(device)  # [B, p]
        grand = means.mean(0)
        centred = means - grand
        ssb_p = centred.square().sum(0)
        gram += (centred @ centred.T).to(wide)
        withins = None if within is None else within[:, start : start + block].to(device)
        ssw_p = torch.zeros_like(ssb_p) if withins is None else withins.sum(0)
        if withins is not None:
            a += withins.sum(1).to(wide)
        # Deterministic components: σ̂ zero up to the round-off of the draws' dtype (SNR = ∞).
        std = (ssw_p / (b * k) + ssb_p / (b - 1)).clamp(min=0).sqrt()
        valid = (std > tolerance * grand.abs()) & (std > 0)
        kept = (grand[valid], ssb_p[valid], ssw_p[valid] if withins is not None else 0.0)
        snr_sum += float(debiased_squared_snr(*kept, b, k).sum())
        snr_count += int(valid.sum())
        world_sum += float(bootstrap_world_squared_snr(*kept, b, k).sum())
        if snr_fraction < 1.0:
            keep = torch.rand(valid.shape, generator=generator, dtype=wide)
            valid &= (keep < snr_fraction).to(device)
        elif bool(valid.all()):
            valid = slice(None)  # every column: no copy
        c = centred[:, valid]  # [B, v]
        if c.shape[1] == 0:
            continue
        shift = weights_d @ c / totals_d  # [rows, v]: ḡ* − ḡ
        ssb_star = weights_d @ c.square() - totals_d * shift.square()
        ssw_star = weights_d @ withins[:, valid] if withins is not None else 0.0
        ratio = debiased_squared_snr(shift.add_(grand[valid]), ssb_star, ssw_star, totals_d, k)
        subset_sum += ratio.sum(1).to(wide)
        subset_count += (ratio != 0).sum(1)
    return _Reduced(
        int(mean.shape[1]),
        a,
        gram,
        snr_sum,
        snr_count,
        world_sum,
        subset_sum / snr_fraction,
        subset_count / snr_fraction,
    )


def basic_interval(estimate: float, replicates: Tensor, confidence: float) -> tuple[float, float]:
    """Basic bootstrap interval [2θ̂ − q_{1−α/2}, 2θ̂ − q_{α/2}] (Davison & Hinkley 1997, §5.2).

    q: quantiles of the finite replicates; NaN when there are none or the estimate is not finite.
    The SNR rows use it around the bootstrap world's value (module docstring).
    """
    finite = replicates[replicates.isfinite()].double()
    if finite.numel() == 0 or not math.isfinite(estimate):
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    levels = torch.tensor([tail, 1.0 - tail], dtype=torch.float64, device=finite.device)
    low_q, high_q = torch.quantile(finite, levels).tolist()
    return 2.0 * estimate - high_q, 2.0 * estimate - low_q


def studentized_interval(
    estimate: float,
    error: float,
    replicates: Tensor,
    errors: Tensor,
    centre: float,
    confidence: float,
    log: bool = False,
) -> tuple[float, float]:
    """Bootstrap-t interval [θ̂ − t*_{1−α/2} ŝ, θ̂ − t*_{α/2} ŝ] (Davison & Hinkley 1997, §5.2.1).

    t* = (θ* − θ̃) / ŝ* over the replicates θ* with standard errors ŝ*, θ̃ the bootstrap world's
    true value (``centre``). ``log``: the same on log θ (ŝ / θ its standard error), for a
    positive θ. The interval is widened to hold θ̂ where the quantiles leave it out; NaN when
    the estimate or its error is not finite, [θ̂, θ̂] when the error is zero.
    """
    if not (math.isfinite(estimate) and math.isfinite(error)):
        return math.nan, math.nan
    if error <= 0.0:
        return estimate, estimate
    replicates, errors = replicates.double(), errors.double()
    if log:
        if estimate <= 0.0 or centre <= 0.0:
            return studentized_interval(estimate, error, replicates, errors, centre, confidence)
        usable = (replicates > 0) & (errors > 0)
        t = (replicates[usable].log() - math.log(centre)) / (errors[usable] / replicates[usable])
    else:
        t = (replicates - centre) / errors
    t = t[t.isfinite()]
    if t.numel() == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    levels = torch.tensor([tail, 1.0 - tail], dtype=torch.float64, device=t.device)
    low_t, high_t = torch.quantile(t, levels).tolist()
    if log:
        scale = error / estimate
        # With very few minibatches a studentised log-scale bound can exceed float range: the
        # interval is then unbounded above, which is what the data support.
        low = estimate * math.exp(min(-high_t * scale, _MAX_EXPONENT))
        high = estimate * math.exp(-low_t * scale) if -low_t * scale < _MAX_EXPONENT else math.inf
    else:
        low, high = estimate - high_t * error, estimate - low_t * error
    return min(low, estimate), max(high, estimate)


def kurtosis_degrees_of_freedom(influence: Tensor) -> float:
    """Satterthwaite degrees of freedom of a mean's squared standard error, from the kurtosis κ̂ of
    the B values it averages: ν = 2B / (κ̂ − (B − 3) / (B − 1)), so that Var(ŝ²) / s⁴ = 2 / ν
    (ν = B − 1 for normal values, fewer for heavy-tailed ones; at least 1)."""
    b = influence.shape[0]
    centred = influence.double() - influence.double().mean()
    second = float(centred.square().mean())
    if b < 3 or second <= 0.0:
        return float(max(b - 1, 1))
    kurtosis = float(centred.pow(4).mean()) / second**2
    excess = kurtosis - (b - 3) / (b - 1)
    return max(1.0, 2.0 * b / excess) if excess > 0 else float(b - 1)


def kurtosis_t_interval(
    estimate: float, influence: Tensor, confidence: float, log: bool = False
) -> tuple[float, float]:
    """θ̂ ± t_ν · ŝ (on log θ when ``log``: θ̂ · exp(± t_ν ŝ / θ̂)) for a statistic whose
    linearisation is the mean of the B ``influence`` values h_b.

    ŝ = sd(h) / √B · B / (B − 2): the influence standard error with a small-sample factor (that
    of the jackknife of a variance, √(B (B − 1)) / (B − 2), rounded up; the influence error
    alone falls 5 % short at B = 50 for normal draws). ν: :func:`kurtosis_degrees_of_freedom`,
    so the interval widens where heavy tails make ŝ itself uncertain. NaN for a non-finite
    estimate; [θ̂, θ̂] for ŝ = 0 or B ≤ 2.
    """
    b = influence.shape[0]
    if not math.isfinite(estimate):
        return math.nan, math.nan
    if b <= 2:
        return estimate, estimate
    error = float(influence.double().std(correction=0)) / math.sqrt(b) * b / (b - 2)
    if error <= 0.0:
        return estimate, estimate
    half = float(stats.t.ppf(0.5 + confidence / 2.0, kurtosis_degrees_of_freedom(influence)))
    if log and estimate > 0.0:
        scale = min(half * error / estimate, _MAX_EXPONENT)
        return estimate * math.exp(-scale), estimate * math.exp(scale)
    return estimate - half * error, estimate + half * error


def _weighted_error(weights: Tensor, totals: Tensor, influence: Tensor) -> Tensor:
    """[rows] linearisation standard errors √(Σ_b w_b (h_b − h̄_w)²) / n_w of weighted means."""
    mean = (weights * influence).sum(1, keepdim=True) / totals[:, None]
    return ((weights * (influence - mean).square()).sum(1).clamp(min=0)).sqrt() / totals


def _group_rows(
    parts: list[_Reduced], b: int, k: int, weights: Tensor, confidence: float
) -> list[dict[str, object]]:
    """The metric rows of one group from its tensors' reductions."""
    n = sum(p.count for p in parts)
    totals = weights.sum(1)  # [rows]
    a = sum(p.a for p in parts)
    gram = sum(p.gram for p in parts)
    q = gram.diagonal()
    wg = weights @ gram  # [rows, B]
    shift_square = (wg * weights).sum(1) / totals.square()  # |ḡ* − ḡ|² summed over parameters
    # Total variance: SSW*/(n_w K) + SSB*/(n_w − 1), SSB* = n_w (w·q / n_w − |ḡ* − ḡ|²).
    ratio = totals / (totals - 1)
    total = ((weights @ a) / (totals * k) + ratio * ((weights @ q) / totals - shift_square)) / n
    # Influence of minibatch b: its within-SS / K plus its squared distance from ḡ*, times
    # n_w / (n_w − 1): the linearisation of the total as a weighted mean.
    distance = q[None, :] - 2.0 * wg / totals[:, None] + shift_square[:, None]
    h_total = (a[None, :] / k + ratio[:, None] * distance) / n
    values = {GRAD_VARIANCE: (total, _weighted_error(weights, totals, h_total), h_total[0])}
    # Bootstrap world truths (the estimators are unbiased for any distribution of minibatches,
    # so E*θ* is θ's value at the empirical distribution: SSB / B in place of SSB / (B − 1)).
    centre_total = (float(a.sum()) / (b * k) + float(q.sum()) / b) / n
    centres = {GRAD_VARIANCE: centre_total}
    if k > 1:
        noise = (weights @ a) / (totals * (k - 1)) / n
        h_noise = (a / (k - 1) / n).expand_as(h_total)
        h_data = h_total - h_noise
        values[GRAD_VARIANCE_NOISE] = (
            noise,
            _weighted_error(weights, totals, h_noise),
            h_noise[0],
        )
        values[GRAD_VARIANCE_DATA] = (
            total - noise,
            _weighted_error(weights, totals, h_data),
            h_data[0],
        )
        centres[GRAD_VARIANCE_NOISE] = float(noise[0])
        centres[GRAD_VARIANCE_DATA] = centre_total - float(noise[0])
    rows = []
    snr: dict[str, tuple[float, ...]] | None = None
    for metric in METRICS:
        if metric == GRAD_VARIANCE_TRACE:
            low, high = rows[0]["ci_low"] * n, rows[0]["ci_high"] * n
            estimate = rows[0]["value"] * n
        elif metric in (SNR, SNR_SQUARED):
            snr = snr or _snr_interval(parts, confidence)
            estimate, low, high = snr[metric]
        elif metric in values:
            series, errors, influence = values[metric]
            estimate, log = float(series[0]), metric in LOG_SCALE_METRICS
            low, high = studentized_interval(
                estimate, float(errors[0]), series[1:], errors[1:], centres[metric], confidence, log
            )
            t_low, t_high = kurtosis_t_interval(estimate, influence, confidence, log)
            low, high = min(low, t_low), max(high, t_high)
        else:
            continue
        rows.append(
            {"metric": metric, "value": estimate, "ci_low": low, "ci_high": high, "n": b * k}
        )
    return rows


def _snr_interval(parts: list[_Reduced], confidence: float) -> dict[str, tuple[float, ...]]:
    """The group's debiased mean squared SNR and its root, each with its interval (module
    docstring); the root's within [0, ∞)."""
    count = sum(p.snr_count for p in parts)
    if not count:
        return {SNR_SQUARED: (math.nan,) * 3, SNR: (math.nan,) * 3}
    squared = sum(p.snr_sum for p in parts) / count
    subset = sum(p.subset_sum for p in parts) / sum(p.subset_count for p in parts).clamp(min=1)
    # Replicates as deviations from the subset's own estimate (row 0), around the whole's; the
    # basic interval mirrors their deviations from the bootstrap world's truth.
    world = sum(p.world_sum for p in parts) / count
    deviations = subset[1:] - subset[0] - (world - squared)
    low, high = basic_interval(squared, squared + deviations, confidence)
    if not math.isfinite(low):
        return {SNR_SQUARED: (squared, math.nan, math.nan),
                SNR: (math.sqrt(max(0.0, squared)), math.nan, math.nan)}
    low, high = min(low, squared), max(high, squared)
    root = math.sqrt(max(0.0, squared))
    return {
        SNR_SQUARED: (squared, low, high),
        SNR: (root, math.sqrt(max(0.0, low)), math.sqrt(max(0.0, high))),
    }


def coverage_checked(minibatches: int) -> bool:
    """Whether B minibatches reach the count at which coverage was verified by simulation
    (``MIN_MINIBATCHES_FOR_COVERAGE``); False while that count is not established."""
    return MIN_MINIBATCHES_FOR_COVERAGE is not None and minibatches >= MIN_MINIBATCHES_FOR_COVERAGE


def summary_statistics(
    summary: DrawSummary,
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    replicates: int = BOOTSTRAP_REPLICATES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[dict[str, object]]:
    """Rows {param_group, metric, value, ci_low, ci_high, n, coverage_checked} per group.

    ``coverage_checked``: B ≥ ``MIN_MINIBATCHES_FOR_COVERAGE`` (:func:`coverage_checked`), i.e.
    the row's draw count is at or above the one at which the intervals' coverage was verified.

    ``groups``: group → parameter names (a model's ``parameter_groups()``); default each name
    alone plus ``all``. Intervals: ``confidence`` bootstrap over minibatches (module docstring)
    with ``replicates`` resamples drawn from ``seed``. Needs B ≥ 2 minibatches.
    """
    b, k = summary.minibatches, summary.noise_draws
    if b < 2:
        raise ValueError(f"need at least 2 minibatches for a variance, got {b}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if replicates < 1:
        raise ValueError(f"replicates must be positive, got {replicates}")
    names = list(summary.means)
    if groups is None:
        groups = {**{name: [name] for name in names}, "all": names}
    unknown = sorted({p for members in groups.values() for p in members} - set(names))
    if unknown:
        raise ValueError(f"groups name unknown parameters {unknown}; valid: {', '.join(names)}")
    target = (
        torch.device(device) if device is not None else next(iter(summary.means.values())).device
    )
    generator = torch.Generator().manual_seed(seed)
    weights = resampling_weights(b, replicates, generator, target)
    parameters = sum(m.shape[1] for m in summary.means.values())
    share = SNR_BOOTSTRAP_PARAMETERS / parameters
    reduced = {
        name: _reduce(
            summary.means[name],
            None if summary.within is None else summary.within[name],
            k,
            weights,
            min(1.0, max(share, SNR_BOOTSTRAP_PER_TENSOR / summary.means[name].shape[1])),
            generator,
        )
        for name in names
    }
    checked = coverage_checked(b)
    rows = []
    for group, members in groups.items():
        for row in _group_rows([reduced[m] for m in members], b, k, weights, confidence):
            rows.append({"param_group": group, **row, "coverage_checked": checked})
    return rows


def group_statistics(
    draws: Mapping[str, Tensor] | Tensor,
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    noise_draws: int = 1,
    replicates: int = BOOTSTRAP_REPLICATES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Group rows (see :func:`summary_statistics`) of plain draws name → [R, ...] or one [R, ...].

    With ``noise_draws`` K > 1 the draws are B = R / K minibatches of K noise draws each,
    ordered minibatch-major, and the noise / data split is reported. A single tensor is named
    ``value``.
    """
    named = {"value": draws} if isinstance(draws, Tensor) else dict(draws)
    summary = DrawSummary.from_draws(named, noise_draws)
    return summary_statistics(
        summary, groups, replicates=replicates, confidence=confidence, seed=seed
    )


def log_variance_slope(
    batch_sizes: Sequence[int], variances: Sequence[float], confidence: float = CONFIDENCE
) -> dict[str, float]:
    """Least-squares slope of log variance against log M (``scipy.stats.linregress``).

    Var ∝ M^slope: slope −1 for noise independent across examples, flatter for a weight sample
    shared by the minibatch (Kingma, Salimans & Welling 2015). Interval: slope ± t_{n−2} · SE
    (the fit's residual scatter; NaN with fewer than 3 batch sizes). Non-positive or non-finite
    variances are left out; fewer than 2 points left give NaN.
    """
    points = [
        (math.log(m), math.log(v))
        for m, v in zip(batch_sizes, variances)
        if math.isfinite(v) and v > 0
    ]
    if len({x for x, _ in points}) < 2:
        return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": len(points)}
    fit = stats.linregress([x for x, _ in points], [y for _, y in points])
    if len(points) < 3:
        return {"value": float(fit.slope), "ci_low": math.nan, "ci_high": math.nan, "n": 2}
    half = stats.t.ppf(0.5 + confidence / 2.0, len(points) - 2) * fit.stderr
    return {
        "value": float(fit.slope),
        "ci_low": float(fit.slope - half),
        "ci_high": float(fit.slope + half),
        "n": len(points),
    }
