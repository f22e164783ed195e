"""Pull a GGUF model from the Hugging Face Hub: the backend of ``edge-run models pull hf:OWNER/REPO[:QUANT]``.

Downloads go through ``huggingface_hub`` into its own cache layout, so a pull honours ``HF_ENDPOINT`` (mirrors),
``HF_TOKEN`` (gated repos) and huggingface_hub's retries, which resume a cut transfer with a ``Range`` request.
huggingface_hub does not check what arrives against the sha256 the Hub lists for an LFS file; this module does,
and removes a file that fails from the cache.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx2  # huggingface_hub's HTTP client: its network errors are raised as they are
from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name

from edge_run.models.fetch import FetchError, sha256_file
from edge_run.models.progress import transfer_bars

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from huggingface_hub.hf_api import RepoSibling

    from edge_run.models.progress import Board

__all__ = [
    "HfRef", "PullError", "Pulled", "PulledFile", "parse_hf", "pick_files", "pick_projector", "pull", "quant_of",
]  # fmt: skip

DEFAULT_QUANTS = ("Q4_K_M", "Q4_0")  # what llama.cpp's ``-hf`` picks when no quant is named
LISTED_FILES = 20  # how many GGUF names an error message shows

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_REPO = re.compile(rf"{_NAME}/{_NAME}")
_QUANT_ARG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT = re.compile(r"(?<![A-Za-z0-9])((?:I|T)?Q\d+(?:_[A-Z0-9]+)+|B?F16|F32|MXFP4(?:_MOE)?)(?![A-Za-z0-9])", re.I)
_FORMS = "expected hf:OWNER/REPO, hf:OWNER/REPO:QUANT or hf:OWNER/REPO/FILE.gguf"


class PullError(FetchError):
    """A Hub pull failed or what arrived is not what the Hub says (a :class:`FetchError`, so that ``serve`` pulling a
    library model reports it as it reports any failed download)."""


@dataclass(frozen=True, slots=True)
class HfRef:
    """A model on the Hub, as named on the command line: a repo, and a quant or a file within it."""

    repo: str
    quant: str | None
    filename: str | None
    revision: str = "main"


@dataclass(frozen=True, slots=True)
class PulledFile:
    """One verified file in the huggingface_hub cache."""

    filename: str
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Pulled:
    """A pulled model: its files in load order (part 00001 first for a split GGUF)."""

    repo: str
    revision: str
    quant: str | None
    files: list[PulledFile]
    projector: PulledFile | None = None  # the repo's multimodal projector (``mmproj``), when it was asked for

    @property
    def path(self) -> Path:
        """The file to hand to llama.cpp."""
        return self.files[0].path


def parse_hf(spec: str) -> HfRef:
    """Parse ``hf:OWNER/REPO``, ``hf:OWNER/REPO:QUANT`` or ``hf:OWNER/REPO/[DIR/]FILE.gguf``.

    Raises:
        ValueError: the spec is none of these, with the reason.
    """

    def bad(why: str) -> ValueError:
        return ValueError(f"{spec!r} is not a Hugging Face model: {why} ({_FORMS})")

    if not spec.startswith("hf:"):
        raise bad("it does not start with 'hf:'")
    body = spec[3:]
    quant: str | None = None
    if ":" in body:
        body, quant = body.split(":", 1)
        if not quant:
            raise bad("the quant after ':' is empty")
        if not _QUANT_ARG.fullmatch(quant):
            raise bad(f"{quant!r} is not a quant name")
    parts = body.split("/")
    if len(parts) < 2 or not _REPO.fullmatch("/".join(parts[:2])):
        raise bad("it needs OWNER/REPO")
    repo, filename = "/".join(parts[:2]), ("/".join(parts[2:]) if len(parts) > 2 else None)
    if filename is not None:
        if quant is not None:
            raise bad("give a quant or a file, not both")
        if any(p in ("", ".", "..") for p in parts[2:]):
            raise bad(f"{filename!r} is not a file path in the repo")
        if not filename.lower().endswith(".gguf"):
            raise bad(f"{filename!r} is not a .gguf file")
    return HfRef(repo=repo, quant=quant, filename=filename)


def quant_of(filename: str) -> str | None:
    """The quantization named in a GGUF file name (``Q4_K_M``, ``IQ4_XS``, ``BF16`` …), upper-cased, or None."""
    name = filename.rsplit("/", 1)[-1]
    split = _SPLIT.search(name)
    stem = name[: split.start()] if split else re.sub(r"\.gguf$", "", name, flags=re.I)
    found = _QUANT.findall(stem)
    return found[-1].upper() if found else None


def pick_files(ref: HfRef, files: Sequence[str]) -> list[str]:
    """Choose which of the repo's files to fetch for ``ref``, all parts of a split GGUF in order.

    With neither a quant nor a file, pick as llama.cpp's ``-hf`` does: Q4_K_M, else Q4_0, else the first GGUF;
    vision projectors (``mmproj``) are never picked by quant or default.

    Raises:
        PullError: no file matches, or a part of a split GGUF is missing.
    """
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if ref.filename is not None:
        if ref.filename not in files:
            raise PullError(f"{ref.repo} has no file {ref.filename!r}; its GGUF files: {_listing(ggufs)}")
        return _with_parts(ref, ref.filename, files)
    models = [f for f in ggufs if "mmproj" not in f.rsplit("/", 1)[-1].lower()]
    if not models:
        raise PullError(f"{ref.repo} has no GGUF model files; its GGUF files: {_listing(ggufs)}")
    if ref.quant is not None:
        chosen = _first_with_quant(models, ref.quant)
        if chosen is None:
            raise PullError(f"{ref.repo} has no GGUF file for quant {ref.quant}; its GGUF files: {_listing(models)}")
        return _with_parts(ref, chosen, files)
    for quant in DEFAULT_QUANTS:
        chosen = _first_with_quant(models, quant)
        if chosen is not None:
            return _with_parts(ref, chosen, files)
    return _with_parts(ref, models[0], files)


def pick_projector(files: Sequence[str]) -> str | None:
    """The repo's multimodal projector, as llama.cpp's ``-hf`` takes one along: an ``mmproj`` GGUF, the F16 one
    first (then BF16, Q8_0, else the first by name)."""
    projectors = sorted(f for f in files if f.lower().endswith(".gguf") and "mmproj" in f.rsplit("/", 1)[-1].lower())
    for quant in ("F16", "BF16", "Q8_0"):
        if (chosen := _first_with_quant(projectors, quant)) is not None:
            return chosen
    return projectors[0] if projectors else None


def pull(
    ref: HfRef,
    cache_dir: Path,
    *,
    token: str | None = None,
    progress: bool | Board = True,
    endpoint: str | None = None,
    with_projector: bool = False,
) -> Pulled:
    """Download the files ``ref`` names into ``cache_dir`` (huggingface_hub's cache layout) and verify them.

    Files already in the cache for the resolved commit are not downloaded again, nor hashed again unless their size
    is wrong: a blob is named by its sha256, and one this module fetched was hashed when it arrived.

    Args:
        ref: what to pull.
        cache_dir: huggingface_hub cache root (``blobs/``, ``snapshots/`` and ``refs/`` per repo).
        token: a Hub token; None lets huggingface_hub look (``HF_TOKEN``, then a stored login).
        progress: show progress bars on stderr; False prints nothing.
        endpoint: the Hub's URL; None means ``HF_ENDPOINT`` as set now, else huggingface_hub's default.
        with_projector: also pull the repo's projector (:func:`pick_projector`), unless ``ref`` names one file.

    Raises:
        PullError: the Hub could not be reached or refused, nothing matches, or a file's sha256 is wrong.
    """
    hub = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    cache_dir = cache_dir.expanduser()
    with _hub_errors(ref, hub):
        info = HfApi(endpoint=hub, token=token, library_name="edge-run").model_info(
            ref.repo, revision=ref.revision, files_metadata=True
        )
    if info.sha is None:
        raise PullError(f"{hub} did not say which commit {ref.repo}@{ref.revision} is")
    commit = info.sha
    siblings = {s.rfilename: s for s in info.siblings or []}
    names = pick_files(ref, list(siblings))
    projector = pick_projector(list(siblings)) if with_projector and ref.filename is None else None
    pulled: list[PulledFile] = []
    with _bars(progress) as bar_for:
        for name in [*names, *([projector] if projector else [])]:  # the projector too, checked the same way
            pulled.append(_pull_file(ref, siblings[name], commit, cache_dir, hub, token, bar_for(name)))
    _record_ref(cache_dir, ref, commit)
    files, extra = (pulled[:-1], pulled[-1]) if projector else (pulled, None)
    return Pulled(repo=ref.repo, revision=commit, quant=quant_of(names[0]), files=files, projector=extra)


def _first_with_quant(names: Sequence[str], quant: str) -> str | None:
    token = re.compile(rf"(?:^|(?<=[-._/])){re.escape(quant)}(?=[-./]|$)", re.IGNORECASE)
    return next((n for n in names if token.search(n)), None)


def _with_parts(ref: HfRef, chosen: str, files: Sequence[str]) -> list[str]:
    split = _SPLIT.search(chosen)
    if split is None:
        return [chosen]
    stem, count, ext = chosen[: split.start()], int(split.group(2)), chosen[-len(".gguf") :]
    parts = [f"{stem}-{i:05d}-of-{count:05d}{ext}" for i in range(1, count + 1)]
    present = set(files)
    missing = [p for p in parts if p not in present]
    if missing:
        raise PullError(f"{ref.repo} lacks part(s) of split model {parts[0]}: {', '.join(missing)}")
    return parts


def _listing(names: Sequence[str]) -> str:
    if not names:
        return "none"
    more = len(names) - LISTED_FILES
    return ", ".join(names[:LISTED_FILES]) + (f" … ({more} more)" if more > 0 else "")


def _pull_file(
    ref: HfRef, sibling: RepoSibling, commit: str, cache_dir: Path, hub: str, token: str | None, bar: type[_Bar]
) -> PulledFile:
    """Download one file (unless cached), check it against the Hub's LFS sha256, evict it if wrong."""
    name = sibling.rfilename
    if sibling.lfs is None:
        raise PullError(f"{ref.repo}/{name} is not an LFS file on the Hub, so there is no sha256 to check it against")
    expected, size = sibling.lfs.sha256, sibling.lfs.size
    cached = try_to_load_from_cache(ref.repo, name, cache_dir=cache_dir, revision=commit)
    try:
        with _hub_errors(ref, hub, name):
            local = Path(
                hf_hub_download(
                    ref.repo,
                    name,
                    revision=commit,
                    cache_dir=cache_dir,
                    token=token,
                    endpoint=hub,
                    library_name="edge-run",
                    tqdm_class=cast(Any, bar),
                )
            )
    except BaseException:  # a failure, or a cancel raised from the progress bar (PullCancelled)
        _tidy(cache_dir / repo_folder_name(repo_id=ref.repo, repo_type="model"), expected, commit, name)
        raise
    if not isinstance(cached, str) or local.stat().st_size != size:
        actual = sha256_file(local)
        if actual != expected:
            _evict(local)
            raise PullError(f"{ref.repo}/{name} has sha256 {actual}, but the Hub says {expected}; refusing it")
    return PulledFile(filename=name, path=local, sha256=expected, size=size)


def _tidy(folder: Path, sha256: str, commit: str, name: str) -> None:
    """What a download that did not finish leaves in the repo's cache folder, removed: huggingface_hub removes its
    unique ``.incomplete`` file itself, older versions leave ``blobs/SHA256.incomplete``; the snapshot link only if
    its blob is not there, and the folders it created if they are empty. Another pull's files are left alone."""
    (folder / "blobs" / f"{sha256}.incomplete").unlink(missing_ok=True)
    link = folder / "snapshots" / commit / name
    if link.is_symlink() and not link.exists():
        link.unlink()
    snapshot_dirs = [p for p in link.parents if p.is_relative_to(folder / "snapshots")]  # deepest first
    for created in (*snapshot_dirs, folder / "blobs", folder):
        with contextlib.suppress(OSError):  # not empty (or not there): kept
            created.rmdir()


def _evict(pointer: Path) -> None:
    """Remove a snapshot entry and the blob it points to."""
    blob = pointer.resolve()
    pointer.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _record_ref(cache_dir: Path, ref: HfRef, commit: str) -> None:
    # Downloads are pinned to the commit, so huggingface_hub writes no ref: record which commit the branch or tag
    # named, as its own downloads do, for offline lookups (``try_to_load_from_cache(..., revision="main")``).
    if ref.revision == commit:
        return
    ref_file = cache_dir / repo_folder_name(repo_id=ref.repo, repo_type="model") / "refs" / ref.revision
    ref_file.parent.mkdir(parents=True, exist_ok=True)
    ref_file.write_text(commit)


def _one_line(exc: BaseException | str) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def _hub_errors(ref: HfRef, hub: str, filename: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's and the network's errors into one-line PullErrors."""
    what = f"{ref.repo}/{filename}" if filename else f"{ref.repo}@{ref.revision}"
    try:
        yield
    except GatedRepoError:
        msg = f"{ref.repo} is gated: accept its terms on the Hub, then set HF_TOKEN to a token that has access"
        raise PullError(msg) from None
    except RepositoryNotFoundError:
        raise PullError(f"no model repo {ref.repo} on {hub} (if it is private or gated, set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise PullError(f"{ref.repo} has no revision {ref.revision!r} on {hub}") from None
    except RemoteEntryNotFoundError:
        raise PullError(f"{what} is not on {hub}") from None
    except LocalEntryNotFoundError as exc:
        # huggingface_hub's "not cached and the HEAD failed": the real reason is the cause.
        raise PullError(f"cannot fetch {what} from {hub}: {_one_line(exc.__cause__ or exc)}") from None
    except HfHubHTTPError as exc:
        detail = _one_line(exc.server_message or exc.response.reason_phrase)
        raise PullError(f"{hub} answered HTTP {exc.response.status_code} for {what}: {detail}") from None
    except (httpx2.HTTPError, OSError) as exc:
        raise PullError(f"fetching {what} from {hub} failed: {_one_line(exc)}") from None


class _Bar:
    """tqdm's interface, as much of it as huggingface_hub's downloads use, drawing nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: float | None = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _bars(enabled: bool | Board) -> Iterator[Callable[[str], type[_Bar]]]:
    """Yield ``bar_for(filename)``: a tqdm stand-in class for huggingface_hub, silent or a rich bar on stderr."""
    with transfer_bars(enabled) as board:
        if board is None:
            yield lambda _name: _Bar
            return
        shown = board  # narrowed: the classes below keep it

        def bar_for(name: str) -> type[_Bar]:
            class RichBar(_Bar):
                def __init__(self, *args: Any, total: float | None = None, initial: float = 0, **kwargs: Any) -> None:
                    self._task = shown.add_task(name, total=total, completed=int(initial))

                def update(self, n: float | None = 1) -> None:
                    shown.advance(self._task, n or 0)

            return RichBar

        yield bar_for
