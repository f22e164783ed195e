"""The download progress bars (rich, on stderr) that catalog fetches and Hugging Face pulls share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["Board", "transfer_bars"]


class Board(Protocol):
    """What a download reports its progress to: rich's ``Progress``, or another (the API's pull events, which
    raise :class:`~edge_run.errors.PullCancelled` once the pull is cancelled: from the progress update, it unwinds
    the download, huggingface_hub's or the wheel fetcher's, which remove what they had written)."""

    def add_task(self, description: str, *, total: float | None = None, completed: int = 0) -> Any: ...

    def advance(self, task_id: Any, advance: float = 1) -> None: ...


@contextlib.contextmanager
def transfer_bars(enabled: bool | Board) -> Iterator[Board | None]:
    """A rich ``Progress`` with transfer columns, to add one task per file; None when bars are off. A
    :class:`Board` given instead is used as it is."""
    if not isinstance(enabled, bool):
        yield enabled
        return
    if not enabled:
        yield None
        return
    from rich.console import Console  # imported here: rich is only needed when a bar is shown
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True)) as board:
        yield board
