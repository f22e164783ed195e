"""The ``edge-run`` command line. Thin: parse, call, print."""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

import click

from edge_run import __version__
from edge_run.config import ConfigError, Settings, load_settings
from edge_run.errors import EngineFailure, ModelNotFound
from edge_run.paths import Paths

__all__ = ["main"]


def _paths() -> Paths:
    return Paths.resolve()


def _settings(paths: Paths, **flags: Any) -> Settings:
    try:
        return load_settings(paths, overrides=flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _browse_host(host: str) -> str:
    """The address a local browser should use for a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _edge_run_health(host: str, port: int) -> dict[str, Any] | None:
    """The ``/health`` of the edge-run serving on ``host:port``; None if nothing, or something else, answers."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{_browse_host(host)}:{port}/health", timeout=3) as r:
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


def _already_serving(host: str, port: int) -> bool:
    """True if another edge-run answers on the port; a usage error if some other program holds it."""
    import socket

    try:
        socket.create_connection((_browse_host(host).strip("[]"), port), timeout=1).close()
    except OSError:
        return False
    if _edge_run_health(host, port) is not None:
        return True
    raise click.UsageError(f"port {port} is in use by another program; pick another with --port.")


def _open_browser(url: str) -> None:
    """Open ``url`` in the default browser, or hand it to ``$EDGE_RUN_BROWSER`` (tests, kiosks)."""
    import subprocess
    import webbrowser

    if getattr(sys, "frozen", False) and "LD_LIBRARY_PATH" in os.environ:
        # The one-file bootloader points LD_LIBRARY_PATH at its bundle; a system browser must not
        # inherit it. Our own process read it at start-up already, so restoring it here is safe.
        original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
        os.environ.pop("LD_LIBRARY_PATH")
        if original:
            os.environ["LD_LIBRARY_PATH"] = original
    opener = os.environ.get("EDGE_RUN_BROWSER")
    try:
        if opener:
            subprocess.Popen([opener, url], stdin=subprocess.DEVNULL)
        elif not webbrowser.open(url):
            raise OSError("no browser found")
    except OSError as exc:
        click.echo(f"  could not open a browser ({exc}); open {url.split('#')[0]} yourself.", err=True)


