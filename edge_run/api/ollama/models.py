"""Ollama's model routes: ``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/pull``, ``/api/delete``,
``/api/copy`` and ``/api/version``.

Pulls resolve names as ``edge-run models pull`` does (``hf:OWNER/REPO[:QUANT]``, catalog ids) and download in a
thread, reporting progress as NDJSON lines; a name that does not resolve fails before any line, as a 4xx. A
model pulled or copied is offered at once (:meth:`ModelRegistry.add`); one deleted is no longer offered.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from edge_run import __version__
from edge_run.api.http.accounting import key_of
from edge_run.api.http.sse import SSE_HEADERS, EventStream, unless_disconnected
from edge_run.api.ollama.describe import (
    capabilities,
    details,
    layout_of,
    model_info,
    modified_at,
    rfc3339,
    template_of,
)
from edge_run.api.ollama.pulling import pull_lines
from edge_run.api.ollama.schemas import (
    CopyRequest,
    ModelName,
    Progress,
    PullRequest,
    RunningModel,
    RunningModels,
    ShowRequest,
    ShowResponse,
    TagModel,
    Tags,
    Version,
)
from edge_run.api.ollama.stream import NDJSON
from edge_run.errors import ClientDisconnected, InvalidRequest, ModelNotFound
from edge_run.models.changes import ModelChanges
from edge_run.models.manage import ModelFiles
from edge_run.models.registry import ModelRegistry

if TYPE_CHECKING:
    from edge_run.models.registry import ModelEntry, ModelSpec

__all__ = ["copy_model", "delete_model", "list_running", "list_tags", "pull_model", "show_model", "version"]

_FOREVER = "2318-01-01T00:00:00Z"  # a model kept loaded (Ollama writes a far date too)


def _visible(request: Request, registry: ModelRegistry) -> list[ModelEntry]:
    """The local models this key may use (upstreams speak OpenAI's API only)."""
    key = key_of(request)
    return [e for e in registry if e.spec.local and (key is None or key.allows(e.spec.id))]


def _local(request: Request, registry: ModelRegistry, model: str) -> ModelSpec:
    """A local model this key may use; otherwise the same 404 as for one that does not exist."""
    key = key_of(request)
    spec = registry.entry(model).spec
    if not spec.local or (key is not None and not key.allows(model)):
        raise ModelNotFound(model)
    return spec


_NO_STORE = "this server was started without a model store: pull, copy and delete are off"


def _files(files: ModelFiles | None) -> ModelFiles:
    if files is None:
        raise InvalidRequest(_NO_STORE)
    return files


def _changes(changes: ModelChanges | None) -> ModelChanges:
    if changes is None:
        raise InvalidRequest(_NO_STORE)
    return changes


def _digest(files: ModelFiles | None, spec: ModelSpec) -> str:
    return files.digest(spec) if files is not None else ""


@get("/tags", summary="The models this key may use (Ollama's API)")
async def list_tags(
    request: Request, registry: NamedDependency[ModelRegistry], files: NamedDependency[ModelFiles | None]
) -> Tags:
    def rows() -> list[TagModel]:
        return [
            TagModel(
                name=e.spec.id,
                model=e.spec.id,
                modified_at=modified_at(e.spec),
                size=e.spec.path.stat().st_size if e.spec.path.is_file() else 0,
                digest=_digest(files, e.spec),
                details=details(layout_of(e.spec)),
            )
            for e in _visible(request, registry)
        ]

    return Tags(models=await asyncio.to_thread(rows))  # headers and files are read: off the event loop


@post("/show", status_code=200, summary="Describe a model (Ollama's API): details, capabilities, template")
async def show_model(
    data: JSONBody[ShowRequest], request: Request, registry: NamedDependency[ModelRegistry]
) -> ShowResponse:
    spec = _local(request, registry, data.id)
    layout = await asyncio.to_thread(layout_of, spec)
    return ShowResponse(
        modified_at=modified_at(spec),
        details=details(layout),
        model_info=model_info(layout, spec),
        capabilities=capabilities(layout, spec),
        template=template_of(layout, spec),
        parameters=f"num_ctx {spec.ctx}" if spec.ctx else "",
    )


def _expires_at(registry: ModelRegistry, entry: ModelEntry) -> str:
    left = registry.expires_in(entry)
    if left is None:  # busy (it stays at least its keep-alive once done), or kept loaded
        left = entry.keep_alive if entry.keep_alive >= 0 else None
    return _FOREVER if left is None else rfc3339(time.time() + left)


@get("/ps", summary="The models loaded now (Ollama's API)")
async def list_running(
    request: Request, registry: NamedDependency[ModelRegistry], files: NamedDependency[ModelFiles | None]
) -> RunningModels:
    out = []
    for e in _visible(request, registry):
        if e.status != "loaded" or e.backend is None:
            continue
        figures = e.backend.status()
        size = registry.cost(e)
        offloaded = figures.get("gpu_layers_total", 0) > 0 and figures.get("gpu_layers") == figures["gpu_layers_total"]
        out.append(
            RunningModel(
                name=e.spec.id,
                model=e.spec.id,
                size=size,
                size_vram=size if offloaded else int(figures.get("vram_used_bytes") or 0),
                digest=_digest(files, e.spec),
                details=details(layout_of(e.spec)),
                expires_at=_expires_at(registry, e),
                context_length=int(figures.get("ctx_per_slot") or e.spec.ctx or 0),
            )
        )
    return RunningModels(models=out)


@post("/pull", status_code=200, summary="Download a model (Ollama's API): NDJSON progress, then `success`")
async def pull_model(
    data: JSONBody[PullRequest], request: Request, changes: NamedDependency[ModelChanges | None]
) -> Progress:
    store = _changes(changes)
    if not data.id:
        raise InvalidRequest("`model` is required", param="model")
    job = store.pull(data.id)  # or the pull of the same model under way, joined
    if not data.stream:
        assert job.task is not None
        try:
            await unless_disconnected(request, asyncio.shield(job.task))
        except ClientDisconnected:
            if job.followers == 0:  # a client that leaves cancels its pull, as Ollama's does
                store.cancel(job.target)
            raise
        return Progress(status="success")
    first, reports = await job.first()  # a name that does not resolve is an error before any line
    stream = pull_lines(job, first, reports, lambda: store.cancel(job.target))
    # a stream is a Response that Litestar sends as it is: the schema documents the one-object answer
    return EventStream(stream, media_type=NDJSON, headers=SSE_HEADERS)  # type: ignore[return-value]


@delete("/delete", status_code=200, summary="Forget a model, deleting its files if edge-run downloaded them")
async def delete_model(
    data: JSONBody[ModelName],
    request: Request,
    registry: NamedDependency[ModelRegistry],
    changes: NamedDependency[ModelChanges | None],
) -> None:
    spec = _local(request, registry, data.id)
    await _changes(changes).forget(spec)


@post("/copy", status_code=200, summary="Offer a model's file under a second name too")
async def copy_model(
    data: JSONBody[CopyRequest],
    request: Request,
    registry: NamedDependency[ModelRegistry],
    files: NamedDependency[ModelFiles | None],
) -> Response[Any]:
    spec = _local(request, registry, data.source)
    key = key_of(request)
    if key is not None and not key.allows(data.destination):
        raise InvalidRequest(f"this key may not use the name `{data.destination}`", param="destination")
    try:
        copied = await asyncio.to_thread(_files(files).copy, spec, data.destination)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="destination") from None
    registry.add(copied)
    return Response(b"", status_code=200)


@get("/version", summary="edge-run's version (Ollama's API)")
async def version() -> Version:
    return Version(version=__version__)
