"""The web page: a chat UI at ``/``, its static assets, and the one-time login exchange.

The page and its assets need no key; it calls ``/v1`` with a key like any other client. The CLI
mints a one-time login code at startup and prints or opens ``http://host:port/#login=<code>``.
A fragment never reaches the server in a request line, so the code stays out of access logs; the
page posts it to ``POST /auth/exchange`` once, which answers with a fresh API key named
``web-<date>`` (listed and revocable with ``edge-run keys``). A used or unknown code gets ``401``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from litestar import Response, get, head, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.static_files import create_static_files_router

from edge_run.errors import AuthenticationError
from edge_run.keys import KeyStore

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

__all__ = ["LoginCodes", "web_routes"]

STATIC_DIR = Path(__file__).parent / "static"

# The page is plain files; nothing inline, so the policy can forbid every other origin and inline script.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class LoginCodes:
    """One-time login codes. Only their hashes are kept; each one redeems exactly once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._digests: list[bytes] = []

    def add(self, code: str) -> None:
        with self._lock:
            self._digests.append(_digest(code))

    def redeem(self, code: str) -> bool:
        """Whether ``code`` is valid; a valid code is used up by this call."""
        candidate = _digest(code)
        with self._lock:
            for i, digest in enumerate(self._digests):
                if hmac.compare_digest(candidate, digest):
                    del self._digests[i]
                    return True
        return False


def _digest(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).digest()


class ExchangeRequest(msgspec.Struct):
    """``POST /auth/exchange`` body."""

    code: str


class ExchangeResult(msgspec.Struct):
    """The page's key; ``api_key`` is null when the server runs without auth."""

    api_key: str | None
    key_name: str | None


def _web_key_name(keys: KeyStore) -> str:
    base = f"web-{dt.date.today().isoformat()}"
    taken = {r.name for r in keys.list()}
    n = 1
    name = base
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


@get("/", include_in_schema=False)
async def index() -> Response[bytes]:
    return Response(
        (STATIC_DIR / "index.html").read_bytes(), media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
    )


@head("/", include_in_schema=False)
async def probe() -> None:
    """``HEAD /``: Ollama's clients probe the server with it before they call ``/api/*``."""


@post("/auth/exchange", status_code=200, include_in_schema=False)
async def exchange(
    data: JSONBody[ExchangeRequest], login_codes: NamedDependency[LoginCodes], keys: NamedDependency[KeyStore | None]
) -> ExchangeResult:
    """Trade a one-time login code for an API key the page keeps in the browser."""
    if not login_codes.redeem(data.code):
        raise AuthenticationError(
            "This login link is invalid or was already used. Paste an API key instead "
            "(`edge-run keys create`), or restart edge-run for a new link."
        )
    if keys is None:
        return ExchangeResult(api_key=None, key_name=None)
    store = keys

    def create() -> tuple[str, str]:
        key, record = store.create(_web_key_name(store), role="admin")  # the person at this machine
        return key, record.name

    key, name = await asyncio.to_thread(create)
    return ExchangeResult(api_key=key, key_name=name)


async def _page_headers(response: Response) -> Response:
    """Every asset carries the page's headers: a script or stylesheet must not be framed or sniffed either."""
    for name, value in _PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def web_routes() -> list[ControllerRouterHandler]:
    """The page at ``/``, its assets under ``/static`` (no key needed) and the login exchange."""
    assets = create_static_files_router(
        path="/static",
        directories=[STATIC_DIR],
        cache_control=CacheControlHeader(no_cache=True),
        include_in_schema=False,
        after_request=_page_headers,  # type: ignore[arg-type]
    )
    return [index, probe, exchange, assets]
