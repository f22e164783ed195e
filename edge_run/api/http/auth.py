"""The auth guard: every route but ``/health`` needs ``Authorization: Bearer <key>`` (or ``x-api-key: <key>``,
as Anthropic's SDK sends it) and a key that has not expired. The key's limits are checked later, once the
body is valid (:mod:`edge_run.api.deps`): a malformed request does not use up a place.

``OPTIONS`` requests pass: a browser's CORS preflight never carries the key. They answer with the
allowed methods only, and with CORS headers for the ``--cors-origin`` origins.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from edge_run.api.http.accounting import meter_of
from edge_run.errors import AuthenticationError, UnsupportedMediaType

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    from edge_run.keys import KeyStore

__all__ = ["require_json", "require_key"]

_Guard = Callable[["ASGIConnection", "BaseRouteHandler"], Awaitable[None]]


def require_key(keys: KeyStore | None, *, optional: bool = False) -> _Guard:
    """The guard that checks keys against ``keys``; ``None`` turns auth off (the CLI allows that on loopback).
    ``optional``: a request without a key passes (``--ollama-no-key``), one with a key has it checked."""

    async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        if keys is None or connection.scope.get("method") == "OPTIONS":  # a CORS preflight carries no key
            return
        sent = connection.headers.get("authorization") or connection.headers.get("x-api-key")
        if sent or not optional:
            _check_key(connection, keys)

    return guard


def _check_key(connection: ASGIConnection, keys: KeyStore) -> None:
    """Raise unless the request carries a valid key; put it on the request's meter."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if not token.strip() and connection.headers.get("x-api-key"):
        scheme, token = "bearer", connection.headers["x-api-key"]
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "Missing API key. Send it as `Authorization: Bearer <key>` (create one with `edge-run keys create`)."
        )
    record = keys.verify(token.strip())
    if record is None:
        raise AuthenticationError("Incorrect API key provided.")
    if record.expired():
        day = time.strftime("%Y-%m-%d", time.localtime(record.expires))
        raise AuthenticationError(f"The API key `{record.name}` expired on {day}.")
    meter = meter_of(connection)
    if meter is None:
        raise RuntimeError("the accounting middleware is missing")
    meter.key = record


async def require_json(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """A ``POST`` body must be JSON. A form or ``text/plain`` post is refused: besides being a client's
    mistake, it is what a hostile web page can send without a CORS preflight."""
    if connection.scope.get("method") != "POST":
        return
    kind = connection.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type `{kind[:100]}` is not accepted: send the body as JSON with `Content-Type: application/json`."
        )
