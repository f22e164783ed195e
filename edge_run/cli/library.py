"""``edge-run models search`` and ``models check-library``: the catalog's library, what fits here, and what moved."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from edge_run.cli.common import context
from edge_run.models.catalog import CAPABILITIES

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_run.gguf import GgufLayout
    from edge_run.models.catalog import CatalogEntry
    from edge_run.models.library import LibraryRow
    from edge_run.paths import Paths

__all__ = ["check_library", "search"]

GIB = 1 << 30


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB // 10 else f"{n / (1 << 20):.0f} MiB"


def _params(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n else "-"


def _header_reader(paths: Paths, offline: bool) -> Callable[[CatalogEntry], GgufLayout | None]:
    """Reads a header from the downloaded file, else from the Hub, until the Hub is found unreachable."""
    from edge_run.errors import EngineFailure
    from edge_run.gguf import read_layout
    from edge_run.models.fetch import cached_path
    from edge_run.models.hub import HubError, HubUnreachable, read_remote_header

    unreachable: list[str] = []

    def read(entry: CatalogEntry) -> GgufLayout | None:
        path = cached_path(entry, paths.models_dir)
        if path is not None:
            try:
                return read_layout(path)
            except EngineFailure:
                return None
        if offline or unreachable or entry.source is None:
            return None
        try:
            return read_remote_header(entry.source.repo, entry.source.file)
        except HubUnreachable as exc:
            unreachable.append(str(exc))
            click.echo(f"the Hub is out of reach ({exc}): context estimates only from the cache", err=True)
        except HubError as exc:
            click.echo(f"{entry.id}: {exc}", err=True)
        return None

    return read


def _verdict(row: LibraryRow) -> str:
    if row.verdict != "too big" or row.max_ctx is None:
        return row.verdict
    return f"too big (ctx {row.max_ctx} fits)" if row.max_ctx else "too big (not even its weights fit)"


@click.command("search")
@click.argument("text", default="")
@click.option("--capability", "-c", type=click.Choice(CAPABILITIES), help="Only models that can do this.")
@click.option("--offline", is_flag=True, help="Ask the Hub nothing: context estimates from the cache only.")
@click.option("--ram", type=float, help="GiB of RAM to judge by.  [default: this machine's]")
@click.option("--gpu", type=float, help="GiB of free GPU memory to judge by.  [default: this machine's]")
def search(text: str, capability: str | None, offline: bool, ram: float | None, gpu: float | None) -> None:
    """The library's models matching TEXT (id, name, Ollama name, description), and whether each fits here.

    Memory is the file plus the KV cache of ctx x slots (the configured ones), from the model's GGUF header:
    read once over a Range request (HF_ENDPOINT honoured) and cached. Pull one with `edge-run models pull ID`.
    """
    from rich.console import Console
    from rich.table import Table

    from edge_run.models.catalog import load_catalog
    from edge_run.models.library import HeaderCache, Sizing, library_rows, matches
    from edge_run.server import machine

    paths, settings = context()
    here = machine(
        settings,
        ram=None if ram is None else int(ram * GIB),
        gpu_free=None if gpu is None else int(gpu * GIB),
    )
    catalog = load_catalog()
    wanted = [e for e in catalog.model if matches(e, text, capability or "")]
    if not wanted:
        raise click.ClickException(f"no library model matches {text!r}" + (f" with {capability}" if capability else ""))
    sizing = Sizing(ctx=settings.ctx, slots=settings.slots, batch=settings.batch)
    cache = HeaderCache(paths.library_cache)
    rows = library_rows(catalog, cache, here, sizing, entries=wanted, read_header=_header_reader(paths, offline))
    table = Table(title=f"Library: memory at ctx {sizing.ctx} x {sizing.slots} slots", title_justify="left")
    for column in ("ID", "CAPABILITIES", "PARAMS", "FILE", "MEMORY", "HERE"):
        table.add_column(column, justify="right" if column in ("PARAMS", "FILE", "MEMORY") else "left")
    for row in rows:
        names = f"\n[dim]{', '.join(row.ollama)}[/dim]" if row.ollama else ""
        memory = _gib(row.memory) if row.kv_known else f"≥ {_gib(row.memory)}"
        size = ("~" if row.size_approx else "") + _gib(row.size)
        table.add_row(row.id + names, ", ".join(row.capabilities), _params(row.params), size, memory, _verdict(row))
    Console().print(table)
    if not all(row.kv_known for row in rows):
        click.echo("≥: context estimate unknown (header not cached; run again with the Hub in reach)")


@click.command("check-library")
def check_library() -> None:
    """Ask the Hub (HF_ENDPOINT honoured) for every library file and projector; exit 1 if any is missing or
    its size is not the catalog's. Run it before a release."""
    from edge_run.models.catalog import load_catalog
    from edge_run.models.hub import HubError, check_entry, hub_endpoint

    entries = [e for e in load_catalog().model if e.source is not None]
    try:
        moved = [m for entry in entries for m in check_entry(entry)]
    except HubError as exc:
        raise click.ClickException(str(exc)) from exc
    for m in moved:
        click.echo(f"{m.entry}: {m.file}: {m.problem}")
    if moved:
        raise click.ClickException(f"{len(moved)} library file(s) moved on {hub_endpoint()}: update catalog.toml")
    click.echo(f"all {len(entries)} library models are on {hub_endpoint()} as the catalog says")
