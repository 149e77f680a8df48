"""What is minimised: reconstruction losses, penalties, corruption, and the :class:`Objective` that adds them up."""

from . import reconstruction as _reconstruction  # noqa: F401  (registers its metrics)
from .losses import LOSSES, Loss
from .objective import PENALTIES, Objective, PenaltyInput
from .penalties import REGULARIZER_KEYS, Regularizers

__all__ = ["LOSSES", "PENALTIES", "REGULARIZER_KEYS", "Loss", "Objective", "PenaltyInput", "Regularizers"]
