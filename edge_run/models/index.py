"""A minimal client for a Python package index: find a pinned wheel and download it, without pip.

It speaks the simple repository API, as JSON (PEP 691) or HTML (PEP 503), so it works with
PyPI, its mirrors and private indexes (basic auth in the URL included). The index is
``PIP_INDEX_URL`` when set, as for pip; proxies come from the usual environment variables and
certificates from ``PIP_CERT``, ``SSL_CERT_FILE`` or ``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote, urldefrag, urljoin, urlsplit, urlunsplit

import httpx
import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_INDEX_URL",
    "PackageIndexError",
    "Wheel",
    "download",
    "find_wheel",
    "index_client",
    "index_url",
    "normalize",
    "redact",
]

DEFAULT_INDEX_URL = "https://pypi.org/simple"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, text/html;q=0.1"
CA_BUNDLE_VARS = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
CHUNK = 1 << 20


class PackageIndexError(RuntimeError):
    """The index has no such wheel, could not be reached, or served something else than it promised."""


class Wheel(msgspec.Struct, frozen=True):
    """A wheel file listed by the index; ``sha256`` is None when the index gives no hash."""

    filename: str
    url: str
    sha256: str | None


class _JsonFile(msgspec.Struct):
    filename: str
    url: str
    hashes: dict[str, str] = {}


class _JsonPage(msgspec.Struct):
    files: list[_JsonFile]


_json_page = msgspec.json.Decoder(_JsonPage)


def index_url(explicit: str | None = None) -> str:
    """The index to use: ``explicit``, else ``PIP_INDEX_URL``, else PyPI."""
    return explicit or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL


def index_client() -> httpx.Client:
    """An HTTP client that follows redirects and honours the proxy and certificate environment."""
    ca_bundle = next((os.environ[name] for name in CA_BUNDLE_VARS if os.environ.get(name)), None)
    verify: ssl.SSLContext | bool = True
    if ca_bundle is not None:
        where = Path(ca_bundle)
        if where.is_dir():
            verify = ssl.create_default_context(capath=where)
        else:
            verify = ssl.create_default_context(cafile=where)
    return httpx.Client(trust_env=True, follow_redirects=True, verify=verify, timeout=httpx.Timeout(60.0, connect=15.0))


def normalize(name: str) -> str:
    """A project name as PEP 503 normalises it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def find_wheel(client: httpx.Client, index: str, package: str, version: str) -> Wheel:
    """The pure-Python wheel of ``package==version`` listed on ``index``.

    Raises:
        PackageIndexError: the project page is missing or unreadable, or lists no such wheel.
    """
    project = normalize(package)
    page_url = f"{index.rstrip('/')}/{project}/"
    try:
        response = client.get(page_url, headers={"Accept": ACCEPT})
    except httpx.HTTPError as exc:
        raise PackageIndexError(f"cannot reach the package index at {redact(page_url)}: {exc}") from None
    if response.status_code == 404:
        raise PackageIndexError(f"{package} is not on the package index {redact(index)}")
    if response.is_error:
        raise PackageIndexError(f"the package index answered {response.status_code} for {redact(page_url)}")
    # Relative links resolve against the page as finally fetched; its userinfo carries over, so
    # files on the index's own host are fetched with the index's credentials.
    base = str(response.url)
    content_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if content_type == JSON_TYPE:
        try:
            files = [
                Wheel(f.filename, urljoin(base, f.url), f.hashes.get("sha256"))
                for f in _json_page.decode(response.content).files
            ]
        except msgspec.DecodeError as exc:
            raise PackageIndexError(f"{redact(page_url)} is not a valid PEP 691 page: {exc}") from None
    else:
        files = _html_links(response.text, base)
    for wheel in files:
        if _is_pure_wheel(wheel.filename, project, version):
            return wheel
    raise PackageIndexError(f"the package index {redact(index)} has no pure-Python wheel of {package}=={version}")


def download(
    client: httpx.Client, wheel: Wheel, out: IO[bytes], start: Callable[[int | None], Callable[[int], None]]
) -> None:
    """Stream ``wheel`` into ``out``, checking the index's sha256 if it gave one.

    ``start`` is called once with the size the server announces (None if it does not), and
    returns what to call with each chunk's length: a progress bar's hook.

    Raises:
        PackageIndexError: the download failed, or its hash differs from the index's.
    """
    digest = hashlib.sha256()
    try:
        with client.stream("GET", wheel.url) as response:
            if response.is_error:
                raise PackageIndexError(f"downloading {wheel.filename} failed: HTTP {response.status_code}")
            length = response.headers.get("content-length", "")
            advance = start(int(length) if length.isdigit() else None)
            for chunk in response.iter_bytes(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                advance(len(chunk))
    except httpx.HTTPError as exc:
        raise PackageIndexError(f"downloading {wheel.filename} from {redact(wheel.url)} failed: {exc}") from None
    actual = digest.hexdigest()
    if wheel.sha256 is not None and actual != wheel.sha256.lower():
        raise PackageIndexError(f"{wheel.filename} has sha256 {actual}, but the package index says {wheel.sha256}")


def _is_pure_wheel(filename: str, project: str, version: str) -> bool:
    if not filename.endswith(".whl"):
        return False
    # {name}-{version}(-{build})?-{python}-{abi}-{platform}.whl
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return False
    name, wheel_version, abi, platform = parts[0], parts[1], parts[-2], parts[-1]
    return normalize(name) == project and wheel_version == version and abi == "none" and platform == "any"


def _html_links(html: str, page_url: str) -> list[Wheel]:
    parser = _AnchorParser()
    parser.feed(html)
    parser.close()
    base = urljoin(page_url, parser.base) if parser.base else page_url
    wheels = []
    for href in parser.hrefs:
        url, fragment = urldefrag(urljoin(base, href))
        algorithm, _, value = fragment.partition("=")
        filename = unquote(urlsplit(url).path.rpartition("/")[2])
        wheels.append(Wheel(filename, url, value if algorithm == "sha256" and value else None))
    return wheels


class _AnchorParser(HTMLParser):
    """Collects the ``href`` of every anchor, and the page's ``<base href>`` if any."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if href is None:
            return
        if tag == "a":
            self.hrefs.append(href)
        elif tag == "base" and self.base is None:
            self.base = href
