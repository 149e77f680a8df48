"""The aekit exception tree.

Every error aekit raises on purpose derives from :class:`AekitError`, so callers
can catch one class.  Errors about bad arguments also derive from ``ValueError``
so code written for plain Python/NumPy conventions keeps working::

    AekitError
    ├── ConfigurationError (ValueError)   bad option, layer spec or keyword
    ├── DataError (ValueError)            bad array or data file
    ├── ModelFileError                    unreadable, foreign or tampered model file
    └── TrainingDiverged                  the loss became NaN/Inf or grew by orders of magnitude

Warnings about a run that goes on derive from :class:`AekitWarning` (a ``UserWarning``), so
``warnings.simplefilter('error', aekit.AekitWarning)`` turns them into errors::

    AekitWarning (UserWarning)
    ├── EarlyStoppingWarning              training stopped before max_epochs (the rule, the epoch)
    ├── OutputRangeWarning                the loss or the data do not fit the output activation's range
    └── VariationalWarning                a variational setting that trains but cannot work as meant
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AekitError",
    "AekitWarning",
    "CheckpointError",
    "ConfigurationError",
    "DataError",
    "EarlyStoppingWarning",
    "ModelFileError",
    "OutputRangeWarning",
    "TrainingDiverged",
    "VariationalWarning",
    "closest_name",
    "unknown_name_error",
]


class AekitError(Exception):
    """Base class of every error raised by aekit."""


class ConfigurationError(AekitError, ValueError):
    """An option, keyword argument or layer specification is invalid."""


class DataError(AekitError, ValueError):
    """An input array or data file cannot be used."""


class ModelFileError(AekitError):
    """A model file is missing, truncated, foreign, tampered with or incompatible."""


class CheckpointError(ModelFileError):
    """A checkpoint cannot be written, read or resumed from."""


class TrainingDiverged(AekitError):
    """The training loss became NaN or infinite, or grew by orders of magnitude.

    "Grew" means an epoch's training loss above :data:`aekit.train.guards.GROWTH_FACTOR`
    (1e6) times the loss of the parameters the run started from.  The network's
    parameters have been restored to the best finite values seen before this error
    was raised.
    """


class AekitWarning(UserWarning):
    """Base class of every warning aekit issues on purpose."""


class EarlyStoppingWarning(AekitWarning):
    """Training stopped before ``max_epochs``: the message names the epoch, the rule and how to turn it off."""


class OutputRangeWarning(AekitWarning):
    """The loss or the training data do not fit the output activation's range (the message gives a remedy).

    Issued by ``train()`` for ``loss='bce'`` on an output that is not bounded in [0, 1], and for
    training data outside the range of the output activation (0..255 pixels into a sigmoid).
    """


class VariationalWarning(AekitWarning):
    """A variational autoencoder's setting that trains but cannot work as meant (a KL beside a non-likelihood)."""


def closest_name(name: str, valid: Iterable[str]) -> str | None:
    """Return the valid name nearest to ``name`` (for "did you mean" hints), or None."""
    matches = difflib.get_close_matches(str(name), sorted(valid), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> ConfigurationError:
    """Build the one standard error for an unknown keyword, activation, loss, etc.

    Parameters
    ----------
    kind : str
        What the name is, e.g. ``"keyword argument of train()"`` or ``"activation"``.
    name : str
        The unknown name the caller gave.
    valid : iterable of str
        The accepted names.
    """
    valid = sorted(valid)
    hint = closest_name(name, valid)
    message = f"unknown {kind} {name!r}"
    if hint is not None:
        message += f"; did you mean {hint!r}?"
    else:
        message += f"; expected one of {', '.join(map(repr, valid))}"
    return ConfigurationError(message)
