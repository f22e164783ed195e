"""The library: the catalog's hf entries, Ollama names, pulls, check-library, search's header cache and verdicts.

Everything on the network is the local Hub fixture (tests/hf_fixture.py); nothing reaches huggingface.co.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest
from click.testing import CliRunner
from huggingface_hub import constants
from litestar.testing import TestClient

from edge_run.api.app import create_app
from edge_run.cli import main
from edge_run.gguf import HeaderIncomplete, read_header, read_layout
from edge_run.models.catalog import CAPABILITIES, Catalog, CatalogEntry, HfSource, load_catalog, parse_catalog
from edge_run.models.hub import read_remote_header
from edge_run.models.inventory import find_spec, inventory, lookup, remove_model
from edge_run.models.library import FITS_GPU, FITS_RAM, TOO_BIG, HeaderCache, Library, Machine, Sizing, fit
from edge_run.paths import Paths
from edge_run.server import app_services
from tests.fakes import fake_registry
from tests.hf_fixture import HubFixture

if TYPE_CHECKING:
    from collections.abc import Iterator

GIB = 1 << 30
REPO = "acme/SmolLM2-GGUF"
FILE = "smol-Q4_1.gguf"
DEAD_ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def no_real_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A temp edge-run home, no token, and an endpoint where nothing answers unless a test starts the fixture."""
    monkeypatch.setenv("EDGE_RUN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_ENDPOINT", DEAD_ENDPOINT)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, model_path: Path) -> Iterator[HubFixture]:
    """The Hub serving the test model (a real GGUF) and a projector beside it."""
    repos = {REPO: {FILE: model_path.read_bytes(), "mmproj-smol-F16.gguf": b"GGUF-projector"}}
    with HubFixture(repos) as fixture:
        monkeypatch.setenv("HF_ENDPOINT", fixture.url)
        yield fixture


def entry_for(size: int, *, file: str = FILE, mmproj: str = "", id: str = "smol", **more: object) -> CatalogEntry:
    return CatalogEntry(
        id=id,
        size=size,
        source=HfSource(kind="hf", repo=REPO, file=file, mmproj=mmproj),
        capabilities=more.pop("capabilities", ["chat"]),  # type: ignore[arg-type]
        params=134_500_000,
        context=8192,
        license="apache-2.0",
        **more,  # type: ignore[arg-type]
    )


def catalog_with(*entries: CatalogEntry) -> Catalog:
    shipped = load_catalog()
    return Catalog(default=shipped.default, model=[shipped.default_entry, *entries])


# -- the shipped library ------------------------------------------------------------------------


def test_the_library_is_valid_and_big_enough() -> None:
    catalog = load_catalog()
    hf = [e for e in catalog.model if e.source is not None]
    assert len(hf) >= 20
    assert {c for e in hf for c in e.capabilities} >= {"tools", "thinking", "vision", "embedding", "rerank", "code"}
    for entry in catalog.model:
        assert set(entry.capabilities) <= set(CAPABILITIES), entry.id
    for entry in hf:
        assert entry.source is not None and entry.capabilities and entry.params and entry.context and entry.license
        assert not entry.sha256, f"{entry.id}: an hf entry's integrity is the Hub's LFS sha256, checked at pull"
        if "vision" in entry.capabilities:
            assert entry.source.mmproj, f"{entry.id} sees images: it needs its projector"
    names = [n for e in catalog.model for n in e.ollama]
    assert len(names) == len(set(names))
    nomic = catalog.get("nomic-embed-text")
    assert nomic is not None and nomic.dimensions == [768, 512, 256, 128, 64]
    assert (nomic.query_prefix, nomic.document_prefix) == ("search_query: ", "search_document: ")


def test_every_library_entry_has_a_source_comment_above_it() -> None:
    text = (resources.files("edge_run.models") / "catalog.toml").read_text(encoding="utf-8")
    blocks = re.split(r"^\[\[model\]\]$", text, flags=re.M)
    ids = [re.search(r'^id = "([^"]+)"', b, flags=re.M) for b in blocks[1:]]
    assert len(ids) == len(tomllib.loads(text)["model"])
    for before, found in zip(blocks, ids, strict=False):
        comment = [line for line in before.strip().splitlines() if line.startswith("#")]
        assert found is not None
        assert comment and "Source:" in " ".join(comment[-6:]), f"{found.group(1)} has no source comment above it"


