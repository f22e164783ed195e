"""The engine as the event loop sees it: load a model, turn messages into a token stream.

The llama.cpp adapter (:mod:`edge_run.engine.llama`) is imported inside the methods that load or use a
model: importing ``edge_run.engine`` does not load llama.cpp.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from edge_run.engine.budget import Budget
from edge_run.engine.embedding import Pooler
from edge_run.engine.generation import Generation
from edge_run.engine.placement import Placement, gpu_devices
from edge_run.engine.scheduler import PREFILL_BLOCK, Scheduler
from edge_run.engine.slots import TILE, Job
from edge_run.engine.templates import ChatTemplate
from edge_run.engine.threads import CoreShare
from edge_run.engine.types import Chunk
from edge_run.engine.worker import Worker
from edge_run.errors import (
    ContextLengthExceeded,
    EngineFailure,
    InvalidRequest,
    ModelLoading,
    Overloaded,
    UnsupportedTask,
)

if TYPE_CHECKING:
    from pathlib import Path

    from edge_run.engine.llama.context import Context
    from edge_run.engine.llama.media import Projector
    from edge_run.engine.llama.model import Model
    from edge_run.engine.llama.sampler import Sampler
    from edge_run.engine.media import MediaInput, MediaSpan
    from edge_run.engine.types import EngineOptions, SamplerSpec, ThoughtLimit

__all__ = ["Engine"]

# the scheduler's counters /health shows
_COUNTERS = ("tokens_generated", "prompt_tokens_evaluated", "tokens_refreshed", "tokens_stale", "prefix_copies",
             "drafts_accepted", "drafts_rejected", "slot_moves")  # fmt: skip

log = logging.getLogger(__name__)


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
        self._worker: Worker | None = None
        self._inflight = 0
        self._pooler: Pooler | None = None
        self._projector: Projector | None = None
        self._placement: Placement | None = None
        self.vram_used = 0  # device memory the load took (weights, KV cache, compute buffers)
        self.kernels_failed: list[str] = []  # kernel properties that do not hold here: what rests on them is given up
        self.reference_kernels = False  # generated rows on ggml-cpu's reference kernels (Context.decode)

    def placement(self) -> Placement:
        """Where the layers go; decided once, before loading (it reads the free GPU memory)."""
        if self._placement is None:
            from edge_run.engine.llama.backend import add_rpc_servers

            add_rpc_servers(self.options.rpc_servers)  # their devices count for --gpu-layers
            self._placement = Placement.resolve(self.path, self.options)
        return self._placement

    async def load(self) -> None:
        """Load weights and context off the event loop; sets ``state`` to ready, or to failed and raises."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._load_blocking, loop)
            self.state = "ready"
        except Exception as exc:
            log.exception("loading %s failed", self.path)
            self.state, self.error = "failed", str(exc)
            raise

    def _load_blocking(self, loop: asyncio.AbstractEventLoop) -> None:
        from edge_run.engine.llama.context import Batch, Context, EmbdBatch
        from edge_run.engine.llama.kernels import verdict
        from edge_run.engine.llama.media import Projector
        from edge_run.engine.llama.model import Model

        opts, placement = self.options, self.placement()
        model = Model(self.path, gpu_layers=placement.layers, repack=opts.kind != "chat")
        self.model = model
        if opts.kind != "chat":  # an embedder or a reranker: no slots, no scheduler
            self._pooler = Pooler(model, opts, None, opts.cores or CoreShare(opts.threads))
            return
        template = opts.chat_template or model.chat_template()
        self.template = ChatTemplate(template, bos_token=model.bos_text, eos_token=model.eos_text)
        self._ctx = Context(model, n_seq=opts.slots, n_ctx_seq=opts.ctx, n_batch=opts.batch, threads=opts.threads)
        offloaded = placement.full
        if opts.mmproj is not None:  # a projector that does not load leaves the model chatting in text
            gpu = opts.mmproj_offload and offloaded
            try:
                self._projector = Projector(opts.mmproj, model, threads=opts.threads, gpu=gpu, batch=opts.batch)
            except EngineFailure:
                log.exception("%s: the projector %s did not load; text only", self.model_id, opts.mmproj)
        if placement.devices:
            self.vram_used = max(0, sum(d.free for d in placement.devices) - sum(d.free for d in gpu_devices()))
        self.reference_kernels = ref = self._ctx.reference and not offloaded  # generated rows (Context.decode)
        free, limit = TILE == PREFILL_BLOCK, None if ref else model.row_limit  # x86-64 cuts freely; ref: any rows
        self.kernels_failed = [] if offloaded else verdict(model, self.path, opts, free, reference=ref, row_limit=limit)
        failed = set(self.kernels_failed)  # each property that fails takes away what rests on it (llama/kernels.py)
        threads, pad = 1 if "threads" in failed else opts.threads, "lone" in failed  # pad: no sampling on a device
        self._ctx.set_threads(threads)
        scheduler = Scheduler(
            model,
            self._ctx,
            Batch(opts.batch),
            slots=opts.slots,
            # offloaded whole, blocks of half a batch, and no drafts (see the scheduler's docstring)
            block=(opts.batch + 1) // 2 if offloaded else min(PREFILL_BLOCK, (opts.batch + 1) // 2),
            max_drafts=0 if offloaded or "rows" in failed else opts.draft_max,
            row_limit=1 if "rows" in failed else None if offloaded else limit,
            lone_row_threads=None if offloaded or ref else 1,
            device_sampling=(offloaded if opts.device_sampling is None else opts.device_sampling) and not pad,
            threads=threads,
            adapt_threads=not offloaded and "threads" not in failed,  # offloaded whole, the CPU threads barely work
            safe=bool(failed & {"wide", "narrow"}),
            pad_lone=pad,
            cores=opts.cores,
            embd_batch=EmbdBatch(opts.batch, p.n_embd, mrope=p.mrope) if (p := self._projector) is not None else None,
            encode_beside=self._projector is not None and self._projector.beside,
        )
        self._worker = Worker(scheduler, loop)
        self._worker.start()
        self._pooler = Pooler(
            model,
            opts,
            self._worker.call,
            scheduler.cores,
            scheduler.member,
            busy=lambda: scheduler.busy > 0,
            small=scheduler.block,
        )

    def _ready(self) -> tuple[Model, ChatTemplate, Worker]:
        if self.options.kind != "chat":
            raise UnsupportedTask(self.model_id, self.options.kind, "chat")
        self._loaded()
        assert self.model is not None and self.template is not None and self._worker is not None
        return self.model, self.template, self._worker

    def _loaded(self) -> None:
        if self.state == "failed":
            raise EngineFailure(f"model `{self.model_id}` failed to load")
        if self.state != "ready":
            raise ModelLoading(f"model `{self.model_id}` is still loading; retry shortly")

    @property
    def n_vocab(self) -> int:
        """The loaded model's vocabulary size (0 while nothing is loaded)."""
        return self.model.n_vocab if self.model else 0

    @property
    def native_tools(self) -> bool:
        """Whether this model's chat template renders tool definitions itself."""
        return self.template is not None and self.template.supports_tools

    async def prompt_tokens(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Render the chat template and tokenize, off the event loop."""
        return (await self.render_prompt(messages, tools))[1]

    async def render_prompt(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        variables: dict[str, Any] | None = None,
    ) -> tuple[str, list[int]]:
        """The prompt's text and tokens, off the event loop; ``variables`` are the template's extra names."""
        model, _, _ = self._ready()

        def work() -> tuple[str, list[int]]:
            text = self._render(messages, tools, variables)
            return text, model.tokenize(text)

        return await asyncio.to_thread(work)

    async def render_media_prompt(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        variables: dict[str, Any] | None,
        media: list[MediaInput],
    ) -> tuple[str, list[int], list[MediaSpan]]:
        """As :meth:`render_prompt`, for messages whose content holds one ``MEDIA_MARKER`` per input of ``media``:
        the images and audio decoded and cut into rows by the model's projector (its rows not yet encoded)."""
        model, _, _ = self._ready()
        projector = self._projector
        for m in media:
            if projector is None or m.kind not in projector.inputs:
                raise InvalidRequest(f"model `{self.model_id}` takes no {m.kind} input", param=m.param)
        assert projector is not None  # media is not empty

        def work() -> tuple[str, list[int], list[MediaSpan]]:
            text = self._render(messages, tools, variables)
            return (text, *projector.tokenize(text, media, add_special=model.add_bos))

        return await asyncio.to_thread(work)

    def _render(self, messages: list[dict[str, Any]], tools: Any, variables: dict[str, Any] | None) -> str:
        model, template, _ = self._ready()
        last = messages[-1] if messages else {}
        if last.get("role") == "assistant" and last.get("content"):
            # a final assistant message is a prefix to continue, not a finished turn
            text = template.render(messages, tools=tools, add_generation_prompt=False, variables=variables)
            cut = text.rfind(last["content"])
            text = text[: cut + len(last["content"])] if cut >= 0 else text
        else:
            text = template.render(messages, tools=tools, variables=variables)
        if model.add_bos and model.bos_text and text.startswith(model.bos_text):
            text = text[len(model.bos_text) :]  # the tokenizer adds BOS itself
        return text

    @property
    def inputs(self) -> tuple[str, ...]:
        """What a prompt may hold: text, and images or audio where the model has a projector for them."""
        return self._projector.inputs if self._projector is not None else ("text",)

    async def tokenize(self, text: str) -> list[int]:
        model, _, _ = self._ready()
        return await asyncio.to_thread(model.tokenize, text)

    async def generate(
        self,
        prompt: list[int],
        spec: SamplerSpec,
        *,
        max_tokens: int | None,
        stops: tuple[str, ...],
        n: int = 1,
        top_logprobs: int | None = None,
        thought: ThoughtLimit | None = None,
        media: list[MediaSpan] | None = None,
    ) -> Generation:
        """Admit one request, or raise ``Overloaded`` / ``ContextLengthExceeded`` before any output.
        ``thought`` cuts a thinking model's thought short (not under a grammar that holds from the start)."""
        model, _, worker = self._ready()
        self._check_admission(len(prompt), max_tokens, n)
        self._inflight += 1  # before the await below, so concurrent requests see the seat taken
        try:
            made = await asyncio.to_thread(_samplers, model, spec, n)
        except BaseException:
            self._inflight -= 1
            raise
        queue: asyncio.Queue[Chunk] = asyncio.Queue()
        budget = max_tokens if max_tokens is not None else self.options.ctx - len(prompt)
        held = spec.grammar is not None and not spec.triggers  # a grammar from the start would not follow the closing
        closing = model.tokenize(thought.closing, add_special=False) if thought and not held else []
        jobs = [
            Job(
                prompt=prompt,
                sampler=sampler,
                max_tokens=budget,
                stops=stops,
                deliver=queue.put_nowait,
                index=i,
                top_logprobs=top_logprobs,
                budget=Budget(thought, closing, model.piece) if thought is not None and closing else None,
            )
            for i, sampler in enumerate(made)
        ]
        jobs[0].followers = jobs[1:]
        jobs[0].media = media or []
        worker.submit(jobs[0])
        return Generation(self, jobs, queue)

    def _check_admission(self, n_prompt: int, max_tokens: int | None, n: int) -> None:
        limit, slots, max_queue = self.options.ctx, self.options.slots, self.options.max_queue
        wanted = n_prompt + (max_tokens or 1)
        if wanted > limit:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {limit} tokens. However, you requested {wanted} "
                f"tokens ({n_prompt} in the messages, {max_tokens or 1} in the completion). "
                "Please reduce the length of the messages or completion."
            )
        if n > slots:
            raise InvalidRequest(f"n={n} is more than this server's {slots} slots", param="n")
        if self._inflight >= slots + max_queue:
            raise Overloaded(f"all {slots} slots are busy and the queue of {max_queue} is full; retry shortly")

    async def embed(self, inputs: list[str] | list[list[int]], *, truncate: bool = False) -> tuple[list[Any], int]:
        """Unit vectors (numpy arrays) for texts or token arrays, and the tokens they took."""
        return await self._pooled("embedding").embed(inputs, truncate=truncate)

    async def rerank(self, query: str, documents: list[str], *, truncate: bool = False) -> tuple[list[float], int]:
        """Each document's relevance to ``query`` (a reranker's raw score), and the tokens they took."""
        return await self._pooled("rerank").scores(query, documents, truncate=truncate)

    def _pooled(self, task: str) -> Pooler:
        """The pooler, for ``task`` (embedding or rerank): a reranker only reranks, and only a reranker does."""
        if (task == "rerank") != (self.options.kind == "rerank"):
            raise UnsupportedTask(self.model_id, self.options.kind, task)
        self._loaded()
        assert self._pooler is not None
        return self._pooler

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet finished (generating or queued)."""
        return self._inflight

    def _finished(self) -> None:
        self._inflight -= 1
        if self._worker is not None:
            self._worker.wake()

    def status(self) -> dict[str, Any]:
        s = self._worker.scheduler if self._worker else None
        return {
            "id": self.model_id,
            "state": self.state,
            "backend": self.backend,
            "gpu_layers": self.model.gpu_layers if self.model else 0,
            "gpu_layers_total": self._placement.total_layers if self._placement else 0,
            "gpu_devices": [d.label for d in self._placement.devices] if self._placement else [],
            "vram_used_bytes": self.vram_used,
            "slots_total": self.options.slots,
            "slots_busy": s.busy if s else 0,
            "queued": len(s.waiting) if s else 0,
            **{name: getattr(s, name) if s else 0 for name in _COUNTERS},
            "inputs": list(self.inputs),
            "media_encoded": self._projector.encoded if self._projector is not None else 0,
            "media_encoded_beside": s.encoder.encoded_beside if s else 0,
            "ctx_per_slot": self.options.ctx,
            "device_sampling": s.device_sampling if s else False,
            "threads": self.options.threads,
            "threads_now": s.steps.threads_now if s else self.options.threads,
            "steps_late": s.steps.late if s else 0,
            "kernels_failed": self.kernels_failed,
            "reference_kernels": self.reference_kernels,
            "thread_switches": s.governor.switches if s else 0,
        }

    @property
    def backend(self) -> str:
        if self.model is not None and self.model.gpu_layers > 0:
            return "gpu"
        return "cpu"

    async def close(self) -> None:
        if self._worker is not None:
            await asyncio.to_thread(self._worker.stop)
        if self._pooler is not None:
            self._pooler.close()
        if self._ctx is not None:
            self._ctx.close()
        if self._projector is not None:
            self._projector.close()
        if self.model is not None:
            self.model.close()


def _samplers(model: Model, spec: SamplerSpec, n: int) -> list[Sampler]:
    """A sampler chain for each of ``n`` choices, each its own seed, so that seeded choices differ yet repeat."""
    from edge_run.engine.llama.sampler import Sampler

    made: list[Sampler] = []
    try:
        for i in range(n):
            seed = None if spec.seed is None else spec.seed + i
            made.append(Sampler(model, dataclasses.replace(spec, seed=seed)))
    except Exception:
        for sampler in made:
            sampler.close()
        raise
    return made
