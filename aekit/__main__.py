"""``python -m aekit``: the command line (see :mod:`aekit.cli`)."""

import sys

from .cli.commands import main

sys.exit(main())
