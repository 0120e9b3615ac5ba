"""Errors as Abiquo renders them, and the middleware that turns every failure into one.

`{"collection": [{"code": "DC-0", "message": "..."}]}` as application/vnd.abiquo.errors+json,
or `<errors><error><code/><message/></error></errors>`, with the status code:

- the domain's errors (abiquo_runtime.errors) by their class: InvalidInput 400,
  NotFound 404, Conflict and LimitExceeded 409, TemporaryError 503, PermanentError 500;
- the API's own refusals (`ApiError`: 401, 403, 406, 415, ...) as they were raised;
- aiohttp's (no such route 404, wrong method 405, body too large 413, ...) by status;
- anything else: 500, whose message carries the correlation id; the traceback goes to
  the log, never into the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import msgspec
import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from abiquo_central.api.media import Format, Media, MediaName, error_format
from abiquo_central.api.model import Collection
from abiquo_central.api.xml import encode_xml
from abiquo_runtime.correlation import ensure_correlation_id
from abiquo_runtime.errors import (
    AbiquoError,
    Conflict,
    InvalidInput,
    LimitExceeded,
    NotFound,
    NotPermitted,
    PermanentError,
    TemporaryError,
)

ERRORS = MediaName("errors", "errors")

# Codes of the refusals that come from HTTP itself rather than from a domain.
UNEXPECTED = "GEN-0"
NOT_AUTHENTICATED = "AUTH-1"
FORBIDDEN = "AUTH-2"
HTTP_CODES: Mapping[int, str] = MappingProxyType(
    {
        400: InvalidInput.code,
        401: NOT_AUTHENTICATED,
        403: FORBIDDEN,
        404: NotFound.code,
        405: "GEN-6",
        406: "GEN-7",
        413: "GEN-8",
        415: "GEN-9",
    }
)

# The status of each domain error, most specific class first.
STATUS_OF: tuple[tuple[type[AbiquoError], int], ...] = (
    (InvalidInput, 400),
    (NotFound, 404),
    (NotPermitted, 403),
    (Conflict, 409),
    (LimitExceeded, 409),
    (TemporaryError, 503),
    (PermanentError, 500),
    (AbiquoError, 500),
)

# aiohttp sets these on its exceptions; the error body brings its own.
_BODY_HEADERS = frozenset({hdrs.CONTENT_TYPE.lower(), hdrs.CONTENT_LENGTH.lower()})

_log = structlog.get_logger("abiquo.central.api")


class ErrorItem(msgspec.Struct):
    media: ClassVar[Media] = Media.of("error")

    code: str
    message: str


class ApiError(Exception):
    """A refusal the API makes itself, with its status, Abiquo code and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code if code is not None else HTTP_CODES.get(status, UNEXPECTED)
        self.headers = dict(headers or {})


def status_of(error: AbiquoError) -> int:
    for cls, status in STATUS_OF:
        if isinstance(error, cls):
            return status
    return 500


def encode_errors(items: list[ErrorItem], fmt: Format) -> bytes:
    errors = Collection[ErrorItem](collection=items)
    if fmt is Format.XML:
        return encode_xml(errors, root=ERRORS.xml)
    return msgspec.json.encode(errors)


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The Abiquo error body, in the format the client's Accept prefers."""
    negotiated = error_format(request.headers.get(hdrs.ACCEPT))
    response = web.Response(
        status=status,
        body=encode_errors([ErrorItem(code=code, message=message)], negotiated.format),
        headers=dict(headers or {}),
    )
    response.headers[hdrs.CONTENT_TYPE] = ERRORS.content_type(negotiated.format, negotiated.version)
    return response


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
    return error_response(
        request,
        exc.status,
        HTTP_CODES.get(exc.status, UNEXPECTED),
        exc.reason,
        headers=headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc.status, exc.code, exc.message, headers=exc.headers)
    except AbiquoError as exc:
        status = status_of(exc)
        if status >= 500:
            _log.warning("request failed", status=status, code=exc.code, error=exc.message)
        return error_response(request, status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are answers, not errors
        return _from_http_exception(request, exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        correlation_id = ensure_correlation_id()
        _log.exception("unexpected error", method=request.method, path=request.path, status=500)
        return error_response(
            request,
            500,
            UNEXPECTED,
            f"Unexpected error; quote correlation id {correlation_id} when reporting it",
        )
