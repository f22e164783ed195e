"""Every error a client sees, mapped to HTTP in one place.

Errors use OpenAI's envelope, ``{"error": {"message", "type", "param", "code"}}``, except on the
Anthropic routes (``/v1/messages...``), where they use Anthropic's: ``{"type": "error", "error":
{"type", "message"}}``, and on Ollama's (``/api/...``), where they use Ollama's: ``{"error": "message"}``.
The route's path decides, so an SDK always reads the shape it knows.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import TYPE_CHECKING

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException, ValidationException

from edge_run.api.anthropic.schemas import AnthropicError, AnthropicErrorBody
from edge_run.errors import AuthenticationError, EdgeRunError, ModelNotFound

if TYPE_CHECKING:
    from litestar import Request

__all__ = [
    "EXCEPTION_HANDLERS",
    "anthropic_error",
    "error_body",
    "ollama_error",
    "refusal",
    "undecodable",
]

log = logging.getLogger(__name__)

ANTHROPIC_PREFIX = "/v1/messages"  # routes whose errors use Anthropic's envelope
OLLAMA_PREFIX = "/api/"  # and Ollama's

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


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(msgspec.Struct):
    """OpenAI's error envelope."""

    error: ErrorBody


def _clip(message: str) -> str:
    """A message quoting a client's value (a model id, a tool name) stays short however long the value was."""
    if len(message) <= _MESSAGE_LIMIT:
        return message
    return f"{message[:600]}[... {len(message) - 900} characters ...]{message[-300:]}"


def error_body(exc: EdgeRunError) -> ErrorResponse:
    return ErrorResponse(ErrorBody(message=_clip(exc.message), type=exc.type, param=exc.param, code=exc.code))