def _open_when_listening(host: str, port: int, url: str) -> None:
    """Open the browser from a side thread once the server accepts connections."""
    import socket
    import threading
    import time

    def wait_then_open() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection((_browse_host(host).strip("[]"), port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            _open_browser(url)
            return

    threading.Thread(target=wait_then_open, name="open-browser", daemon=True).start()


def _hangup_stops_the_server() -> None:
    """Closing the terminal window (SIGHUP) shuts down as cleanly as Ctrl-C."""
    import signal

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: signal.raise_signal(signal.SIGTERM))


class _GpuLayers(click.ParamType):
    """``auto`` or a number of layers (0: CPU only)."""

    name = "auto|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | int:
        if isinstance(value, int) or str(value).strip().lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            layers = int(value)
        except ValueError:
            layers = -1
        if layers < 0:
            self.fail(f"{value!r} is neither `auto` nor a number of layers (0 or more)", param, ctx)
        return layers


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-run")
@click.option("--no-browser", is_flag=True, help="With no command: do not open the web page.")
@click.pass_context
def main(ctx: click.Context, no_browser: bool) -> None:
    """edge-run: an authenticated, OpenAI-compatible chat endpoint on your own machine.

    With no command (a double-click), runs `serve` with the defaults and opens the web page,
    logged in through a one-time link.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve, browser=not no_browser)


@main.command()
@click.option(
    "--model",
    "-m",
    "preload",
    multiple=True,
    help="Load this model at start (repeatable): an id, a catalog id or a path to a .gguf file. "
    "Every model you have is served either way; the others load on their first request.",
)
@click.option("--host", help="Address to bind.  [default: 127.0.0.1]")
@click.option("--port", "-p", type=int, help="Port to listen on.  [default: 8080]")
@click.option("--ctx", type=int, help="Context length per slot, in tokens.  [default: 4096]")
@click.option("--threads", "-t", type=int, help="CPU threads.  [default: physical cores]")
@click.option(
    "--gpu-layers",
    type=_GpuLayers(),
    help="Layers to offload to the GPU; auto fits what the free GPU memory holds.  [default: auto]",
)
@click.option("--slots", type=int, help="Requests decoded in parallel.  [default: 4]")
@click.option("--max-queue", type=int, help="Requests allowed to wait for a slot before 429.  [default: 64]")
@click.option(
    "--keep-alive",
    type=int,
    help="Seconds an idle model stays loaded; 0 unloads after each answer, -1 never.  [default: 300]",
)
@click.option(
    "--max-loaded", type=int, help="Models loaded at once; the least recently used idle one makes room.  [default: 2]"
)
@click.option(
    "--memory-budget",
    type=float,
    help="GiB all loaded models may take (file + KV cache).  [default: 75% of RAM, or of free GPU memory]",
)
@click.option("--no-auth", is_flag=True, default=None, help="Serve without API keys (loopback hosts only).")
@click.option(
    "--deterministic",
    is_flag=True,
    default=None,
    help="Greedy and seeded answers never depend on other requests running alongside (costs throughput).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A name the Host header may carry besides addresses and localhost (repeatable; * allows any).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="A web origin whose pages may call the API from a browser, e.g. https://app.example (repeatable).",
)
@click.option("--metrics-public", is_flag=True, default=None, help="Serve /metrics without a key.")
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    help="The access log's lines (logs folder, access.log).  [default: json]",
)
@click.option(
    "--drain-timeout",
    type=int,
    help="Seconds running answers may finish after SIGTERM; new requests get 503.  [default: 30]",
)
@click.option(
    "--browser/--no-browser",
    default=False,
    help="Open the web page, logged in through a one-time link.  [default: only with no command]",
)
def serve(
    preload: tuple[str, ...],
    host: str | None,
    port: int | None,
    ctx: int | None,
    threads: int | None,
    gpu_layers: str | int | None,
    slots: int | None,
    max_queue: int | None,
    keep_alive: int | None,
    max_loaded: int | None,
    memory_budget: float | None,
    no_auth: bool | None,
    deterministic: bool | None,
    allowed_hosts: tuple[str, ...],
    cors_origins: tuple[str, ...],
    metrics_public: bool | None,
    log_format: str | None,
    drain_timeout: int | None,
    browser: bool,
) -> None:
    """Serve the OpenAI chat API and the web page (settings: flags > EDGE_RUN_* env > config.toml)."""
    import secrets

    from edge_run.keys import KeyStore
    from edge_run.models.fetch import FetchError
    from edge_run.server import build_server, describe_placement, run

    paths = _paths()
    settings = _settings(
        paths,
        preload=list(preload) or None,
        host=host,
        port=port,
        ctx=ctx,
        threads=threads,
        gpu_layers=gpu_layers,
        slots=slots,
        max_queue=max_queue,
        keep_alive=keep_alive,
        max_loaded=max_loaded,
        memory_budget=memory_budget,
        auth=False if no_auth else None,
        deterministic=deterministic,
        allowed_hosts=list(allowed_hosts) or None,
        cors_origins=list(cors_origins) or None,
        metrics_public=metrics_public,
        log_format=log_format,
        drain_timeout=drain_timeout,
    )
    if not settings.auth and "*" in settings.cors_origins:
        raise click.UsageError("refusing --cors-origin * without API keys: any web page could use this server.")
    if not settings.auth and not _is_loopback(settings.host):
        raise click.UsageError(
            f"refusing to serve {settings.host} without API keys: anyone on the network could use it. "
            "Drop --no-auth or bind to 127.0.0.1."
        )
    page = f"http://{_browse_host(settings.host)}:{settings.port}/"
    if _already_serving(settings.host, settings.port):
        click.echo(f"edge-run is already running at {page}", err=True)
        if browser:
            _open_browser(page)
        return
    keys = None
    if settings.auth:
        keys = KeyStore(paths.keys_db, env_key=os.environ.get("EDGE_RUN_API_KEY") or None, legacy=paths.keys_file)
        if keys.is_empty():
            key, _ = keys.create("default", role="admin")
            click.secho("Created your first API key (shown once, keep it safe):", fg="yellow", err=True)
            click.secho(f"  {key}", bold=True, err=True)
            click.echo("  More with `edge-run keys create`; list with `edge-run keys list`.", err=True)

    login_code = secrets.token_urlsafe(24)
    try:
        server = build_server(settings, paths, keys, login_code=login_code)
        preloaded = [e.spec for e in server.registry if e.spec.id in server.preload and e.spec.local]
        placements = {spec.id: describe_placement(spec, server.options) for spec in preloaded}
    except (ModelNotFound, EngineFailure) as exc:
        raise click.ClickException(exc.message) from exc
    except (FetchError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    login = f"{page}#login={login_code}"
    click.echo(f"edge-run {__version__}, {server.options.threads} threads", err=True)
    click.echo(f"  web page:        {page}", err=True)
    click.echo(f"  one-time login:  {login}", err=True)
    click.echo(f"  OpenAI base_url: {page}v1", err=True)
    for entry in server.registry:
        if not entry.spec.local:
            click.echo(f"  model:           {entry.spec.id}, upstream", err=True)
            continue
        where = f"loads now on {placements[entry.spec.id]}" if entry.spec.id in placements else "loads on first use"
        click.echo(f"  model:           {entry.spec.id} ({entry.spec.path.name}), {where}", err=True)
    keep = "never" if settings.keep_alive < 0 else f"after {settings.keep_alive} s idle"
    click.echo(f"  unloading:       {keep}, at most {settings.max_loaded} loaded at once", err=True)
    if keys:
        click.echo("  auth: Bearer API key required (`edge-run keys create` makes one)", err=True)
    else:
        click.echo("  auth: OFF (loopback only)", err=True)
    click.echo("  Stop with Ctrl-C.", err=True)
    if browser:
        _open_when_listening(settings.host, settings.port, login)
    _hangup_stops_the_server()
    run(server, settings)


def _register_subcommands() -> None:
    from edge_run.cli_keys import keys
    from edge_run.cli_models import models, ps

    main.add_command(keys)
    main.add_command(models)
    main.add_command(ps)


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
