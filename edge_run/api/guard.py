"""The auth guard: every route but ``/health`` needs ``Authorization: Bearer <key>``.

``OPTIONS`` requests pass: a browser's CORS preflight never carries the key. They answer with the
allowed methods only, and with CORS headers for the ``--cors-origin`` origins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_run.errors import AuthenticationError

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

    from edge_run.keys import KeyStore

__all__ = ["require_key"]


async def require_key(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Raise unless the request carries a valid key (or auth is off for this loopback server)."""
    keys: KeyStore | None = connection.app.state.key_store
    if keys is None or connection.scope.get("method") == "OPTIONS":  # a CORS preflight carries no key
        return
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "Missing API key. Send it as `Authorization: Bearer <key>` (create one with `edge-run keys create`)."
        )
    if not keys.verify(token.strip()):
        raise AuthenticationError("Incorrect API key provided.")
