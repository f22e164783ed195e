"""Whether this CPU's kernels compute a row alike in the calls that the scheduler treats as alike, for one model.

The same-answer guarantee shares rows between calls on the strength of these properties of ggml-cpu's kernels,
which the suite proves on the CPUs it runs on (``test_thread_switch.py``, ``test_determinism.py``) and which
another CPU, or another weight type, might not have:

- ``wide``: a call of 64 rows of a sequence or more computes each row alike whatever its width and its start
  (prompts of 64 tokens or more, cut freely: ``slots.WIDE``; x86-64 only);
- ``narrow``: so does a call of 8 to 63 rows (shorter prompts: ``slots.NARROW``; x86-64 only);
- ``rows``: a generated row computes alike with drafts after it and beside another sequence's row (drafts and
  neighbours), on the reference kernels where the scheduler takes them, else in calls up to the model's row limit;
  and ``lone``: alone in its call too;
- ``threads``: each of those computes alike on one thread and on all (the thread governor, and the share of the
  cores that other models leave).

:func:`check` computes a short text each way through a context of its own and compares the logits to the bit
(1.4 to 2.5 s for a 135M or 270M model, 5 s for a 1B one on 2 cores). The engine runs it once per model, CPU, llama.cpp
build and thread count, keeps the verdict in a file (:func:`checked`), and gives up what a failed property carries:
``wide`` or ``narrow``, reuse (every prompt from its first token, a block a call: ``Scheduler.safe``); ``rows``,
drafts and neighbours (a generated row a call); ``lone``, the lone row (it takes a filler draft, so that every
generated row is computed in a call of 2 rows or more); ``threads``, all threads but one. F16 and BF16 models fail
``lone`` on a 2-core Xeon with AVX-512: a row alone computes other logits (by up to 4e-4) than in any call of 2 to
63 rows, which agree, whatever the thread count.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import llama_cpp as L
import numpy as np

from edge_run.engine.llama.context import Batch, Context

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_run.engine.llama.model import Model
    from edge_run.engine.types import EngineOptions

__all__ = ["Probe", "check", "checked", "machine_key", "verdict"]

log = logging.getLogger(__name__)

TEXT = "The river runs past the old mill and under the stone bridge, and the miller counts the sacks. " * 12
WIDE_ROWS = 65  # two calls of this many rows against one of twice as many
AT = 2 * WIDE_ROWS  # where the generated rows are checked
MOST_ROWS = 63  # a generated step's rows at most on the CPU (drafts.step_drafts), under flash attention's tiles
CHECK = 2  # this check's version, in the key of its verdicts: a changed check runs again


class Probe:
    """A context of its own with two sequences, and the ways of computing a row that :func:`check` compares."""

    def __init__(self, model: Model, threads: int) -> None:
        self.ctx = Context(model, n_seq=2, n_ctx_seq=256, n_batch=256, threads=threads)
        self.batch = Batch(256)
        self.tokens = model.tokenize(TEXT)[:200]

    def prompt(self, widths: list[int], on: int, seq: int = 0) -> np.ndarray:
        """The first ``sum(widths)`` tokens in calls of ``widths`` rows on ``on`` threads; the last row's logits."""
        ctx, batch = self.ctx, self.batch
        ctx.seq_rm(seq, 0, -1)
        ctx.set_threads(on)
        start = 0
        for width in widths:
            batch.fill(self.tokens[start : start + width], start, seq, last_logits=True)
            ctx.decode(batch)
            start += width
        return ctx.logits(batch.n - 1).copy()

    def row(self, drafts: int, beside: bool, on: int) -> np.ndarray:
        """The row at ``AT`` of sequence 0 (both hold ``AT`` tokens), with ``drafts`` rows after it or another
        sequence's beside it, on ``on`` threads, on the reference kernels where the context has them; its logits."""
        ctx, batch, tokens = self.ctx, self.batch, self.tokens
        ctx.set_threads(on)
        batch.clear()
        for seq in (0, 1) if beside else (0,):
            batch.add(tokens[AT], AT, seq, True)
        for i in range(drafts):
            batch.add(tokens[AT + 1 + i], AT + 1 + i, 0, True)
        ctx.decode(batch, reference=True)  # as the scheduler decodes generated rows
        for seq in (0, 1):
            ctx.seq_rm(seq, AT, -1)
        return ctx.logits(0).copy()

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()


