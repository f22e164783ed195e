"""``POST /v1/rerank`` and ``POST /rerank``: documents ordered by a reranker model's relevance to a query."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from litestar import Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from msgspec import UNSET

from edge_run.api.deps import ModelAccess
from edge_run.api.rerank.schemas import Document, RerankRequest, RerankResponse, RerankResult, RerankUsage
from edge_run.serving.request import new_id
from edge_run.serving.retrieval import ranked

if TYPE_CHECKING:
    from edge_run.engine import Engine

__all__ = ["ollama_rerank", "rerank", "rerank_unversioned"]


# One handler per path: a handler's list of paths is a set to Litestar, so the OpenAPI schema's order of them
# would change with the interpreter's hash seed.
@post("/v1/rerank", status_code=200, summary="Rerank documents by relevance to a query (Jina/Cohere)")
async def rerank(data: JSONBody[RerankRequest], access: NamedDependency[ModelAccess]) -> RerankResponse:
    return await ranked_documents(data, access)


@post("/rerank", status_code=200, summary="Rerank documents by relevance to a query (Jina/Cohere; `/v1/rerank`)")
async def rerank_unversioned(data: JSONBody[RerankRequest], access: NamedDependency[ModelAccess]) -> RerankResponse:
    return await ranked_documents(data, access)


@post("/rerank", status_code=200, summary="Rerank documents (Ollama's proposed route; Jina's shape, Ollama's errors)")
async def ollama_rerank(data: JSONBody[RerankRequest], access: NamedDependency[ModelAccess]) -> RerankResponse:
    return await ranked_documents(data, access, relay=False)  # upstreams speak OpenAI's API only


async def ranked_documents(data: RerankRequest, access: ModelAccess, *, relay: bool = True) -> RerankResponse:
    """The documents by the reranker's score, answered by the model ``data`` names (or, with ``relay``, its
    upstream)."""
    access.spec(data.model, "rerank")
    texts = data.texts

    async def work(engine: Engine) -> RerankResponse:
        scores, n_tokens = await engine.rerank(data.query, texts, truncate=data.truncate)
        results = [
            RerankResult(r.index, r.score, Document(texts[r.index]) if data.return_documents else UNSET)
            for r in ranked(scores, data.top_n)
        ]
        usage = RerankUsage(n_tokens, n_tokens)
        return RerankResponse(id=new_id("rerank-"), model=data.model, results=results, usage=usage)

    result: RerankResponse | Response[Any] = await access.run(
        data.model, data.keep_alive, work, needs="rerank", relay=relay
    )
    return cast("RerankResponse", result)  # an upstream's answer is a Response, sent as it is
