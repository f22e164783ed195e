"""Every error a client sees, in OpenAI's envelope. The one place exceptions become HTTP."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from litestar import Response
from litestar.exceptions import HTTPException, ValidationException

from edge_run.api.schemas import ErrorBody, ErrorResponse
from edge_run.errors import AuthenticationError, EdgeRunError

if TYPE_CHECKING:
    from litestar import Request

__all__ = ["EXCEPTION_HANDLERS", "error_body"]

log = logging.getLogger(__name__)

_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_exceeded"}
_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def error_body(exc: EdgeRunError) -> ErrorResponse:
    return ErrorResponse(ErrorBody(message=exc.message, type=exc.type, param=exc.param, code=exc.code))


def _respond(body: ErrorResponse, status: int, headers: dict[str, str] | None = None) -> Response[ErrorResponse]:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _domain(_: Request, exc: EdgeRunError) -> Response[ErrorResponse]:
    headers: dict[str, str] = {}
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="edge-run"'
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status >= 500:
        log.error("request failed: %s", exc.message)
    return _respond(error_body(exc), exc.status, headers)


def _validation(_: Request, exc: ValidationException) -> Response[ErrorResponse]:
    """Malformed JSON or a schema violation: msgspec's message plus the path it names."""
    details = [d for d in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(d, dict)]
    messages, param = [], None
    for d in details:
        key = str(d.get("key", "")).removeprefix("data").lstrip(".") or None
        param = param or key
        messages.append(f"{d.get('message')} - at `$.{key}`" if key else f"Invalid request body: {d.get('message')}")
    message = "; ".join(messages) or str(exc.detail)
    body = ErrorBody(message=message, type="invalid_request_error", param=param, code=None)
    return _respond(ErrorResponse(body), 400)


def _http(_: Request, exc: HTTPException) -> Response[ErrorResponse]:
    status = exc.status_code
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = ErrorBody(message=exc.detail, type=kind, param=None, code=_CODES.get(status))
    return _respond(ErrorResponse(body), status, dict(exc.headers or {}))


def _unexpected(_: Request, exc: Exception) -> Response[ErrorResponse]:
    log.exception("unhandled error", exc_info=exc)
    body = ErrorBody(
        message="The server had an error processing the request.",
        type="server_error",
        param=None,
        code="internal_error",
    )
    return _respond(ErrorResponse(body), 500)


EXCEPTION_HANDLERS = {
    EdgeRunError: _domain,
    ValidationException: _validation,
    HTTPException: _http,
    Exception: _unexpected,
}
