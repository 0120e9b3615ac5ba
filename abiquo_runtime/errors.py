"""The error taxonomy every boundary translates into and out of.

SDK and library errors are turned into one of these where they are caught; the HTTP edge
turns them into Abiquo error codes, the message link into ack, requeue or dead-letter.
"""

from __future__ import annotations


class AbiquoError(Exception):
    """Base of every error the programs raise on purpose; `code` is stable."""

    code: str = "GEN-0"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(AbiquoError):
    """The caller sent something malformed or inconsistent: do not retry as is."""

    code = "GEN-1"


class NotFound(AbiquoError):
    code = "GEN-2"


class Conflict(AbiquoError):
    """The target is in a state that does not allow the operation."""

    code = "GEN-3"


class NotPermitted(AbiquoError):
    """The caller is known, but what it holds does not allow this.

    Raised where the decision needs stored data (the role a user holds, the enterprise
    a role belongs to), inside the transaction that acts on it.
    """

    code = "AUTH-2"


class LimitExceeded(AbiquoError):
    code = "LIMIT-1"


class TemporaryError(AbiquoError):
    """Worth retrying later: a peer unreachable, a broker reconnecting, a timeout."""

    code = "GEN-4"


class PermanentError(AbiquoError):
    """Will fail the same way however often it is retried."""

    code = "GEN-5"
