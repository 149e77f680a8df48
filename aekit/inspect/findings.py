"""What :func:`aekit.diagnose` returns: :class:`Finding`, and the order findings come in."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigurationError

__all__ = ["SEVERITIES", "Finding", "sort_findings"]

SEVERITIES = ("error", "warning", "info")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One result of :func:`aekit.diagnose`.

    Attributes
    ----------
    code : str
        Stable identifier, e.g. ``'dead-units'``.
    severity : str
        ``'error'`` (the model cannot work this way), ``'warning'`` or ``'info'``.
    message : str
        What was measured, with the figure.
    remedy : str
        What to change, naming the options that help.
    value : float or None
        The measured figure behind the finding.
    layer : str or None
        The layer concerned, when there is one.
    """

    code: str
    severity: str
    message: str
    remedy: str
    value: float | None = None
    layer: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ConfigurationError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def __str__(self) -> str:
        return f"[{self.severity}] {self.code}: {self.message} Remedy: {self.remedy}"


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then infos; the order of the checks within each."""
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))