def test_the_schema_refuses_what_an_hf_entry_must_not_or_must_say() -> None:
    base = 'default = "x"\n[[model]]\nid = "x"\nsize = 1\nsource = {kind = "hf", repo = "a/b", file = "m.gguf"}\n'
    with pytest.raises(msgspec.ValidationError, match="needs `capabilities`"):
        parse_catalog(base)
    good = 'capabilities = ["chat"]\nparams = 1\ncontext = 1\nlicense = "mit"\n'
    assert parse_catalog(base + good).default_entry.filename == "m.gguf"
    with pytest.raises(msgspec.ValidationError, match="no `file`, `sha256` or `parts`"):
        parse_catalog(base + good + f'sha256 = "{"a" * 64}"\n')
    with pytest.raises(msgspec.ValidationError, match="capabilities"):
        parse_catalog(base + good.replace('"chat"', '"telepathy"'))
    with pytest.raises(msgspec.ValidationError, match="Ollama names must be unique"):
        twice = base + good + 'ollama = ["m:1b"]\n' + base.split("\n", 1)[1].replace('"x"', '"y"') + good
        parse_catalog(twice + 'ollama = ["m:1b"]\n')


def test_ollama_names_resolve_to_their_entry() -> None:
    catalog = load_catalog()
    four = catalog.get("qwen3:4b")
    assert four is not None and four.id == "qwen3-4b"
    assert catalog.get("qwen3") is catalog.get("qwen3:latest") is catalog.get("qwen3-8b")
    assert catalog.get("QWEN3:4B") is four
    assert catalog.get("qwen3:13b") is None
    with pytest.raises(Exception, match="qwen3:4b"):
        lookup("qwen3:4b", [], catalog)  # not downloaded, and nowhere to download it to


# -- pulls ---------------------------------------------------------------------------------------


def test_an_hf_entry_is_pulled_by_its_ollama_name_then_served_and_removed(hub: HubFixture, model_path: Path) -> None:
    entry = entry_for(model_path.stat().st_size, mmproj="mmproj-smol-F16.gguf", ollama=["smol:135m"])
    catalog = catalog_with(entry)
    paths = Paths.resolve()

    spec = lookup("smol:135m", [], catalog, download_to=paths.models_dir)

    assert spec.id == "smol" and spec.source == "catalog"
    assert spec.path.read_bytes() == model_path.read_bytes()
    assert str(spec.path).startswith(str(paths.hf_cache))
    assert len(hub.gets_of(REPO, "mmproj-smol-F16.gguf")) == 1  # the projector came with it
    # found again without the network: offered by `serve`, resolved by its Ollama name
    specs = inventory(paths, catalog, [])
    assert [s.id for s in specs if s.id == "smol"] == ["smol"]
    gets = len(hub.gets_of(REPO, FILE))
    assert lookup("smol:135m", specs, catalog, download_to=paths.models_dir).path == spec.path
    assert len(hub.gets_of(REPO, FILE)) == gets


