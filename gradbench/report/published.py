"""Published figures that gradbench's reports show beside its own measurements.

These are the papers' numbers, typed from the papers (see the citations), measured on the
authors' hardware with the authors' code and conventions. They are never mixed into gradbench's
result rows: report tables put them in columns labelled "published (...)".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """A paper whose figures a report quotes."""

    key: str  # BibTeX key
    label: str  # short form used in column labels, e.g. "Kingma et al. 2015"
    bibtex: str  # full BibTeX entry


KINGMA_2015 = Source(
    key="kingma2015variational",
    label="Kingma et al. 2015",
    bibtex="""@inproceedings{kingma2015variational,
  title     = {Variational Dropout and the Local Reparameterization Trick},
  author    = {Kingma, Diederik P. and Salimans, Tim and Welling, Max},
  booktitle = {Advances in Neural Information Processing Systems 28},
  year      = {2015}
}""",
)

KINGMA_WELLING_2014 = Source(
    key="kingma2014autoencoding",
    label="Kingma & Welling 2014",
    bibtex="""@inproceedings{kingma2014autoencoding,
  title     = {Auto-Encoding Variational {B}ayes},
  author    = {Kingma, Diederik P. and Welling, Max},
  booktitle = {International Conference on Learning Representations},
  year      = {2014}
}""",
)

JANG_2017 = Source(
    key="jang2017categorical",
    label="Jang et al. 2017",
    bibtex="""@inproceedings{jang2017categorical,
  title     = {Categorical Reparameterization with {G}umbel-Softmax},
  author    = {Jang, Eric and Gu, Shixiang and Poole, Ben},
  booktitle = {International Conference on Learning Representations},
  year      = {2017}
}""",
)

NITTA_2017 = Source(
    key="nitta2017discrete",
    label="Nitta 2017, thesis",
    bibtex="""@mastersthesis{nitta2017discrete,
  title  = {Learning Variational Autoencoders with a Discrete Latent Space (in Japanese)},
  author = {Nitta, Kazuki},
  type   = {Bachelor's thesis},
  school = {Kanazawa University},
  year   = {2017}
}""",
)

RAINFORTH_2018 = Source(
    key="rainforth2018tighter",
    label="Rainforth et al. 2018",
    bibtex="""@inproceedings{rainforth2018tighter,
  title     = {Tighter Variational Bounds are Not Necessarily Better},
  author    = {Rainforth, Tom and Kosiorek, Adam R. and Le, Tuan Anh and Maddison, Chris J. and
               Igl, Maximilian and Wood, Frank and Teh, Yee Whye},
  booktitle = {International Conference on Machine Learning},
  year      = {2018}
}""",
)

YIN_ZHOU_2019 = Source(
    key="yin2019arm",
    label="Yin & Zhou 2019",
    bibtex="""@inproceedings{yin2019arm,
  title     = {{ARM}: Augment-{REINFORCE}-Merge Gradient for Stochastic Binary Networks},
  author    = {Yin, Mingzhang and Zhou, Mingyuan},
  booktitle = {International Conference on Learning Representations},
  year      = {2019}
}""",
)

SOURCES = (
    KINGMA_2015, KINGMA_WELLING_2014, JANG_2017, NITTA_2017, RAINFORTH_2018, YIN_ZHOU_2019
)
"""Every paper the reports cite, in the order their references list them."""


def published_label(source: Source, what: str, hardware: bool = True) -> str:
    """A published figure's column label: "published WHAT (Kingma et al. 2015, their hardware)"."""
    where = f"{source.label}, their hardware" if hardware else source.label
    return f"published {what} ({where})"


# Kingma, Salimans & Welling (2015), Table 1: average empirical variance of minibatch gradient
# estimates of the top- and bottom-layer weights after 10 and 100 training epochs, keyed by
# gradbench estimator, then (layer, epochs). Minibatch size and sum/mean convention not stated.
KINGMA_2015_TABLE1: dict[str, dict[tuple[str, int], float]] = {
    "local-reparam": {
        ("top", 10): 7.8e3, ("top", 100): 1.2e3, ("bottom", 10): 1.9e2, ("bottom", 100): 1.1e2,
    },
    "reparam-per-example": {
        ("top", 10): 1.4e4, ("top", 100): 2.6e3, ("bottom", 10): 4.3e2, ("bottom", 100): 2.5e2,
    },
    "reparam": {
        ("top", 10): 4.9e4, ("top", 100): 4.3e3, ("bottom", 10): 8.5e2, ("bottom", 100): 3.3e2,
    },
    "no-noise": {
        ("top", 10): 2.8e3, ("top", 100): 5.9e1, ("bottom", 10): 1.3e2, ("bottom", 100): 9.0e0,
    },
}

# The paper's name for each of those rows.
KINGMA_2015_ROW_NAMES: dict[str, str] = {
    "local-reparam": "local reparameterization",
    "reparam-per-example": "separate weight samples",
    "reparam": "single weight sample",
    "no-noise": "no dropout noise (minimal variance)",
}

# Kingma, Salimans & Welling (2015), as quoted in the slides: seconds per training epoch of the
# variational-dropout MLP with separate weight samples per example and with the local
# reparameterization trick, on the authors' hardware.
KINGMA_2015_SECONDS_PER_EPOCH: dict[str, float] = {
    "reparam-per-example": 1635.0,
    "local-reparam": 7.4,
}

# Kingma, Salimans & Welling (2015), Figure 1 (read from the plot): best MNIST test error of
# variational dropout (A2), percent, low and high reading.
KINGMA_2015_TEST_ERROR_PERCENT = (0.93, 0.95)

# Nitta (2017), Table 5.1: reconstruction log-likelihood (nats) of the categorical VAE
# 784-500-300(30x10)-500-784 on thresholded MNIST after 50 epochs, (train, validation).
NITTA_2017_TABLE51: dict[str, tuple[float, float]] = {
    "target-prop": (-70.102, -72.545),
    "gumbel-softmax (tau=0.5)": (-63.876, -64.401),
    "gumbel-softmax (tau=0.1)": (-68.883, -68.623),
}

# Which Table 5.1 row sits beside which gradbench estimator or variant; a row none sits beside
# is shown on its own.
NITTA_2017_ROW_FOR: dict[str, str] = {
    "target-prop": "target-prop",
    "gumbel-softmax": "gumbel-softmax (tau=0.5)",  # the default: annealed to 0.5
    "gumbel-softmax[temperature=0.5]": "gumbel-softmax (tau=0.5)",
    "gumbel-softmax[temperature=0.1]": "gumbel-softmax (tau=0.1)",
}

# Jang, Gu & Poole (2017), Table 1, row "VAE (Cat.)": negative ELBO in nats (lower is better) of
# their categorical VAE (20 variables x 10 classes, learned prior), keyed by gradbench estimator
# (their "SF", the score function, is our lr).
JANG_2017_VAE_CAT_NEG_ELBO: dict[str, float] = {
    "lr": 110.6,
    "st-gumbel": 107.8,
    "gumbel-softmax": 101.5,  # annealed to tau = 0.5, as gradbench's default and [temperature=0.5]
    "gumbel-softmax[temperature=0.5]": 101.5,
}

# Jang, Gu & Poole (2017), Table 1, row "VAE (Bern.)": negative ELBO in nats (lower is better) of
# their 784-200-784 Bernoulli VAE (200 Bernoulli latents) on fixed-binarization MNIST, keyed by
# gradbench estimator (SF is our lr).
JANG_2017_VAE_BERN_NEG_ELBO: dict[str, float] = {
    "lr": 112.2,
    "muprop": 109.7,
    "st-gumbel": 111.5,
    "gumbel-softmax": 105.0,
    "gumbel-softmax[temperature=0.5]": 105.0,
}

# Yin & Zhou (2019), their table of test −log p(x) in nats (lower is better) on MNIST with
# Larochelle's static binarization, Adam, batch 50, the linear 784-200-784 Bernoulli VAE
# ("linear") and the nonlinear one (two deterministic layers of 200 around the 200-unit
# Bernoulli layer), keyed by gradbench estimator (REINFORCE is lr, NVIL the learned baseline,
# Concrete the Gumbel-softmax relaxation).
YIN_ZHOU_2019_NEG_LOG_LIKELIHOOD: dict[str, dict[str, float]] = {
    "lr": {"linear": 164.0, "nonlinear": 114.6},
    "lr-baseline[baseline=learned]": {"linear": 113.1, "nonlinear": 102.2},
    "gumbel-softmax": {"linear": 107.3, "nonlinear": 99.6},
    "gumbel-softmax[temperature=0.5]": {"linear": 107.3, "nonlinear": 99.6},
    "rebar": {"linear": 107.7, "nonlinear": 101.4},
    "arm": {"linear": 107.2, "nonlinear": 98.4},
}
