"""A model's lifecycle by hand, for the web page's library: ``POST /v1/models/{id}/load`` and ``.../unload``, and
``DELETE /v1/models/{id}``, which forgets a model as ``edge-run models rm`` and Ollama's ``/api/delete`` do.

A load takes the model as a request would (under the key's limits; it then stays loaded for the server's
keep-alive); an unload unloads an idle model at once (409 while it answers requests). Model ids may contain
``/``, so the action is the path's last segment.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from edge_run.api.deps import ModelAccess
from edge_run.api.http.accounting import key_of
from edge_run.api.library.pulls import store_of
from edge_run.api.library.schemas import ModelDeleted
from edge_run.api.openai.routes import model_card
from edge_run.api.openai.schemas import ModelCard
from edge_run.errors import InvalidRequest, ModelNotFound
from edge_run.models.changes import ModelChanges
from edge_run.models.registry import ModelEntry, ModelRegistry

__all__ = ["delete_model", "load_or_unload"]

_ACTIONS = ("load", "unload")


def _local(request: Request, registry: ModelRegistry, model_id: str) -> ModelEntry:
    """A local model this key may use; otherwise the same 404 as for one that does not exist."""
    key = key_of(request)
    if key is not None and not key.allows(model_id):
        raise ModelNotFound(model_id)
    entry = registry.entry(model_id)
    if not entry.spec.local:
        raise InvalidRequest(f"`{model_id}` is an upstream model: it is not loaded, unloaded or deleted here")
    return entry


async def _idle(engine: Any) -> None:
    return None


@post(
    "/models/{path:path}",
    status_code=200,
    summary="`POST /v1/models/{id}/load` loads a model; `.../unload` unloads it if idle (409 if busy)",
)
async def load_or_unload(path: FromPath[str], request: Request, access: NamedDependency[ModelAccess]) -> ModelCard:
    model_id, _, action = path.strip("/").rpartition("/")
    if action not in _ACTIONS or not model_id:
        raise InvalidRequest(f"expected /v1/models/MODEL/load or /v1/models/MODEL/unload, not /v1/models/{path}")
    entry = _local(request, access.registry, model_id)
    if action == "load":
        await access.run(model_id, None, _idle, needs=entry.spec.capabilities[0], relay=False)
    else:
        await access.registry.unload(model_id)
    return model_card(access.registry, entry)


@delete(
    "/models/{model_id:path}", status_code=200, summary="Forget a model, deleting its files if edge-run downloaded them"
)
async def delete_model(
    model_id: FromPath[str],
    request: Request,
    registry: NamedDependency[ModelRegistry],
    changes: NamedDependency[ModelChanges | None],
) -> ModelDeleted:
    entry = _local(request, registry, model_id.lstrip("/"))
    await store_of(changes).forget(entry.spec)
    return ModelDeleted(id=entry.spec.id)