def test_models_pull_takes_an_ollama_name(hub: HubFixture, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = entry_for(model_path.stat().st_size, ollama=["smol:135m"])
    catalog = catalog_with(entry)
    monkeypatch.setattr("edge_run.models.catalog.load_catalog", lambda: catalog)
    monkeypatch.setattr("edge_run.models.inventory.load_catalog", lambda: catalog)

    done = CliRunner().invoke(main, ["models", "pull", "smol:135m"])

    assert done.exit_code == 0, done.output
    assert "`smol` ->" in done.output
    paths = Paths.resolve()
    spec = find_spec("smol", paths, [])
    assert spec.path.read_bytes() == model_path.read_bytes()
    deleted = remove_model("smol", paths, [])
    assert deleted == [spec.path] and not spec.path.exists()


# -- check-library -------------------------------------------------------------------------------


def test_check_library_reports_what_moved(hub: HubFixture, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = model_path.stat().st_size
    right = entry_for(size, id="right", mmproj="mmproj-smol-F16.gguf")
    resized = entry_for(size + 1, id="resized")
    gone = entry_for(size, id="gone", file="gone-Q4_0.gguf")
    catalog = catalog_with(right, resized, gone)
    monkeypatch.setattr("edge_run.models.catalog.load_catalog", lambda: catalog)

    done = CliRunner().invoke(main, ["models", "check-library"])

    assert done.exit_code == 1, done.output
    assert f"resized: {REPO}/{FILE}: size {size}, the catalog says {size + 1}" in done.output
    assert f"gone: {REPO}/gone-Q4_0.gguf: missing" in done.output
    assert "right:" not in done.output
    assert "2 library file(s) moved" in done.output

    monkeypatch.setattr("edge_run.models.catalog.load_catalog", lambda: catalog_with(right))
    done = CliRunner().invoke(main, ["models", "check-library"])
    assert done.exit_code == 0, done.output
    assert "all 1 library models" in done.output


# -- headers over Range requests, and the cache ---------------------------------------------------


def test_the_header_from_the_first_bytes_equals_the_whole_file_read(model_path: Path) -> None:
    data = model_path.read_bytes()
    with pytest.raises(HeaderIncomplete):
        read_header(data[: 1 << 20], len(data))
    assert read_header(data[: 4 << 20], len(data)) == read_layout(model_path)


def test_the_header_is_read_over_range_requests_growing_until_it_fits(
    hub: HubFixture, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge_run.models.hub.FIRST_BYTES", 256 << 10)

    layout = read_remote_header(REPO, FILE)

    assert layout == read_layout(model_path)
    ends = [int(h["range"].rsplit("-", 1)[1]) + 1 for h in hub.gets_of(REPO, FILE)]
    assert ends == [256 << 10, 512 << 10, 1 << 20, 2 << 20]  # SmolLM2's header ends between 1 and 2 MiB
    assert ends[-1] < model_path.stat().st_size


def test_search_reads_a_header_once_then_from_the_cache(
    hub: HubFixture, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = catalog_with(entry_for(model_path.stat().st_size, id="tinytest"))
    monkeypatch.setattr("edge_run.models.catalog.load_catalog", lambda: catalog)
    search = ["models", "search", "tinytest", "--ram", "1", "--gpu", "0"]

    first = CliRunner().invoke(main, search)
    assert first.exit_code == 0, first.output
    assert len(hub.gets_of(REPO, FILE)) == 1
    second = CliRunner().invoke(main, search)
    assert second.exit_code == 0, second.output
    assert len(hub.gets_of(REPO, FILE)) == 1  # from the cache
    assert "fits in RAM" in second.output and "unknown" not in second.output
    cached = HeaderCache(Paths.resolve().library_cache).get(catalog.model[1])
    assert cached == read_layout(model_path)


def test_search_without_network_or_cache_still_lists_by_file_size(monkeypatch: pytest.MonkeyPatch) -> None:
    done = CliRunner().invoke(main, ["models", "search", "qwen3", "-c", "thinking", "--ram", "16", "--gpu", "0"])

    assert done.exit_code == 0, done.output
    assert "qwen3-4b" in done.output and "qwen3-embedding" not in done.output
    assert "context estimate unknown" in done.output
    assert "out of reach" in done.output


# -- verdicts -------------------------------------------------------------------------------------


def test_verdicts_for_a_machine_passed_in(model_path: Path) -> None:
    layout = read_layout(model_path)
    size = model_path.stat().st_size
    entry = entry_for(size)
    sizing = Sizing(ctx=4096, slots=4)
    need = size + layout.kv_bytes(4096 * 4)

    assert fit(entry, layout, Machine(ram=need, gpu=need), sizing).verdict == FITS_GPU
    assert fit(entry, layout, Machine(ram=need, gpu=need - 1), sizing).verdict == FITS_RAM
    row = fit(entry, layout, Machine(ram=need - 1), sizing)
    assert (row.verdict, row.memory, row.kv_known) == (TOO_BIG, need, True)
    assert row.max_ctx == 4096 - 256  # in steps of 256 tokens
    assert size + layout.kv_bytes(row.max_ctx * 4) <= need - 1
    assert fit(entry, layout, Machine(ram=size - 1), sizing).max_ctx == 0
    unknown = fit(entry, None, Machine(ram=size), sizing)
    assert (unknown.verdict, unknown.memory, unknown.kv_known, unknown.max_ctx) == (FITS_RAM, size, False, None)


def test_an_embedder_holds_one_batch_not_every_slot(model_path: Path) -> None:
    layout = read_layout(model_path)
    entry = entry_for(1000, capabilities=["embedding"])
    row = fit(entry, layout, Machine(ram=10 * GIB), Sizing(ctx=2048, slots=4, batch=512))
    assert row.memory == 1000 + layout.kv_bytes(2048)


# -- GET /v1/library -------------------------------------------------------------------------------


def test_the_library_route_reads_only_the_cache(tmp_path: Path, model_path: Path) -> None:
    entry = entry_for(model_path.stat().st_size)
    catalog = catalog_with(entry)
    cache = HeaderCache(tmp_path / "headers.json")
    cache.put(entry, read_layout(model_path))
    library = Library(catalog, cache, Machine(ram=8 * GIB), Sizing())
    app = create_app(app_services(fake_registry(), None, library=library))

    with TestClient(app, base_url="http://127.0.0.1") as client:
        body = client.get("/v1/library").json()

    rows = {row["id"]: row for row in body["data"]}
    assert rows["smol"]["kv_known"] is True and rows["smol"]["verdict"] == FITS_RAM
    assert rows["smol"]["memory"] == entry.size + read_layout(model_path).kv_bytes(4096 * 4)
    default = rows[catalog.default]
    assert default["kv_known"] is False and default["repo"] is None
