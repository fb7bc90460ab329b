"""``python -m gradbench``."""

import sys

from gradbench.cli import main

sys.exit(main())