def refusal(exc: EdgeRunError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers of an answer sent by ASGI middleware, before any route (Host check, draining)."""
    body = msgspec.json.encode(error_body(exc))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    return body, headers


def anthropic_error(status: int, message: str) -> AnthropicError:
    """Anthropic's envelope; its error ``type`` follows from the status."""
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return AnthropicError(AnthropicErrorBody(type=kind, message=_clip(message)))


class OllamaError(msgspec.Struct):
    """Ollama's error envelope: ``{"error": "message"}``."""

    error: str


def ollama_error(exc: EdgeRunError) -> OllamaError:
    """Ollama's envelope, in its words for an unknown model (``model 'x' not found``, which its clients match)."""
    return OllamaError(f"model '{exc.model}' not found" if isinstance(exc, ModelNotFound) else exc.message)


_Envelope = ErrorResponse | AnthropicError | OllamaError


def _respond(
    request: Request, body: ErrorBody, status: int, headers: dict[str, str] | None = None
) -> Response[_Envelope]:
    content: _Envelope = ErrorResponse(msgspec.structs.replace(body, message=_clip(body.message)))
    path = request.scope["path"]
    if path.startswith(ANTHROPIC_PREFIX):
        content = anthropic_error(status, body.message)
    elif path.startswith(OLLAMA_PREFIX):
        content = OllamaError(_clip(body.message))
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def _domain(request: Request, exc: EdgeRunError) -> Response[_Envelope]:
    headers: dict[str, str] = {}
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="edge-run"'
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status >= 500:
        log.error("request failed: %s", exc.message)
    body = error_body(exc).error
    if request.scope["path"].startswith(OLLAMA_PREFIX):
        body.message = ollama_error(exc).error
    return _respond(request, body, exc.status, headers)


def _validation(request: Request, exc: ValidationException) -> Response[_Envelope]:
    """Malformed JSON or a schema violation: a schema violation passes msgspec's message on with the path it
    names; a body that does not decode at all is said in edge-run's own words (see :func:`undecodable`)."""
    details = [d for d in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(d, dict)]
    messages, param = [], None
    for d in details:
        key = str(d.get("key", "")).removeprefix("data").lstrip(".") or None
        param = param or key
        text = str(d.get("message"))
        messages.append(f"{text} - at `$.{key}`" if key else undecodable(text) or f"{text} - at `$`")
    message = "; ".join(messages) or undecodable(str(exc.detail)) or "The request body is not valid JSON."
    if request.headers.get("content-length") == "0":
        message, param = _EMPTY, None
    body = ErrorBody(message=message, type="invalid_request_error", param=param, code=None)
    return _respond(request, body, 400)


_NOT_JSON = "The request body is not valid JSON"
_EMPTY = "The request body is empty: send a JSON object."
_DECODE_FAILURES = (  # msgspec's decode errors (they differ between its versions), in edge-run's words
    (re.compile(r"utf-?8|unicode", re.IGNORECASE), f"{_NOT_JSON}: it is not UTF-8."),
    (re.compile(r"truncated", re.IGNORECASE), f"{_NOT_JSON}: it ends before the JSON does."),
    (re.compile(r"recursion|nest|depth", re.IGNORECASE), f"{_NOT_JSON}: it is nested too deeply."),
    (re.compile(r"malformed", re.IGNORECASE), _NOT_JSON),
)
_BYTE = re.compile(r"\(byte (\d+)\)")


def undecodable(message: str) -> str | None:
    """edge-run's message for a body that is not JSON at all, from msgspec's; None for a schema violation.

    A client matching on the message then reads the same words whichever msgspec version is installed.
    """
    for pattern, words in _DECODE_FAILURES:
        if pattern.search(message):
            at = _BYTE.search(message)
            return f"{words.rstrip('.')} (at byte {at.group(1)})." if at and words == _NOT_JSON else words
    return None


def _undecodable(
    request: Request, exc: RecursionError | UnicodeDecodeError
) -> Response[_Envelope]:
    """A body msgspec cannot decode at all, raised while decoding (older msgspec raises these as they are)."""
    why = "it is not UTF-8" if isinstance(exc, UnicodeDecodeError) else "it is nested too deeply"
    body = ErrorBody(message=f"{_NOT_JSON}: {why}.", type="invalid_request_error", param=None, code=None)
    return _respond(request, body, 400)


def _http(request: Request, exc: HTTPException) -> Response[_Envelope]:
    """Litestar's own refusals (no such route, a method not allowed, a body too large), in edge-run's words."""
    status = exc.status_code
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    message = _http_message(request, status, str(exc.detail))
    body = ErrorBody(message=message, type=kind, param=None, code=_CODES.get(status))
    return _respond(request, body, status, dict(exc.headers or {}))


def _http_message(request: Request, status: int, detail: str) -> str:
    route = f"{request.method} {request.scope['path']}"
    if status == 400:  # Litestar's: a body msgspec could not decode, or a bad Content-Length
        if detail.lower().startswith("invalid content-length"):
            return "The Content-Length header is not a valid length."
        if request.headers.get("content-length") == "0":
            return _EMPTY
        return undecodable(detail) or f"{_NOT_JSON}."
    if status == 404:
        return f"There is no route {route}."
    if status == 405:
        return f"The method is not allowed: {route}."
    if status == 413:
        return f"The request body is too large: at most {request.app.request_max_body_size} bytes are accepted."
    return f"{HTTPStatus(status).phrase}." if status in HTTPStatus._value2member_map_ else f"HTTP error {status}."


def _unexpected(request: Request, exc: Exception) -> Response[_Envelope]:
    log.exception("unhandled error", exc_info=exc)
    body = ErrorBody(
        message="The server had an error processing the request.",
        type="server_error",
        param=None,
        code="internal_error",
    )
    return _respond(request, body, 500)


EXCEPTION_HANDLERS = {
    EdgeRunError: _domain,
    ValidationException: _validation,
    RecursionError: _undecodable,
    UnicodeDecodeError: _undecodable,
    HTTPException: _http,
    Exception: _unexpected,
}
