"""gradbench's asv suite: speed, peak memory and gradient variance of every model × estimator.

Run from the repository root (see the README's "Benchmarks" section):
``asv machine --yes`` once, then ``asv run --python=same``. ``GRADBENCH_BENCH_PROFILE=fast``
(default) benchmarks tiny networks on scikit-learn's digits; ``full`` the papers' sizes on MNIST.

asv imports this package on its own (without the repository root on ``sys.path``). When
gradbench is not installed in the running environment (``--python=same`` in a plain checkout),
the working tree's copy is made importable, which is what ``--python=same`` benchmarks anyway.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("gradbench") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
