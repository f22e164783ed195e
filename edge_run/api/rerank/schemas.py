"""The rerank request and answer: Jina's and Cohere's shape, as llama-server's ``/v1/rerank`` takes and gives it."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from edge_run.api.openai.schemas import KeepAlive

__all__ = ["Document", "RerankRequest", "RerankResponse", "RerankResult", "RerankUsage"]


class Document(Struct):
    """A document as an object (Jina's and Cohere's), or how an answer returns one."""

    text: str


class RerankRequest(Struct, kw_only=True):
    model: str
    query: Annotated[str, Meta(min_length=1)]
    documents: Annotated[list[str | Document], Meta(min_length=1, max_length=1024)]
    top_n: Annotated[int, Meta(ge=1)] | None = None  # default: every document
    return_documents: bool = False
    truncate: bool = False  # cut a (query, document) pair longer than the model takes instead of a 400
    keep_alive: KeepAlive | None = None

    @property
    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(Struct, omit_defaults=True):
    index: int  # the document's place in the request
    relevance_score: float  # the reranker's raw output (a logit, as llama-server's): higher is more relevant
    document: Document | UnsetType = UNSET  # with `return_documents`


class RerankUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(Struct, kw_only=True):
    id: str
    model: str
    results: list[RerankResult]  # by relevance, highest first
    usage: RerankUsage
    object: Literal["list"] = "list"
