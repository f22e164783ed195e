"""What the library asks the Hugging Face Hub without downloading a model: a file's size, and its GGUF header.

A file's size comes from a ``HEAD`` of its ``resolve`` URL (huggingface_hub's ``get_hf_file_metadata``, which
follows the Hub's redirect and reads ``X-Linked-Size``). A header comes from ``Range`` requests for the file's
first bytes, as gpustack's gguf-parser reads one: 2 MiB first, doubled while the header runs past them (a large
vocabulary takes several MiB). ``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import httpx2
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import build_hf_headers

from edge_run.gguf import GgufLayout, HeaderIncomplete, read_header

if TYPE_CHECKING:
    from edge_run.models.catalog import CatalogEntry

__all__ = ["HubError", "HubUnreachable", "Moved", "check_entry", "hub_endpoint", "read_remote_header", "remote_size"]

FIRST_BYTES = 2 << 20
MOST_BYTES = 64 << 20  # a header longer than this is not a model the library would list
TIMEOUT = 10.0
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)$")


class HubError(RuntimeError):
    """The Hub answered something else than a file, or could not be reached (:class:`HubUnreachable`)."""


class HubUnreachable(HubError):
    """No answer from the Hub at all: no network, a wrong HF_ENDPOINT, a timeout."""


@dataclass(frozen=True, slots=True)
class Moved:
    """A library file that is not on the Hub as the catalog says."""

    entry: str
    file: str
    problem: str


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub's URL: ``endpoint``, else ``HF_ENDPOINT`` as set now, else huggingface_hub's default."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def remote_size(repo: str, filename: str, *, endpoint: str | None = None) -> int | None:
    """The file's size on the Hub (``main``), or None if the repo or the file is not there.

    Raises:
        HubError: the Hub could not be reached or answered an error.
    """
    hub = hub_endpoint(endpoint)
    url = hf_hub_url(repo, filename, endpoint=hub)
    try:
        meta = get_hf_file_metadata(url, endpoint=hub, timeout=TIMEOUT, library_name="edge-run")
    except (RemoteEntryNotFoundError, RepositoryNotFoundError):
        return None
    except HfHubHTTPError as exc:
        raise HubError(f"{hub} answered HTTP {exc.response.status_code} for {repo}/{filename}") from None
    except (httpx2.HTTPError, OSError) as exc:  # huggingface_hub's client raises its network errors as they are
        raise HubUnreachable(f"cannot reach {hub}: {exc}") from None
    return meta.size


def check_entry(entry: CatalogEntry, *, endpoint: str | None = None) -> list[Moved]:
    """What moved for an ``hf`` entry: its file or projector missing, or its file's size not the catalog's."""
    if entry.source is None:
        return []
    source, moved = entry.source, []
    size = remote_size(source.repo, source.file, endpoint=endpoint)
    if size is None:
        moved.append(Moved(entry.id, f"{source.repo}/{source.file}", "missing"))
    elif size != entry.size:
        moved.append(Moved(entry.id, f"{source.repo}/{source.file}", f"size {size}, the catalog says {entry.size}"))
    if source.mmproj and remote_size(source.repo, source.mmproj, endpoint=endpoint) is None:
        moved.append(Moved(entry.id, f"{source.repo}/{source.mmproj}", "missing"))
    return moved


def read_remote_header(
    repo: str, filename: str, *, endpoint: str | None = None, client: httpx.Client | None = None
) -> GgufLayout:
    """The GGUF header of a file on the Hub, read from its first bytes (``Range`` requests).

    Raises:
        HubError: the Hub could not be reached, refused, or the file is no GGUF whose header fits 64 MiB.
    """
    url = hf_hub_url(repo, filename, endpoint=hub_endpoint(endpoint))
    headers = build_hf_headers(library_name="edge-run")
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT, follow_redirects=True)
    try:
        want = FIRST_BYTES
        while True:
            data, total = _first_bytes(http, url, want, headers)
            try:
                return read_header(data, total)
            except HeaderIncomplete:
                if want >= MOST_BYTES or len(data) >= total:
                    raise HubError(f"{repo}/{filename}: its header is longer than {MOST_BYTES} bytes") from None
                want *= 2
            except ValueError as exc:
                raise HubError(f"{repo}/{filename}: {exc}") from None
    finally:
        if own:
            http.close()


def _first_bytes(client: httpx.Client, url: str, count: int, headers: dict[str, str]) -> tuple[bytes, int]:
    """The first ``count`` bytes of the file at ``url`` and its whole size (from ``Content-Range``)."""
    try:
        response = client.get(url, headers={**headers, "Range": f"bytes=0-{count - 1}"})
    except httpx.HTTPError as exc:
        raise HubUnreachable(f"cannot fetch {url}: {exc}") from None
    if response.status_code == 200:  # the server ignored Range: it sent the whole file
        return response.content, len(response.content)
    if response.status_code != 206:
        raise HubError(f"{url} answered HTTP {response.status_code}")
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if match is None:
        raise HubError(f"{url} answered 206 without a Content-Range giving the file's size")
    return response.content, int(match.group(1))
