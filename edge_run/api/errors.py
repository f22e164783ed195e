"""Every error a client sees, mapped to HTTP in one place.

Errors use OpenAI's envelope, ``{"error": {"message", "type", "param", "code"}}``, except on the
Anthropic routes (``/v1/messages...``), where they use Anthropic's: ``{"type": "error", "error":
{"type", "message"}}``. The route's path decides, so an SDK always reads the shape it knows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException, ValidationException

from edge_run.api.schemas import ErrorBody, ErrorResponse
from edge_run.api.schemas_messages import AnthropicError, AnthropicErrorBody
from edge_run.errors import AuthenticationError, EdgeRunError
from edge_run.upstream.proxy import Forwarded

if TYPE_CHECKING:
    from litestar import Request

__all__ = ["ANTHROPIC_PREFIX", "EXCEPTION_HANDLERS", "anthropic_error", "error_body"]

log = logging.getLogger(__name__)

ANTHROPIC_PREFIX = "/v1/messages"  # routes whose errors use Anthropic's envelope

_MESSAGE_LIMIT = 1000  # characters; past that a message keeps its start and its end

_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_exceeded"}
_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _clip(message: str) -> str:
    """A message quoting a client's value (a model id, a tool name) stays short however long the value was."""
    if len(message) <= _MESSAGE_LIMIT:
        return message
    return f"{message[:600]}[... {len(message) - 900} characters ...]{message[-300:]}"


def error_body(exc: EdgeRunError) -> ErrorResponse:
    return ErrorResponse(ErrorBody(message=_clip(exc.message), type=exc.type, param=exc.param, code=exc.code))


def anthropic_error(status: int, message: str) -> AnthropicError:
    """Anthropic's envelope; its error ``type`` follows from the status."""
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return AnthropicError(AnthropicErrorBody(type=kind, message=_clip(message)))


def _respond(
    request: Request, body: ErrorBody, status: int, headers: dict[str, str] | None = None
) -> Response[ErrorResponse | AnthropicError]:
    content: ErrorResponse | AnthropicError = ErrorResponse(msgspec.structs.replace(body, message=_clip(body.message)))
    if request.scope["path"].startswith(ANTHROPIC_PREFIX):
        content = anthropic_error(status, body.message)
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def _domain(request: Request, exc: EdgeRunError) -> Response[ErrorResponse | AnthropicError]:
    headers: dict[str, str] = {}
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="edge-run"'
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status >= 500:
        log.error("request failed: %s", exc.message)
    return _respond(request, error_body(exc).error, exc.status, headers)


def _validation(request: Request, exc: ValidationException) -> Response[ErrorResponse | AnthropicError]:
    """Malformed JSON or a schema violation: msgspec's message plus the path it names."""
    details = [d for d in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(d, dict)]
    messages, param = [], None
    for d in details:
        key = str(d.get("key", "")).removeprefix("data").lstrip(".") or None
        param = param or key
        messages.append(f"{d.get('message')} - at `$.{key}`" if key else f"Invalid request body: {d.get('message')}")
    message = "; ".join(messages) or str(exc.detail)
    if request.headers.get("content-length") == "0":
        message, param = "The request body is empty: send a JSON object.", None
    body = ErrorBody(message=message, type="invalid_request_error", param=param, code=None)
    return _respond(request, body, 400)


def _undecodable(
    request: Request, exc: RecursionError | UnicodeDecodeError
) -> Response[ErrorResponse | AnthropicError]:
    """A body msgspec cannot decode at all: nested past its depth limit, or not UTF-8 (raised while decoding)."""
    why = "it is not UTF-8" if isinstance(exc, UnicodeDecodeError) else "it is nested too deeply"
    body = ErrorBody(message=f"The request body is not valid JSON: {why}.", type="invalid_request_error", param=None,
                     code=None)  # fmt: skip
    return _respond(request, body, 400)


def _http(request: Request, exc: HTTPException) -> Response[ErrorResponse | AnthropicError]:
    status = exc.status_code
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = ErrorBody(message=exc.detail, type=kind, param=None, code=_CODES.get(status))
    return _respond(request, body, status, dict(exc.headers or {}))


def _unexpected(request: Request, exc: Exception) -> Response[ErrorResponse | AnthropicError]:
    log.exception("unhandled error", exc_info=exc)
    body = ErrorBody(
        message="The server had an error processing the request.",
        type="server_error",
        param=None,
        code="internal_error",
    )
    return _respond(request, body, 500)


def _forwarded(_: Request, exc: Forwarded) -> Response[Any]:
    """An upstream answered: its response goes out as it is (not an error)."""
    return exc.response


EXCEPTION_HANDLERS = {
    Forwarded: _forwarded,
    EdgeRunError: _domain,
    ValidationException: _validation,
    RecursionError: _undecodable,
    UnicodeDecodeError: _undecodable,
    HTTPException: _http,
    Exception: _unexpected,
}
