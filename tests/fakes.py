"""Fakes for the tests that run without a model (no tests here): engines, backends, a registry, a clock,
the smallest GGUF file edge-run reads, and a stream that fails half way."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from edge_run.api.app import create_app
from edge_run.engine import Chunk, EngineOptions, Generation
from edge_run.engine.templates import ChatTemplate
from edge_run.errors import EngineFailure
from edge_run.keys import KeyStore
from edge_run.models.registry import ModelRegistry, ModelSpec
from edge_run.server import app_services

__all__ = [
    "FakeBackend",
    "FakeClock",
    "FakeEngine",
    "FakeGeneration",
    "FinishCounter",
    "fake_registry",
    "stream_that_fails",
    "tiny_gguf",
]


class FakeGeneration:
    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = chunks
        self.cancelled = False

    __aiter__ = Generation.__aiter__  # the real flattening over the fake batches below

    async def batches(self) -> AsyncIterator[list[Chunk]]:
        for chunk in self.chunks:  # one step at a time, as from a consumer that keeps up
            if chunk.error is not None:
                raise chunk.error
            yield [chunk]

    def cancel(self) -> None:
        self.cancelled = True


class FakeEngine:
    """Answers every request with ``chunks`` ("Hello" by default), or raises ``fail`` when set."""

    model_id = "fake/model"
    n_vocab = 100

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.chunks = [
            Chunk(text="Hel", completion_tokens=1, prompt_tokens=3),
            Chunk(text="lo", completion_tokens=2, prompt_tokens=3, finish_reason="stop"),
        ]
        self.generations: list[FakeGeneration] = []

    inflight = 0

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]:
        return {"id": self.model_id, "state": "ready"}

    native_tools = False
    template = ChatTemplate(None)  # ChatML; a test may put a thinking model's template here
    options = EngineOptions(ctx=4096, threads=1, gpu_layers=0, slots=1, max_queue=1, batch=512)

    async def render_prompt(self, messages: list[dict[str, Any]], tools: Any = None, variables: Any = None) -> Any:
        if self.fail is not None:
            raise self.fail
        return self.template.render(messages, tools=tools, variables=variables), [1, 2, 3]

    async def generate(self, prompt: list[int], spec: Any, **options: Any) -> FakeGeneration:
        gen = FakeGeneration(self.chunks)
        self.generations.append(gen)
        return gen


def fake_registry(*engines: Any) -> ModelRegistry:
    """A registry of fake engines, each under its ``model_id``."""
    by_id = {e.model_id: e for e in engines}
    specs = [ModelSpec(e.model_id, Path(f"{e.model_id}.gguf"), "test") for e in engines]
    return ModelRegistry(specs, lambda spec: by_id[spec.id], cost=lambda spec: 0)


class FinishCounter:
    """Stands in for the engine a ``Generation`` reports to: counts the generations that finished."""

    def __init__(self) -> None:
        self.finished = 0

    def _finished(self) -> None:
        self.finished += 1


class FakeBackend:
    """A model registry's backend: loads in ``load_time`` seconds (or fails); ``inflight`` is what a running
    answer would hold."""

    def __init__(self, spec: ModelSpec, log: list[str], load_time: float, fail: str | None) -> None:
        self.spec, self.log, self.load_time, self.fail = spec, log, load_time, fail
        self.inflight = 0
        self.closed = False

    async def load(self) -> None:
        self.log.append(f"load {self.spec.id}")
        await asyncio.sleep(self.load_time)
        if self.fail:
            raise RuntimeError(self.fail)

    async def close(self) -> None:
        self.log.append(f"close {self.spec.id}")
        self.closed = True

    def status(self) -> dict[str, Any]:
        return {}


class FakeClock:
    """A clock that moves only when a test moves it (``clock.now += 10``)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tiny_gguf() -> bytes:
    """The smallest GGUF that edge-run reads whole: the metadata a layout needs and one 8-float tensor."""

    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value)) + value.encode()

    numbers = [("block_count", 0), ("embedding_length", 8), ("attention.head_count", 1)]
    kvs = [text("general.architecture") + struct.pack("<I", 8) + text("llama")]
    kvs += [text(f"llama.{k}") + struct.pack("<II", 4, v) for k, v in numbers]
    tensor = text("token_embd.weight") + struct.pack("<IQQIQ", 2, 8, 1, 0, 0)  # 8 x 1, F32, at offset 0
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs)) + b"".join(kvs) + tensor
    return head + b"\0" * (-len(head) % 32) + struct.pack("<8f", *range(8))


def stream_that_fails(tmp_path: Path, path: str, body: dict) -> tuple[str, FakeEngine]:
    """Stream ``body`` from ``path`` over a fake engine whose generation fails after one token."""
    keys = KeyStore(tmp_path / "keys.sqlite3")
    key, _ = keys.create()
    engine = FakeEngine()
    engine.chunks = [Chunk(text="Hel", completion_tokens=1), Chunk(finish_reason="error", error=EngineFailure("boom"))]
    with TestClient(create_app(app_services(fake_registry(engine), keys)), base_url="http://127.0.0.1") as http:
        r = http.post(path, json={"model": "fake/model", "stream": True, **body}, headers={"x-api-key": key})
    assert engine.generations[-1].cancelled  # the slot is handed back
    return r.text, engine
