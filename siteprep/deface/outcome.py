"""What became of one series, and why a series was quarantined: stable codes for scripts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    DEFACED = "defaced"  # written as a new, defaced series
    NOT_A_HEAD = "not_a_head"  # left as it was (copied unchanged)
    QUARANTINED = "quarantined"  # a head, or possibly one, that could not be defaced with confidence


class Reason(StrEnum):
    UNREADABLE = "unreadable"  # a file's header or pixels do not parse
    NOT_STACKABLE = "not_stackable"  # the slices do not form one regular volume
    FIELD_OF_VIEW_TOO_SMALL = "field_of_view_too_small"  # too thin to find a face in
    REGISTRATION_FAILED = "registration_failed"  # the optimiser itself gave up
    LOW_CONFIDENCE = "low_confidence"  # the fitted template failed the quality check
    WRITE_FAILED = "write_failed"
    DEFACE_FAILED = "deface_failed"  # the defacer itself raised: a bug to report


class Quarantine(Exception):
    """Raised while defacing one series: the whole series goes to quarantine with this reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class SeriesResult:
    """One series' line in the report (no identifying value: the UIDs are de-identified ones)."""

    series: str
    subject: str
    files: int
    outcome: Outcome
    why: str = ""  # what the screening read, or what went wrong
    reason: Reason | None = None
    output_series: str | None = None
    qa_picture: str | None = None
    fit: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "series": self.series,
            "subject": self.subject,
            "files": self.files,
            "outcome": self.outcome.value,
            "why": self.why,
            "reason": self.reason.value if self.reason else None,
            "output_series": self.output_series,
            "qa_picture": self.qa_picture,
            "fit": self.fit,
            "seconds": round(self.seconds, 2),
        }
