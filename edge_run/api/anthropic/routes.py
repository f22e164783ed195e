"""Anthropic's Messages API routes: create a message, count a message's prompt tokens."""

from __future__ import annotations

from typing import Any, cast

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from edge_run.api.anthropic.events import MessageFrames
from edge_run.api.anthropic.schemas import CountTokensRequest, MessageObject, MessagesRequest, TokenCountResult
from edge_run.api.anthropic.translate import complete, conversation, translate
from edge_run.api.deps import ModelAccess
from edge_run.api.http.sse import answer
from edge_run.serving.prompt import check, check_tools, count_tokens, start

__all__ = ["count_message_tokens", "create_message"]


@post("/messages", status_code=200, summary="Create a message (Anthropic Messages API)")
async def create_message(
    data: JSONBody[MessagesRequest], request: Request, access: NamedDependency[ModelAccess]
) -> MessageObject | Response[Any]:  # or a stream of events
    gen = translate(data)
    check(gen)
    gen = await access.fetched(gen)
    run = await access.run(data.model, data.keep_alive, lambda engine: start(gen, engine))
    if isinstance(run, Response):
        return run  # an upstream's answer, relayed
    return await answer(request, run, data.stream, lambda: MessageFrames(data, run), lambda: complete(data, run))


@post("/messages/count_tokens", status_code=200, summary="Count a message's prompt tokens (Anthropic Messages API)")
async def count_message_tokens(
    data: JSONBody[CountTokensRequest], access: NamedDependency[ModelAccess]
) -> TokenCountResult:
    gen = conversation(data)
    check_tools(gen)  # what counting checks: the output format and sampling are not used
    gen = await access.fetched(gen)
    tokens = await access.run(data.model, data.keep_alive, lambda engine: count_tokens(gen, engine))
    if isinstance(tokens, Response):
        # an upstream's answer is a Response, which Litestar sends as it is: the schema documents the local one
        return cast("TokenCountResult", tokens)
    return TokenCountResult(input_tokens=tokens)
