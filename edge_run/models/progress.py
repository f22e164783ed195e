"""The download progress bars (rich, on stderr) that catalog fetches and Hugging Face pulls share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["transfer_bars"]


@contextlib.contextmanager
def transfer_bars(enabled: bool) -> Iterator[Progress | None]:
    """A rich ``Progress`` with transfer columns, to add one task per file; None when bars are off."""
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
