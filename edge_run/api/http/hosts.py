"""The ``Host`` check: a defence against DNS rebinding.

A web page on ``evil.example`` can point its own name at 127.0.0.1 and then send requests that the
browser treats as same-origin, to a server that listens on loopback; the only trace is the ``Host``
header, which names the attacker's domain. So every request must name this machine: an IP address
(an attacker controls names, not addresses), ``localhost`` or a name under ``.localhost``, the name
the server is bound to, or a name allowed with ``--allowed-host``. Anything else gets a 403.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from edge_run.api.http.errors import refusal
from edge_run.errors import HostNotAllowed

__all__ = ["host_allowed", "host_check"]

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def _name(host: str) -> str:
    """``host[:port]`` or ``[v6]:port`` without the port, lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    name = _name(host)
    if "*" in allowed or name in allowed or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_check(allowed_names: Iterable[str]) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware that answers 403 to an HTTP request whose ``Host`` names another machine."""
    allowed = frozenset(_name(h) for h in allowed_names if h)

    def middleware(app: ASGIApp) -> ASGIApp:
        async def checked(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
                if host is not None and not host_allowed(host, allowed):
                    await _forbid(send, _name(host))
                    return
            await app(scope, receive, send)

        return checked

    return middleware


async def _forbid(send: Any, name: str) -> None:
    message = (
        f"The Host header `{name[:200]}` does not name this machine, so the request was refused "
        "(a defence against DNS rebinding). To allow that name, start the server with "
        f"`--allowed-host {name[:200]}`."
    )
    body, headers = refusal(HostNotAllowed(message))
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})
