"""``python -m aekit``: the command line (see :mod:`aekit.cli`)."""

import sys

from .cli import main

sys.exit(main())
