"""Settings: defaults < ``config.toml`` < ``EDGE_RUN_*`` environment < command-line flags."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from edge_run.atomic import write_atomically
from edge_run.paths import Paths

__all__ = [
    "ConfigError",
    "ModelConfig",
    "Settings",
    "UpstreamConfig",
    "append_table",
    "load_settings",
    "physical_cores",
]

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
KeepAlive = Annotated[int, msgspec.Meta(ge=-1, description="seconds; 0 unloads after each answer, -1 never")]
GiB = Annotated[float, msgspec.Meta(gt=0)]
Pooling = Literal["mean", "cls", "last", "rank"]
LISTS = ("allowed_hosts", "cors_origins", "preload")  # comma-separated in the environment


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A ``[[model]]`` table of ``config.toml``: a GGUF served under an id, with settings of its own."""

    id: str
    path: str
    ctx: Positive | None = None
    slots: Positive | None = None
    gpu_layers: NonNegative | None = None  # "auto" in the file
    chat_template: str | None = None  # a Jinja template that replaces the GGUF's own
    overflow: str | None = None  # an [[upstream]] id that takes requests when every slot and the queue are full
    rpc_servers: list[str] = []  # llama.cpp rpc-server workers (host:port) that hold part of the model
    pooling: Pooling | None = None  # how it embeds; default: the server's --pooling, else the model's own
    dimensions: list[Positive] = []  # a Matryoshka embedder's sizes: requests may ask for `dimensions` among them
    query_prefix: str = ""  # an embedder's instruction prefixes (nomic: "search_query: "), added on request
    document_prefix: str = ""
    mmproj: str | None = None  # a multimodal projector GGUF: the model takes images (and audio) as its mtmd reads them


class UpstreamConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An ``[[upstream]]`` table: an OpenAI-compatible server behind a local id. Several with one id are replicas."""

    id: str
    base_url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    api_key_env: str | None = None  # the NAME of an environment variable holding the upstream's key
    model: str | None = None  # the upstream's own id; default: the local one
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 600.0


class ConfigError(ValueError):
    """A setting could not be read; the message names the setting and its source."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Everything ``serve`` needs. Unknown keys are refused so typos do not pass silently.

    ``threads`` left as ``None`` is sized to the machine at load time, and so is ``gpu_layers``
    (``"auto"`` in files, flags and the environment): as many layers as the free GPU memory holds.
    ``device_sampling`` left as ``None`` samples inside the decode graph when the model is offloaded whole.
    ``preload`` names models (ids or GGUF paths) to load at start; the others load on their first request.
    ``model`` holds the ``[[model]]`` tables; ``memory_budget`` (GiB) left as ``None`` is sized to the machine.
    """

    host: str = "127.0.0.1"
    port: Port = 8080
    preload: list[str] = []
    model: list[ModelConfig] = []
    upstream: list[UpstreamConfig] = []
    keep_alive: KeepAlive = 300
    max_loaded: Positive = 2
    memory_budget: GiB | None = None
    ctx: Positive = 4096
    threads: Positive | None = None
    gpu_layers: NonNegative | None = None
    slots: Positive = 4
    max_queue: NonNegative = 64
    batch: Positive = 512
    auth: bool = True
    deterministic: bool = False  # no effect since answers never depend on neighbours: old configs still load
    draft_max: NonNegative = 8
    reasoning_format: Literal["auto", "none"] = "auto"  # none: a thinking model's thought stays in the content
    reasoning_budget: Annotated[int, msgspec.Meta(ge=-1)] = -1  # a thought's tokens at most; -1: no limit
    pooling: Pooling | None = None  # how models embed; None: each model's own (a chat model: mean)
    device_sampling: bool | None = None
    allow_image_urls: bool = False  # fetch images that requests name by http(s) URL (off: a 400)
    mmproj_offload: bool = True  # a model offloaded whole puts its projector on the GPU too
    allowed_hosts: list[str] = []
    cors_origins: list[str] = []
    max_body_bytes: Positive = 32 * 1024 * 1024  # a 10 MB photo as base64 is 13.4 MB
    metrics_public: bool = False
    ollama_no_key: bool = False  # Ollama's /api/* without a key (loopback hosts only): most of its clients send none
    log_format: Literal["json", "text"] = "json"
    drain_timeout: NonNegative = 30


FIELDS = Settings.__struct_fields__


def physical_cores() -> int:
    """Physical cores, never hyper-threads: llama.cpp slows down when threads share a core."""
    try:
        pairs = set()
        phys = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                phys = value.strip()
            elif key == "core id":
                core = value.strip()
                pairs.add((phys, core))
        if pairs:
            return len(pairs)
    except OSError:
        pass
    logical = os.cpu_count() or 1
    return max(1, logical // 2) if logical >= 8 else logical


def load_settings(
    paths: Paths,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the layers; ``None`` overrides mean "flag not given"."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    if paths.config_file.exists():
        try:
            merged.update(tomllib.loads(paths.config_file.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{paths.config_file}: {exc}") from exc
    for name in FIELDS:
        if name in ("model", "upstream"):  # tables: config.toml only
            continue
        value = env.get(f"EDGE_RUN_{name.upper()}")
        if value is not None and value != "":
            merged[name] = value
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for name in LISTS:
        if isinstance(merged.get(name), str):
            merged[name] = [v.strip() for v in merged[name].split(",") if v.strip()]
    if str(merged.get("gpu_layers", "")).strip().lower() == "auto":
        merged["gpu_layers"] = None
    for table in merged.get("model", []) if isinstance(merged.get("model"), list) else []:
        if isinstance(table, dict) and str(table.get("gpu_layers", "")).strip().lower() == "auto":
            table["gpu_layers"] = None
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc
    if settings.batch < 2 * settings.slots:  # each slot's token and a draft
        raise ConfigError(
            f"invalid setting: batch ({settings.batch}) must be at least twice slots ({2 * settings.slots})"
        )
    return settings


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def append_table(paths: Paths, name: str, table: Mapping[str, object]) -> None:
    """Add a ``[[name]]`` table to ``config.toml``, keeping the file as it was if the result does not load."""
    path = paths.config_file
    before = path.read_text() if path.exists() else None
    lines = [f"\n[[{name}]]"] + [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    write_atomically(path, ((before or "") + "\n".join(lines) + "\n").encode())
    try:
        load_settings(paths, environ={})
    except ConfigError as exc:
        if before is None:
            path.unlink()
        else:
            write_atomically(path, before.encode())
        raise ValueError(f"not added: {exc}") from None
