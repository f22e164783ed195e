"""The engine as the event loop sees it: load a model, turn messages into a token stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_run.engine.llama import Context, Model, SamplerSpec, gpu_offload_supported
from edge_run.engine.scheduler import Chunk, Job, Scheduler
from edge_run.engine.templates import ChatTemplate
from edge_run.errors import ContextLengthExceeded, EngineFailure, ModelLoading, Overloaded

__all__ = ["Engine", "EngineOptions", "Generation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    ctx: int
    threads: int
    gpu_layers: int | None
    slots: int
    max_queue: int
    batch: int

    def resolved_gpu_layers(self) -> int:
        if self.gpu_layers is not None:
            return self.gpu_layers
        return 999 if gpu_offload_supported() else 0


class Generation:
    """One request's token stream. Iterate it for :class:`Chunk`; ``cancel()`` frees its slot."""

    def __init__(self, engine: Engine, job_args: dict[str, Any]) -> None:
        self._queue: asyncio.Queue[Chunk] = asyncio.Queue()
        self._engine = engine
        self.job = Job(deliver=self._queue.put_nowait, **job_args)
        self.done = False

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        try:
            while True:
                chunk = await self._queue.get()
                if chunk.error is not None:
                    raise chunk.error
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop generating (client gone); idempotent, safe after the end."""
        if not self.done:
            self.done = True
            self.job.cancelled = True
            self._engine._finished()


class Engine:
    """One loaded model with its own context and scheduler thread."""

    def __init__(self, model_id: str, path: Path, options: EngineOptions) -> None:
        self.model_id = model_id
        self.path = path
        self.options = options
        self.state = "loading"
        self.error: str | None = None
        self.model: Model | None = None
        self.template: ChatTemplate | None = None
        self._ctx: Context | None = None
        self._scheduler: Scheduler | None = None
        self._inflight = 0

    async def load(self) -> None:
        """Load weights and context off the event loop; sets ``state`` to ready or failed."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._load_blocking, loop)
            self.state = "ready"
        except Exception as exc:
            log.exception("loading %s failed", self.path)
            self.state, self.error = "failed", str(exc)

    def _load_blocking(self, loop: asyncio.AbstractEventLoop) -> None:
        opts = self.options
        model = Model(self.path, gpu_layers=opts.resolved_gpu_layers())
        self.model = model
        self.template = ChatTemplate(
            model.chat_template(), bos_token=model.bos_text, eos_token=model.eos_text
        )
        self._ctx = Context(
            model, n_seq=opts.slots, n_ctx_seq=opts.ctx, n_batch=opts.batch, threads=opts.threads
        )
        self._scheduler = Scheduler(model, self._ctx, slots=opts.slots, batch=opts.batch, loop=loop)
        self._scheduler.start()

    def _ready(self) -> tuple[Model, ChatTemplate, Scheduler]:
        if self.state != "ready" or self.model is None or self.template is None or self._scheduler is None:
            if self.state == "failed":
                raise EngineFailure(f"model `{self.model_id}` failed to load")
            raise ModelLoading(f"model `{self.model_id}` is still loading; retry shortly")
        return self.model, self.template, self._scheduler

    async def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        """Render the chat template and tokenize, off the event loop."""
        model, template, _ = self._ready()

        def work() -> list[int]:
            text = template.render(messages)
            if model.add_bos and model.bos_text and text.startswith(model.bos_text):
                text = text[len(model.bos_text) :]  # the tokenizer adds BOS itself
            return model.tokenize(text)

        return await asyncio.to_thread(work)

    def generate(
        self, prompt: list[int], spec: SamplerSpec, *, max_tokens: int | None, stops: tuple[str, ...]
    ) -> Generation:
        """Admit one request, or raise ``Overloaded`` / ``ContextLengthExceeded`` before any output."""
        _, _, scheduler = self._ready()
        limit = self.options.ctx
        wanted = len(prompt) + (max_tokens or 1)
        if wanted > limit:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {limit} tokens. However, you requested {wanted} "
                f"tokens ({len(prompt)} in the messages, {max_tokens or 1} in the completion). "
                "Please reduce the length of the messages or completion."
            )
        if self._inflight >= scheduler.n_slots + self.options.max_queue:
            raise Overloaded(
                f"all {scheduler.n_slots} slots are busy and the queue of {self.options.max_queue} is full; "
                "retry shortly"
            )
        gen = Generation(
            self,
            {
                "prompt": prompt,
                "spec": spec,
                "max_tokens": max_tokens if max_tokens is not None else limit - len(prompt),
                "stops": stops,
            },
        )
        self._inflight += 1
        scheduler.submit(gen.job)
        return gen

    def _finished(self) -> None:
        self._inflight -= 1
        if self._scheduler is not None:
            self._scheduler.wake()

    def status(self) -> dict[str, Any]:
        s = self._scheduler
        return {
            "id": self.model_id,
            "state": self.state,
            "backend": self.backend,
            "gpu_layers": self.model.gpu_layers if self.model else 0,
            "slots_total": self.options.slots,
            "slots_busy": s.busy if s else 0,
            "queued": s.queued if s else 0,
            "tokens_generated": s.tokens_generated if s else 0,
            "prompt_tokens_evaluated": s.prompt_tokens_evaluated if s else 0,
            "ctx_per_slot": self.options.ctx,
            "threads": self.options.threads,
        }

    @property
    def backend(self) -> str:
        if self.model is not None and self.model.gpu_layers > 0:
            return "gpu"
        return "cpu"

    async def close(self) -> None:
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
        if self._ctx is not None:
            self._ctx.close()
        if self.model is not None:
            self.model.close()
