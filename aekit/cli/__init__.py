"""The ``aekit`` command line (``python -m aekit``), thin over the Python API.

::

    aekit train DATA --layers 784,64,784 --output model.aekit [--tied] [--epochs N] [--hidden-l1 F] ...
    aekit encode MODEL DATA --output codes.npy [--layer hid1]
    aekit decode MODEL CODES --output recon.npy [--layer hid1]
    aekit score MODEL DATA [--output errors.csv]
    aekit diagnose MODEL DATA
    aekit report MODEL DATA --output DIR
    aekit browse MODEL DATA --output DIR [--labels FILE] [--contexts FILE] [--serve]
    aekit info MODEL-OR-CHECKPOINT
    aekit demo [--output DIR]

DATA is any file :func:`aekit.load_data` reads; ``FILE.npz:NAME`` picks one array of an ``.npz``.

Errors are one line on stderr (``aekit: error: ...``) naming the flag, config key or file at
fault, and a non-zero exit code: 2 for a bad command line (argparse's errors, and option or config
values that aekit refuses: :class:`~aekit.errors.ConfigurationError`), 1 for anything else (data,
model files, a diverged run, ...); ``--debug`` shows the traceback.  Outputs are written
atomically and never onto an input, so a failed run never damages an existing file.

The parts: :mod:`~aekit.cli.parser` (sub-commands and flags), :mod:`~aekit.cli.commands` (what
each sub-command does), :mod:`~aekit.cli.entry` (:func:`main`: exit codes, logging),
:mod:`~aekit.cli.errors` (one-line messages), :mod:`~aekit.cli.progress`,
:mod:`~aekit.cli.config` (``--layers`` and TOML files), :mod:`~aekit.cli.files`,
:mod:`~aekit.cli.browse` (the unit browser and its local server) and :mod:`~aekit.cli.demo`.
"""

from .config import load_config, parse_layers_arg
from .entry import main
from .parser import build_parser
from .progress import progress

__all__ = ["build_parser", "load_config", "main", "parse_layers_arg", "progress"]