def check(model: Model, *, threads: int, row_limit: int | None, free_cuts: bool) -> list[str]:
    """The properties (``wide``, ``narrow``, ``rows``, ``lone``, ``threads``) that do not hold for ``model`` on this
    CPU at ``threads`` threads; ``wide`` and ``narrow`` only where the scheduler cuts prompts freely (``free_cuts``)."""
    probe, failed = Probe(model, threads), []
    prompt, row = probe.prompt, probe.row

    def differ(name: str, *ways: np.ndarray) -> None:
        if not all(np.array_equal(ways[0], way) for way in ways[1:]) and name not in failed:
            failed.append(name)

    try:
        if free_cuts:
            narrow = prompt([40], threads)
            differ("narrow", narrow, prompt([8, 32], threads))
            differ("threads", narrow, prompt([40], 1))
        differ("threads", prompt([WIDE_ROWS], threads), prompt([WIDE_ROWS], 1))
        wide = prompt([2 * WIDE_ROWS], threads, seq=1)  # the KV of both sequences, before the rows at AT
        cut = prompt([WIDE_ROWS, WIDE_ROWS], threads)
        if free_cuts:
            differ("wide", wide, cut)
        most = min(row_limit or MOST_ROWS, MOST_ROWS) - 1
        pair = row(1, False, threads)
        differ("rows", pair, row(most, False, threads), row(0, True, threads))
        alone = row(0, False, threads)  # under 256 cells: a lone row's KV is not split between threads
        if "rows" not in failed:
            differ("lone", pair, alone)
        differ("threads", pair, row(1, False, 1))
        if "lone" not in failed:
            differ("threads", alone, row(0, False, 1))
    finally:
        probe.close()
    return failed


def machine_key(model_path: Path, threads: int, reference: bool) -> str:
    """What a verdict holds for: this CPU (its model and flags), the llama.cpp build, the model file, the threads,
    and whether generated rows take the reference kernels."""
    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [line for line in info.splitlines() if line.startswith(("model name", "flags", "Features"))]
        cpu = " ".join(sorted(set(lines))) or cpu
    except OSError:
        pass
    stat = model_path.stat()
    system = L.llama_print_system_info().decode(errors="replace")
    model = [str(model_path.resolve()), stat.st_size, stat.st_mtime_ns]
    return json.dumps([CHECK, cpu, system, L.__version__, *model, threads, reference])


def checked(file: Path | None, key: str, run: Callable[[], tuple[list[str], bool]]) -> list[str]:
    """The verdict for ``key``, from ``file`` where it holds one, else ``run``'s (``(verdict, whether to keep it)``),
    kept there: written whole, so that a reader never sees half a file (two servers that check at once both write,
    and either verdict is right)."""
    kept: dict[str, list[str]] = {}
    if file is not None:
        try:
            kept = dict(json.loads(file.read_text()))
        except (OSError, ValueError):
            kept = {}
        if key in kept:
            return list(kept[key])
    verdict, keep = run()
    if file is not None and keep:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            part = file.with_name(f"{file.name}.{os.getpid()}.part")
            part.write_text(json.dumps({**kept, key: verdict}))
            part.replace(file)
        except OSError:
            log.warning("could not keep the kernel check's verdict in %s: it runs again at the next load", file)
    return verdict


def verdict(
    model: Model, path: Path, options: EngineOptions, free_cuts: bool, *, reference: bool, row_limit: int | None
) -> list[str]:
    """The properties that fail for ``model`` (loaded from ``path``) at its threads here, its generated rows on the
    reference kernels where the engine's context has them (``reference``) and in calls of ``row_limit`` rows at most,
    as the scheduler will decode them: checked at its first load on this machine, then read from the options'
    ``kernel_checks``. The check takes its threads from the options' ``cores``, the share that the models answering
    meanwhile leave it; checked on fewer threads than the model's, its verdict is used but not kept."""
    threads, keep, cores = options.threads, options.kernel_checks, options.cores

    def run() -> tuple[list[str], bool]:
        log.info("%s: checking that this CPU computes the model's rows alike in shared calls (once)", path.name)
        if cores is None:
            return check(model, threads=threads, row_limit=row_limit, free_cuts=free_cuts), True
        member = cores.join()
        cores.set_active(member, True)
        try:
            got = cores.acquire(member, threads)
            try:
                return check(model, threads=got, row_limit=row_limit, free_cuts=free_cuts), got == threads
            finally:
                cores.release(member)
        finally:
            cores.set_active(member, False)

    failed = checked(keep, machine_key(path, threads, reference), run)
    if failed:
        log.warning(
            "%s: on this CPU the model's rows do not compute alike in shared calls (%s): it is served without what "
            "rests on them (reuse, drafts and neighbours, or threads), so that a request keeps its answer",
            path.name,
            ", ".join(failed),
        )
    return failed
