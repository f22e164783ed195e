"""Route handlers: thin, they hand off to :mod:`edge_run.api.chat` and the registry."""

from __future__ import annotations

import time
from typing import Any

from litestar import Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.response import Stream
from litestar.response.base import ASGIResponse

from edge_run.api import chat
from edge_run.api.schemas import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList
from edge_run.engine.registry import Registry

__all__ = ["chat_completions", "get_model", "health", "list_models"]

_STARTED = int(time.time())


class EventStream(Stream):
    """A ``Stream`` whose own media type wins: Litestar's ``Stream`` lets the handler's (JSON) override it."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


@post("/chat/completions", status_code=200, summary="Create a chat completion (OpenAI-compatible)")
async def chat_completions(data: JSONBody[ChatCompletionRequest], state: State) -> ChatCompletion | EventStream:
    engine = state.registry.get(data.model)
    run = await chat.start(data, engine)
    if data.stream:
        return EventStream(
            chat.stream(data, run),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await chat.complete(data, run)


def _card(model_id: str) -> ModelCard:
    return ModelCard(id=model_id, created=_STARTED)


@get("/models", summary="List the served models")
async def list_models(state: State) -> ModelList:
    registry: Registry = state.registry
    return ModelList(data=[_card(e.model_id) for e in registry])


@get("/models/{model_id:path}", summary="Describe one served model (ids may contain `/`)")
async def get_model(model_id: FromPath[str], state: State) -> ModelCard:
    engine = state.registry.get(model_id.lstrip("/"))
    return _card(engine.model_id)


@get("/health", summary="Liveness and model state; needs no key", exclude_from_auth=True)
async def health(state: State) -> Response[dict[str, Any]]:
    models = [e.status() for e in state.registry]
    ready = all(m["state"] == "ready" for m in models)
    failed = any(m["state"] == "failed" for m in models)
    status = "ok" if ready else ("error" if failed else "loading")
    return Response({"status": status, "models": models}, status_code=200 if ready else 503)
