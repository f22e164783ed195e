"""``edge-run serve``: check the settings, build the server, print where it answers, and run it."""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from edge_run import __version__
from edge_run.cli.common import browse_host, context, edge_run_health, listening
from edge_run.errors import EngineFailure, ModelNotFound

if TYPE_CHECKING:
    from edge_run.config import Settings
    from edge_run.keys import KeyStore
    from edge_run.paths import Paths
    from edge_run.server import Server

__all__ = ["serve"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _already_serving(host: str, port: int) -> bool:
    """True if another edge-run answers on the port; a usage error if some other program holds it."""
    if not listening(host, port):
        return False
    if edge_run_health(host, port) is not None:
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
    import threading
    import time

    def wait_then_open() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if listening(host, port):
                _open_browser(url)
                return
            time.sleep(0.05)

    threading.Thread(target=wait_then_open, name="open-browser", daemon=True).start()


def _hangup_stops_the_server() -> None:
    """Closing the terminal window (SIGHUP) shuts down as cleanly as Ctrl-C."""
    import signal

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: signal.raise_signal(signal.SIGTERM))


def _refuse_unsafe(settings: Settings) -> None:
    """A usage error for settings that would let others use the server without a key."""
    if (not settings.auth or settings.ollama_no_key) and "*" in settings.cors_origins:
        raise click.UsageError("refusing --cors-origin * without API keys: any web page could use this server.")
    if settings.ollama_no_key and not _is_loopback(settings.host):
        raise click.UsageError(
            f"refusing to serve Ollama's /api/* on {settings.host} without API keys: anyone on the network could "
            "use it. Drop --ollama-no-key or bind to 127.0.0.1."
        )
    if not settings.auth and not _is_loopback(settings.host):
        raise click.UsageError(
            f"refusing to serve {settings.host} without API keys: anyone on the network could use it. "
            "Drop --no-auth or bind to 127.0.0.1."
        )


def _key_store(paths: Paths) -> KeyStore:
    """The API keys; the first start creates an admin key and prints it once."""
    from edge_run.keys import KeyStore

    keys = KeyStore(paths.keys_db, env_key=os.environ.get("EDGE_RUN_API_KEY") or None, legacy=paths.keys_file)
    if keys.is_empty():
        key, _ = keys.create("default", role="admin")
        click.secho("Created your first API key (shown once, keep it safe):", fg="yellow", err=True)
        click.secho(f"  {key}", bold=True, err=True)
        click.echo("  More with `edge-run keys create`; list with `edge-run keys list`.", err=True)
    return keys


def _build(settings: Settings, paths: Paths, keys: KeyStore | None, login_code: str) -> tuple[Server, dict[str, str]]:
    """The server, and where each model loaded at start goes; a model or file problem is a click error."""
    from edge_run.models.fetch import FetchError
    from edge_run.server import build_server, describe_placement

    try:
        server = build_server(settings, paths, keys, login_code=login_code)
        preloaded = [e.spec for e in server.registry if e.spec.id in server.preload and e.spec.local]
        placements = {spec.id: describe_placement(spec, server.options) for spec in preloaded}
    except (ModelNotFound, EngineFailure) as exc:
        raise click.ClickException(exc.message) from exc
    except (FetchError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    return server, placements


def _banner(server: Server, settings: Settings, page: str, login: str, placements: dict[str, str], auth: bool) -> None:
    """Where the server answers, its models, and how it unloads and authenticates (on stderr)."""
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
    if auth:
        click.echo("  auth: Bearer API key required (`edge-run keys create` makes one)", err=True)
    else:
        click.echo("  auth: OFF (loopback only)", err=True)
    click.echo("  Stop with Ctrl-C.", err=True)


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


@click.command()
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
    help="No effect: answers never depend on other requests running alongside now (kept for old scripts).",
)
@click.option(
    "--draft-max",
    type=click.IntRange(min=0),
    help="Tokens drafted per step at most, looked up in the text so far (0: none; on the CPU 62 at most, and 6 for a "
    "K-quant model where ggml-cpu's reference kernels are out of reach).  [default: 8]",
)
@click.option(
    "--reasoning-format",
    type=click.Choice(["auto", "none"]),
    help="auto: a thinking model's thought goes to `reasoning_content` (and the other routes' thinking fields); "
    "none: it stays in the content, for clients that parse it themselves.  [default: auto]",
)
@click.option(
    "--reasoning-budget",
    type=click.IntRange(min=-1),
    help="Tokens a thinking model's thought may take before it is closed and the answer begins "
    "(-1: no limit; a request's `reasoning_budget` or Anthropic's `budget_tokens` overrides it).  [default: -1]",
)
@click.option(
    "--allow-image-urls",
    is_flag=True,
    default=None,
    help="Fetch images that requests name by http(s) URL (20 MB at most, 10 s). Off: only inline data: URLs; "
    "a server that fetches what requests name can be made to reach hosts only it can see.",
)
@click.option(
    "--mmproj-offload/--no-mmproj-offload",
    default=None,
    help="Put a model's multimodal projector on the GPU when the model is offloaded whole.  [default: on]",
)
@click.option(
    "--pooling",
    type=click.Choice(["mean", "cls", "last", "rank"]),
    help="How models embed: mean, cls (BERT's first token), last (decoder embedders), rank (rerankers: "
    "/v1/rerank).  [default: each model's own, from its GGUF; a chat model's: mean]",
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
    "--ollama-no-key",
    is_flag=True,
    default=None,
    help="Serve Ollama's API (/api/*) without a key, for clients that cannot send one (loopback hosts only; "
    "a key sent is still checked).",
)
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
    no_auth: bool | None,
    allowed_hosts: tuple[str, ...],
    cors_origins: tuple[str, ...],
    browser: bool,
    **flags: Any,  # the other options, each named as the setting it overrides (None: not given)
) -> None:
    """Serve the OpenAI chat API and the web page (settings: flags > EDGE_RUN_* env > config.toml)."""
    import secrets

    from edge_run.server import run

    paths, settings = context(
        preload=list(preload) or None,
        auth=False if no_auth else None,
        allowed_hosts=list(allowed_hosts) or None,
        cors_origins=list(cors_origins) or None,
        **flags,
    )
    _refuse_unsafe(settings)
    page = f"http://{browse_host(settings.host)}:{settings.port}/"
    if _already_serving(settings.host, settings.port):
        click.echo(f"edge-run is already running at {page}", err=True)
        if browser:
            _open_browser(page)
        return
    keys = _key_store(paths) if settings.auth else None
    login_code = secrets.token_urlsafe(24)
    server, placements = _build(settings, paths, keys, login_code)
    login = f"{page}#login={login_code}"
    _banner(server, settings, page, login, placements, auth=keys is not None)
    if browser:
        _open_when_listening(settings.host, settings.port, login)
    _hangup_stops_the_server()
    run(server, settings)
