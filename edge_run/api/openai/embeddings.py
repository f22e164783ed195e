"""``POST /v1/embeddings``: mean-pooled, unit-length vectors, as floats or base64."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import numpy as np

from edge_run.api.openai.schemas import Embedding, EmbeddingList, EmbeddingUsage
from edge_run.errors import InvalidRequest

if TYPE_CHECKING:
    from edge_run.api.openai.schemas import EmbeddingRequest
    from edge_run.engine import Engine

__all__ = ["embed", "embedding_texts"]


def embedding_texts(req: EmbeddingRequest) -> list[str]:
    """The texts to embed; what the request asks that is not served is refused before any model is loaded."""
    if req.dimensions is not None:
        raise InvalidRequest("`dimensions` is not supported: vectors keep the model's size", param="dimensions")
    return [req.input] if isinstance(req.input, str) else req.input


async def embed(req: EmbeddingRequest, texts: list[str], engine: Engine) -> EmbeddingList:
    vectors, n_tokens = await engine.embed(texts)
    data = [
        Embedding(
            index=i,
            embedding=base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
            if req.encoding_format == "base64"
            else v,
        )
        for i, v in enumerate(vectors)
    ]
    return EmbeddingList(data=data, model=req.model, usage=EmbeddingUsage(n_tokens, n_tokens))
