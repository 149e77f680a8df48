"""The ``aekit`` command line (``python -m aekit``); the commands live in :mod:`aekit.cli.commands`."""

from .commands import build_parser, main, progress

__all__ = ["build_parser", "main", "progress"]
