"""``POST /v1/embeddings``: unit-length vectors pooled as the model pools, as floats or base64."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from edge_run.api.openai.schemas import Embedding, EmbeddingList, EmbeddingUsage
from edge_run.serving.retrieval import shortened

if TYPE_CHECKING:
    from edge_run.api.openai.schemas import EmbeddingRequest
    from edge_run.engine import Engine

__all__ = ["embed"]


async def embed(req: EmbeddingRequest, inputs: list[str] | list[list[int]], engine: Engine) -> EmbeddingList:
    vectors, n_tokens = await engine.embed(inputs, truncate=req.truncate)
    data = []
    for i, full in enumerate(vectors):
        v = shortened(full, req.dimensions)
        wire = base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64" else v.tolist()
        data.append(Embedding(index=i, embedding=wire))
    return EmbeddingList(data=data, model=req.model, usage=EmbeddingUsage(n_tokens, n_tokens))
