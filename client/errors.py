"""What can go wrong when reporting, and how it is told."""
from __future__ import annotations

from dataclasses import dataclass


class ReporterWarning(UserWarning):
    """Progress could not be reported (the job goes on); the message says why."""


class ReporterError(Exception):
    """Progress could not be reported, in ``raise_errors=True`` mode.

    *code* is the service's error code (``bad-progress``, ``forbidden``, …) when
    it answered, or ``unreachable`` when it could not be reached; *keys* are
    the nodes whose updates were lost.
    """

    def __init__(self, message: str, code: str = "unreachable", keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.keys = keys


@dataclass(frozen=True)
class Refusal:
    """One update the service (or the encoder) refused: its key, code and message."""

    key: str
    code: str
    message: str


class SendError(Exception):
    """A transport could not deliver a batch.

    *retryable* says whether trying again later may help (the service or
    broker unreachable, overloaded or restarting) or not (the request itself
    was refused: a 4xx, bad credentials, a missing exchange).
    """

    def __init__(self, message: str, *, retryable: bool, code: str = "unreachable",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.retry_after = retry_after
