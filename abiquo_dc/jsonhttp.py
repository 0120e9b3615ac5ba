"""JSON answers and errors for the remote services' HTTP routes, one way for all of them.

Errors are JSON `{"code", "message"}` with the status the error taxonomy gives:
InvalidInput 400, NotFound 404, Conflict and LimitExceeded 409, TemporaryError 503,
anything else of the taxonomy 500. A service with statuses of its own (the nodecollector
answers 401 for refused credentials, 501 for a type without a driver, 502 for the
hypervisor's own failures) passes them in `extra`, checked first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import TypeVar

import msgspec
import structlog
from aiohttp import web

from abiquo_runtime.correlation import current_correlation_id
from abiquo_runtime.errors import (
    AbiquoError,
    Conflict,
    InvalidInput,
    LimitExceeded,
    NotFound,
    TemporaryError,
)

log = structlog.get_logger("abiquo.dc.http")

JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
Statuses = Sequence[tuple[type[Exception], int]]

_STATUSES: Statuses = (
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
    (LimitExceeded, 409),
    (TemporaryError, 503),
)
T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


def status_for(exc: AbiquoError, extra: Statuses = (), default: int = 500) -> int:
    for kind, status in (*extra, *_STATUSES):
        if isinstance(exc, kind):
            return status
    return default


def error_response(status: int, code: str, message: str) -> web.Response:
    body = msgspec.json.encode({"code": code, "message": message})
    return web.Response(status=status, body=body, content_type=JSON)


def json_response(
    value: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(value), content_type=JSON, headers=headers
    )


def answering(handler: Handler, *, extra: Statuses = (), default: int = 500) -> Handler:
    """`handler`, with the taxonomy's errors turned into JSON answers, and anything else
    into a 500 that names the correlation id its logged traceback carries."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except AbiquoError as exc:
            return error_response(status_for(exc, extra, default), exc.code, exc.message)
        except web.HTTPException:
            raise
        except Exception:
            # A fault of ours: its traceback is logged, the answer names its correlation id.
            cid = current_correlation_id() or ""
            log.exception("request failed", method=request.method, path=request.path)
            return error_response(500, "GEN-0", f"unexpected error (correlation id {cid})")

    return answer


def parse_choice(kind: type[E], text: str, what: str) -> E:
    """The member of the StrEnum `kind` named `text` (any case, spaces around ignored);
    InvalidInput listing the known names otherwise."""
    try:
        return kind(text.strip().upper())
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise InvalidInput(f"unknown {what} {text[:50]!r}; one of {known}") from None


def decode_body(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """A JSON body decoded and validated; InvalidInput saying what is wrong otherwise."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None
