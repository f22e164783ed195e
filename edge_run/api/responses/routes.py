"""OpenAI's Responses API routes: create a response, and get or delete a stored one."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from edge_run.api.deps import ModelAccess
from edge_run.api.http.accounting import key_of
from edge_run.api.http.sse import answer
from edge_run.api.responses.events import ResponseFrames
from edge_run.api.responses.schemas import DeletedResponse, ResponseObject, ResponseRequest
from edge_run.api.responses.store import ResponseStore
from edge_run.api.responses.translate import complete, prepare
from edge_run.serving.prompt import check, start

__all__ = ["create_response", "delete_response", "get_response"]


def _owner(request: Request) -> str | None:
    key = key_of(request)
    return key.sha256 if key is not None else None


@post("/responses", status_code=200, summary="Create a model response (OpenAI Responses API)")
async def create_response(
    data: JSONBody[ResponseRequest],
    request: Request,
    access: NamedDependency[ModelAccess],
    responses: NamedDependency[ResponseStore],
) -> ResponseObject | Response[Any]:  # or a stream of events
    job = prepare(data, responses, _owner(request))  # an unknown previous_response_id is refused here
    check(job.gen)
    job.gen = await access.fetched(job.gen)
    run = await access.run(data.model, data.keep_alive, lambda engine: start(job.gen, engine))
    if isinstance(run, Response):
        return run  # an upstream's answer, relayed
    return await answer(request, run, data.stream, lambda: ResponseFrames(job, run), lambda: complete(job, run))


@get("/responses/{response_id:str}", summary="Get a stored response (only the key that made it sees it)")
async def get_response(
    response_id: FromPath[str], responses: NamedDependency[ResponseStore], request: Request
) -> ResponseObject:
    return responses.get(response_id, _owner(request)).response


@delete("/responses/{response_id:str}", status_code=200, summary="Delete a stored response")
async def delete_response(
    response_id: FromPath[str], responses: NamedDependency[ResponseStore], request: Request
) -> DeletedResponse:
    responses.delete(response_id, _owner(request))
    return DeletedResponse(id=response_id)
