"""The command line's errors: one line, in the words of the command line.

A bad command line is a :class:`UsageError` (exit code 2, as argparse's own errors);
:func:`explain` rewrites a library error's message so that it names the flags, config
keys and files the user wrote rather than Python keywords and array names.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError, DataError, TrainingDiverged

__all__ = ["UsageError", "explain", "one_line"]


class UsageError(Exception):
    """A bad command line (exit code 2)."""


def one_line(text: Any) -> str:
    """``text`` as one line: every run of white space (newlines included) becomes one space."""
    return " ".join(str(text).split())


# A keyword at the start of a message, as in "max_epochs must be ..." or "resume=True needs ...".
_LEAD_WORDS = r"(?=\s+(?:must|needs|applies|should|is|has)\b)"


def explain(error: BaseException, args: argparse.Namespace | None) -> str:
    """``error``'s message in the words of the command line.

    The library names Python keywords (``max_epochs``, ``resume=True``) and arrays (``x``); the
    command line had flags (``--epochs``), config keys and files.  Rewritten: a keyword at the start
    of the message or written ``name=VALUE``, a keyword with an underscore anywhere, and the array
    named at the start of a data error.  An ``unknown NAME 'value'`` error gets the flag that gave
    that value in front.
    """
    message = one_line(error)
    # Model-file errors quote the file's own config, which the command line did not write.
    if args is None or not isinstance(error, (ConfigurationError, DataError, TrainingDiverged)):
        return message
    arrays: dict[str, str] = getattr(args, "cli_arrays", {})
    if isinstance(error, DataError):
        for name, label in arrays.items():
            if message.startswith(name + " "):
                message = label + message[len(name) :]
                break
    labels: dict[str, str] = getattr(args, "cli_labels", {})

    def flag(name: str, value: str | None) -> str:
        label = labels[name]
        if value is None or value == "True":
            return label
        return f"{label} {value}" if label.startswith("-") else f"{label} = {value}"

    def flag_of(name: str, with_value: bool) -> Callable[[re.Match[str]], str]:
        # A match of keyword `name` -> its flag, followed by the value the match captured if asked.
        return lambda match: flag(name, match.group(1) if with_value else None)

    for name in sorted(labels, key=len, reverse=True):
        word = re.escape(name)
        # Not inside a quoted name, a path or a longer word.
        before, after = r"(?<![\w'\"./-])", r"(?![\w'\"/-])"
        message = re.sub(rf"^{word}(?:=(\S+?))?{_LEAD_WORDS}", flag_of(name, True), message)
        message = re.sub(rf"{before}{word}=([^\s,;)]+)", flag_of(name, True), message)
        if "_" in name or " " in name:
            message = re.sub(rf"{before}{word}{after}", flag_of(name, False), message)
    if isinstance(error, ConfigurationError) and not any(label in message for label in labels.values()):
        unknown = re.match(r"unknown [\w ]+? '([^']*)'", message)
        values: dict[str, Any] = getattr(args, "cli_values", None) or vars(args)
        if unknown:
            wanted = unknown.group(1)
            sources = [
                labels[name]
                for name, value in values.items()
                if name in labels
                and (
                    (isinstance(value, str) and wanted in re.split(r"[,:]", value))
                    or (not isinstance(value, str) and repr(wanted) in repr(value))
                )
            ]
            if sources:
                message = f"{' or '.join(sorted(set(sources)))}: {message}"
    return message
