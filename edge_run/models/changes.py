"""The changes a running server makes to its models: pulls and removals, the registry told of each.

A pull runs in a thread as a :class:`PullJob`, which is the download's progress :class:`~edge_run.models.progress.Board`
and hands each report to the event loop, where any number of clients follow it: a second request for the same model
(by any of its names) joins the pull under way instead of downloading again. A pull ends in success (the model is
offered at once, :meth:`ModelRegistry.add`), a failure, or a cancel: :meth:`PullJob.cancel` makes the download's next
progress report raise :class:`~edge_run.errors.PullCancelled`, which unwinds the download, and what it had
written is removed (:mod:`.pull`, :mod:`.fetch`). A client that stops following does not cancel: the route decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from edge_run.errors import EdgeRunError, InvalidRequest, ModelNotFound, PullCancelled
from edge_run.models.fetch import FetchError
from edge_run.models.inventory import pull_target

if TYPE_CHECKING:
    from edge_run.models.manage import ModelFiles
    from edge_run.models.registry import ModelRegistry, ModelSpec

__all__ = ["FileProgress", "ModelChanges", "PullJob"]

STEPS = 100  # reports per file at most: one a percent (and the first and the last)


@dataclass(frozen=True, slots=True)
class FileProgress:
    """How far one file of a pull is: bytes ``completed`` of ``total`` (None: not known)."""

    file: str
    total: int | None
    completed: int


class PullJob:
    """One pull under way: the download thread's :class:`Board`, and its reports for the clients that follow it."""

    def __init__(self, target: str, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.task: asyncio.Future[ModelSpec] | None = None
        self._loop = loop
        self._cancel = threading.Event()
        self._counted: list[FileProgress] = []  # the download thread's
        self._sent: list[int] = []
        self._latest: dict[str, FileProgress] = {}  # the event loop's: what a new follower is told first
        self._followers: list[asyncio.Queue[FileProgress | None]] = []

    # -- the Board, called on the download's thread ---------------------------------------------

    def add_task(self, description: str, *, total: float | None = None, completed: int = 0) -> Any:
        self._check()
        self._counted.append(FileProgress(description, None if total is None else int(total), int(completed)))
        self._sent.append(int(completed))
        self._post(len(self._counted) - 1)
        return len(self._counted) - 1

    def advance(self, task_id: Any, advance: float = 1) -> None:
        self._check()
        f = self._counted[task_id]
        self._counted[task_id] = f = replace(f, completed=f.completed + int(advance))
        whole = f.total is not None and f.completed >= f.total
        if whole or f.completed - self._sent[task_id] >= (f.total or 0) / STEPS:
            self._sent[task_id] = f.completed
            self._post(task_id)

    def _check(self) -> None:
        if self._cancel.is_set():
            raise PullCancelled(f"the pull of `{self.target}` was cancelled")

    def _post(self, task_id: int) -> None:
        self._loop.call_soon_threadsafe(self._deliver, self._counted[task_id])

    # -- the event loop's side ------------------------------------------------------------------

    def _deliver(self, report: FileProgress | None) -> None:
        if report is not None:
            self._latest[report.file] = report
        for queue in self._followers:
            queue.put_nowait(report)

    def close(self) -> None:
        """The pull is over: every follower's stream ends."""
        self._deliver(None)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def latest(self) -> list[FileProgress]:
        """Each file's latest report, in the order the files started."""
        return list(self._latest.values())

    @property
    def followers(self) -> int:
        return len(self._followers)

    def cancel(self) -> None:
        """Stop the download at its next progress report; the pull then ends in :class:`PullCancelled`."""
        self._cancel.set()

    async def first(self) -> tuple[FileProgress | None, AsyncGenerator[FileProgress, None]]:
        """Follow the pull: its first report (None: it ended without one), and the rest. A pull that failed before
        it reported raises here, so that a route can answer with a 4xx before its stream starts."""
        reports = self.follow()
        first = await anext(reports, None)
        if first is None:
            assert self.task is not None
            self.task.result()
        return first, reports

    async def follow(self) -> AsyncGenerator[FileProgress, None]:
        """Each file's progress so far, then every report until the pull ends; its outcome is then ``task``'s."""
        assert self.task is not None
        queue: asyncio.Queue[FileProgress | None] = asyncio.Queue()
        for latest in self._latest.values():
            queue.put_nowait(latest)
        if self.task.done():
            queue.put_nowait(None)
        self._followers.append(queue)
        try:
            while (report := await queue.get()) is not None:
                yield report
        finally:
            self._followers.remove(queue)


def _pull(files: ModelFiles, name: str, job: PullJob) -> ModelSpec:
    """``files.pull`` on the download's thread; a name that resolves to nothing, or a download that fails, is a 400."""
    try:
        return files.pull(name, job)
    except (FetchError, ValueError) as exc:  # a PullError is a FetchError
        raise InvalidRequest(f"pull `{name}`: {exc}", param="model") from None


class ModelChanges:
    """Pulls under way by target (:func:`~edge_run.models.inventory.pull_target`), and models forgotten."""

    def __init__(self, files: ModelFiles, registry: ModelRegistry) -> None:
        self.files = files
        self.registry = registry
        self._jobs: dict[str, PullJob] = {}
        self._ending: dict[str, asyncio.Future[Any]] = {}  # cancelled pulls still unwinding

    def pull(self, name: str) -> PullJob:
        """Start pulling ``name`` (a library id, an Ollama name or ``hf:...``), or join its pull under way.

        Raises:
            NotInLibrary: the name is no library model nor ``hf:`` reference (404).
            InvalidRequest: an ``hf:`` reference of the wrong form.
        """
        try:
            target = pull_target(name)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="model") from None
        job = self._jobs.get(target)
        if job is not None:
            return job
        job = self._jobs[target] = PullJob(target, asyncio.get_running_loop())
        job.task = asyncio.ensure_future(self._run(job, name, self._ending.get(target)))
        job.task.add_done_callback(lambda task: self._finished(job, task))
        return job

    async def _run(self, job: PullJob, name: str, before: asyncio.Future[Any] | None) -> ModelSpec:
        if before is not None:  # a cancelled pull of the same files is still removing them
            await asyncio.wait({before})
        return await asyncio.to_thread(_pull, self.files, name, job)

    def _finished(self, job: PullJob, task: asyncio.Future[ModelSpec]) -> None:
        if self._jobs.get(job.target) is job:
            del self._jobs[job.target]
        if self._ending.get(job.target) is task:
            del self._ending[job.target]
        job.close()
        if not task.cancelled() and task.exception() is None:
            self.registry.add(task.result())  # offered once pulled, whoever still follows

    def under_way(self) -> list[PullJob]:
        """The pulls under way (cancelled ones are not)."""
        return list(self._jobs.values())

    def job(self, name: str) -> PullJob:
        """The pull of ``name`` under way; ``ModelNotFound`` (404) if there is none."""
        with contextlib.suppress(ValueError, ModelNotFound):
            job = self._jobs.get(pull_target(name))
            if job is not None:
                return job
        raise _NoPull(name)

    def cancel(self, name: str) -> PullJob:
        """Cancel the pull of ``name``; its followers see it end in ``PullCancelled``. 404 if none runs."""
        job = self.job(name)
        job.cancel()
        del self._jobs[job.target]
        assert job.task is not None
        self._ending[job.target] = job.task
        return job

    async def forget(self, spec: ModelSpec) -> None:
        """Stop offering a model and delete its files if edge-run downloaded them (``models rm``).

        Raises:
            ModelUnavailable: it is in use (503, retry).
            InvalidRequest: it is a ``[[model]]`` table of config.toml (offered still).
        """
        await self.registry.remove(spec.id)  # first: a model in use is not deleted under its requests
        try:
            await asyncio.to_thread(self.files.remove, spec.id)
        except ValueError as exc:  # a [[model]] table: offered again, as it is still configured
            self.registry.add(spec)
            raise InvalidRequest(str(exc), param="model") from None
        except ModelNotFound:
            pass  # a model given to serve by path: it is no longer offered, and its file is the user's


class _NoPull(ModelNotFound):
    """A 404 as for an unknown model, saying that no pull of it runs."""

    def __init__(self, name: str) -> None:
        EdgeRunError.__init__(self, f"no pull of `{name}` is under way", param="model")
        self.model = name
