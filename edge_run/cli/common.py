"""What every ``edge-run`` command shares: settings, and the edge-run (if any) serving on a port."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from edge_run.config import ConfigError, load_settings
from edge_run.paths import Paths

if TYPE_CHECKING:
    from edge_run.config import Settings

__all__ = ["browse_host", "context", "edge_run_health", "listening"]


def context(**flags: Any) -> tuple[Paths, Settings]:
    """The paths, and the settings with ``flags`` on top; a bad setting is a usage error."""
    paths = Paths.resolve()
    try:
        return paths, load_settings(paths, overrides=flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def browse_host(host: str) -> str:
    """The address a local browser should use for a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def listening(host: str, port: int) -> bool:
    """True if something accepts connections on the port of a server bound to ``host``."""
    import socket

    try:
        socket.create_connection((browse_host(host).strip("[]"), port), timeout=1).close()
    except OSError:
        return False
    return True


def edge_run_health(host: str, port: int) -> dict[str, Any] | None:
    """The ``/health`` of the edge-run serving on ``host:port``; None if nothing, or something else, answers."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{browse_host(host)}:{port}/health", timeout=3) as r:
            body = r.read()
    except urllib.error.HTTPError as exc:  # 503 while it loads the models named at start-up
        body = exc.read()
    except (OSError, ValueError):
        return None
    try:
        health = json.loads(body)
    except ValueError:
        return None
    if isinstance(health, dict) and isinstance(health.get("models"), list) and "status" in health:
        return health
    return None
