"""The engine thread: one thread owns the llama context and runs the scheduler's steps.

The event loop submits requests and calls; the thread hands each step's results back in a single
``call_soon_threadsafe``: at most once every ``HANDOVER_INTERVAL`` while tokens flow, at once for a
request's first token and its last. A failed step fails the requests in flight, not the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from edge_run.engine.handover import HANDOVER_INTERVAL, Handover
from edge_run.engine.types import Chunk
from edge_run.errors import EngineFailure

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from edge_run.engine.scheduler import Scheduler
    from edge_run.engine.slots import Job
    from edge_run.errors import EdgeRunError

__all__ = ["Worker"]

log = logging.getLogger(__name__)

# What a request sees when the engine fails under it; the cause goes to the log, not to the client
FAILED = "inference failed; the server log has the details"


class Worker:
    """Runs one model's scheduler on a thread of its own, and takes work for it from the event loop."""

    def __init__(self, scheduler: Scheduler, loop: asyncio.AbstractEventLoop) -> None:
        self.scheduler = scheduler
        self._loop = loop
        self._cond = threading.Condition(scheduler.lock)  # the lock that guards the waiting requests
        self._calls: deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="edge-run-engine", daemon=True)

    # -- event-loop side -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            self.scheduler.waiting.append(job)
            self._answering()
            self._cond.notify()

    def _answering(self) -> None:
        """The engine has a request, a call or a stop to see to: a refresh step waiting for the other models' requests
        runs now (one block), and the thread gets to them after it. Under the lock, as the thread's own changes, so
        that it cannot go idle in between and keep this."""
        self.scheduler.cores.set_active(self.scheduler.member, True)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the engine thread between two steps (for work that needs llama.cpp compute)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._cond:
            self._calls.append((fn, future))
            self._answering()
            self._cond.notify()
        return await future

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._answering()  # a refresh step waiting for cores ends, then the thread
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
        self.scheduler.cores.set_active(self.scheduler.member, False)  # also when the thread had already ended
        self.scheduler.close()

    # -- engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        scheduler, cores, member = self.scheduler, self.scheduler.cores, self.scheduler.member
        handover = Handover(lambda out: self._loop.call_soon_threadsafe(_dispatch, out), HANDOVER_INTERVAL)
        failed_in_a_row = 0

        def now(out: list[tuple[Job, Chunk]]) -> None:  # a first token, not held for the step's other prompts
            handover.add(out[:], time.monotonic(), idle=False)
            out.clear()

        while True:
            with self._cond:
                while not self._stopping and not self._calls and not scheduler.has_work():
                    cores.set_active(member, False)
                    self._cond.wait(scheduler.refresh_in())  # None: until a call or a request
                if self._stopping:
                    break
                calls = list(self._calls)
                self._calls.clear()
                refresh_only = not calls and not scheduler.waiting and scheduler.busy == 0
                cores.set_active(member, True, idle_work=refresh_only)
            for fn, future in calls:
                try:
                    result, error = fn(), None
                except Exception as exc:
                    result, error = None, exc
                self._loop.call_soon_threadsafe(_settle, future, result, error)
            out: list[tuple[Job, Chunk]] = []
            try:
                scheduler.step(out, now)
                handover.add(out, time.monotonic(), idle=scheduler.busy == 0)
                failed_in_a_row = 0
            except Exception:  # keep serving: fail only the requests in flight
                log.exception("engine step failed")
                failed_in_a_row += 1
                # a second failure in a row may be the waiting requests' own (one that cannot even start):
                # then they end too, instead of being tried again and again
                self._fail_all(handover.take() + out, EngineFailure(FAILED), waiting=failed_in_a_row > 1)
        cores.set_active(member, False)
        self._fail_all(handover.take(), EngineFailure("server is shutting down"))

    def _fail_all(self, out: list[tuple[Job, Chunk]], err: EdgeRunError, *, waiting: bool = True) -> None:
        """End every request in flight (and, unless ``waiting`` is False, every waiting one) with ``err``.

        Never raises: the thread must live on. A failed step affects the requests in the slots only; the
        waiting ones are kept for the next steps, on caches cleared of whatever the step left.
        """
        self.scheduler.fail_slots(out, err)
        with self._cond:
            while waiting and self.scheduler.waiting:
                job = self.scheduler.waiting.popleft()
                job.close_samplers()
                out.append((job, Chunk(finish_reason="error", error=err)))
        if out and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_dispatch, list(out))
            out.clear()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _dispatch(out: list[tuple[Job, Chunk]]) -> None:
    for job, chunk in out:
        job.deliver(chunk)
