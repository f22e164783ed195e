"""GGUF header reading: the tensor table and the metadata that size a model's layers and KV cache.

Read without llama.cpp, so that ``edge_run.models`` and the memory plan (``edge_run.engine.placement``)
can size a file before, or without, loading it.
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from edge_run.errors import EngineFailure

__all__ = ["POOLINGS", "GgufLayout", "HeaderIncomplete", "projector_inputs", "read_header", "read_layout"]

# llama.cpp's pooling types (``llama_pooling_type``), by the names ``--pooling`` takes
POOLINGS = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
# architectures that only encode: they embed or score, and cannot write a token
_ENCODERS = frozenset({
    "bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2", "jina-bert-v3",
    "eurobert", "gemma-embedding", "t5encoder", "llama-embed",
})  # fmt: skip

# GGUF metadata value types: struct format of the scalars; 8 is a string, 9 an array
_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_SCALARS = {kind: struct.Struct(fmt) for kind, fmt in _FORMATS.items()}
_U32, _U64 = _SCALARS[4], _SCALARS[10]
_STRING, _ARRAY = 8, 9
# ggml tensor types -> (elements per block, bytes per block): enough to find where the last tensor ends
_TYPE_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip
# ``general.file_type`` (llama.cpp's llama_ftype) -> its usual name
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class GgufLayout:
    """What the memory plan needs from a GGUF file."""

    n_layer: int
    layer_bytes: tuple[int, ...]  # weights of each repeating layer (``blk.N.*``), in order
    output_bytes: int  # the output layer: norm and projection (a copy of the embeddings when tied)
    kv_bytes_per_token: int  # K and V of one token in one layer, at f16
    n_vocab: int
    n_embd: int
    # what `models show` prints
    architecture: str = ""
    name: str = ""
    file_type: int | None = None
    context_length: int = 0  # trained context
    n_params: int = 0
    has_chat_template: bool = False
    chat_template: str = ""  # ``tokenizer.chat_template``: its Jinja source (Ollama's /api/show shows it)
    pooling: int | None = None  # ``{arch}.pooling_type``: written for embedding and reranker models
    tensor_types: frozenset[int] = frozenset()  # the ggml types of its tensors (which CPU kernels it takes)

    @property
    def kind(self) -> str:
        """``chat``; ``embedding`` for a model that only embeds; ``rerank`` for one that scores pairs."""
        if self.pooling == POOLINGS["rank"]:
            return "rerank"
        if self.architecture in _ENCODERS or (self.pooling or 0) > 0:
            return "embedding"
        return "chat"

    @property
    def quant(self) -> str:
        return _quant_name(self.file_type)

    def kv_bytes(self, tokens: int) -> int:
        """The KV cache of ``tokens`` tokens in every layer (``ctx x slots`` for a server)."""
        return self.kv_bytes_per_token * self.n_layer * tokens


class HeaderIncomplete(ValueError):
    """The bytes given end inside the header: fetch more of the file (:func:`read_header`)."""


def _quant_name(file_type: int | None) -> str:
    """``general.file_type``'s usual name (Q4_K_M...), or ``?`` when unknown."""
    return "?" if file_type is None else _FILE_TYPES.get(file_type, f"type {file_type}")


def read_layout(path: Path) -> GgufLayout:
    """Read a GGUF file's tensor table and the metadata that sizes its layers and KV cache.

    Each version of a file is read once per process (``serve`` sizes, places and loads a model: three asks)."""
    try:
        stat = path.stat()
        return _read_file(path, stat.st_size, stat.st_mtime_ns)
    except (OSError, struct.error, UnicodeDecodeError, KeyError, ValueError) as exc:
        raise EngineFailure(f"could not read the GGUF layout of {path.name}: {exc}") from exc


def projector_inputs(path: Path) -> tuple[str, ...]:
    """What a model with this multimodal projector (an ``mmproj`` GGUF) takes: text, and images or audio as its
    ``clip.has_vision_encoder`` and ``clip.has_audio_encoder`` say."""
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] != b"GGUF":
                raise ValueError("not a GGUF file")
            r = _Reader(data)
            r.pos = 4
            r.unpack(_U32)
            r.count()
            meta: dict[str, object] = {}
            for _ in range(r.length(r.count(), 12)):
                key = r.string()
                meta[key] = r.value(r.count(_U32))
    except (OSError, struct.error, UnicodeDecodeError, KeyError, ValueError) as exc:
        raise EngineFailure(f"could not read the projector {path.name}: {exc}") from exc
    if meta.get("general.architecture") != "clip":
        raise EngineFailure(f"{path.name} is not a multimodal projector (an mmproj GGUF, architecture `clip`)")
    vision, audio = meta.get("clip.has_vision_encoder"), meta.get("clip.has_audio_encoder")
    return ("text",) + ("image",) * bool(vision) + ("audio",) * bool(audio)


def read_header(data: bytes, file_size: int) -> GgufLayout:
    """The layout from the first bytes of a GGUF file of ``file_size`` bytes (a Range request's answer).

    Equal to :func:`read_layout` of the whole file whenever ``data`` holds the whole header.

    Raises:
        HeaderIncomplete: ``data`` ends before the header does; ask again with more.
        ValueError: it is not a GGUF file, or its header is corrupt.
    """
    try:
        return _read(_Reader(data, file_size))
    except HeaderIncomplete:
        raise
    except (struct.error, UnicodeDecodeError, KeyError, ValueError) as exc:
        raise ValueError(f"could not read the GGUF header: {exc}") from exc


@functools.lru_cache(maxsize=32)
def _read_file(path: Path, size: int, mtime_ns: int) -> GgufLayout:
    """``size`` and ``mtime_ns`` key the cache: a file replaced or rewritten is read again."""
    if size < 4:
        raise ValueError("not a GGUF file")
    with path.open("rb") as f:
        # mapped, not read: only the header's pages are touched, and the vocabulary's 10^5 strings are
        # skipped by arithmetic on their lengths rather than one file call each
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _read(_Reader(data))


class _Reader:
    """GGUF's little-endian values, read from a file's bytes whose lengths are checked against its size.

    ``data`` is the whole file, or its first bytes when ``size`` (the whole file's) is larger: reading past
    them raises :class:`HeaderIncomplete`, a length past ``size`` is corrupt.
    """

    def __init__(self, data: mmap.mmap | bytes, size: int | None = None) -> None:
        self.data = data
        self.size = len(data) if size is None else size
        self.pos = 0

    def _short(self) -> ValueError:
        if len(self.data) < self.size:
            return HeaderIncomplete(f"the header runs past the first {len(self.data)} bytes")
        return ValueError("truncated file")

    def unpack(self, fmt: struct.Struct) -> int | float | bool:
        if self.pos + fmt.size > len(self.data):
            raise self._short()
        value = fmt.unpack_from(self.data, self.pos)[0]
        self.pos += fmt.size
        return value  # type: ignore[no-any-return]

    def count(self, fmt: struct.Struct = _U64) -> int:
        return int(self.unpack(fmt))

    def length(self, count: int, size: int = 1) -> int:
        """A length read from the file, refused if it runs past the file's end (a corrupt header)."""
        if count * size > self.size - self.pos:
            raise ValueError(f"corrupt: a length of {count} runs past the end of the file")
        return count

    def skip(self, n: int) -> None:
        self.pos += self.length(n)

    def string(self) -> str:
        n = self.length(self.count())
        if self.pos + n > len(self.data):
            raise self._short()
        self.pos += n
        return self.data[self.pos - n : self.pos].decode("utf-8")

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` strings (a vocabulary: tens of thousands), checking each length as ``string`` does."""
        data, pos, end = self.data, self.pos, len(self.data)
        for _ in range(count):
            if pos + 8 > end:
                raise self._short()
            n = _U64.unpack_from(data, pos)[0]
            if n > self.size - pos - 8:
                raise ValueError(f"corrupt: a length of {n} runs past the end of the file")
            pos += 8 + n
        self.pos = pos

    def value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.count(_U32), self.length(self.count())
            if count <= 64:
                return [self.value(item) for _ in range(count)]
            # long arrays (the vocabulary, its scores and merges): only their length is needed
            if item in _SCALARS:
                self.skip(_SCALARS[item].size * count)
            elif item == _STRING:
                self.skip_strings(count)
            else:
                for _ in range(count):
                    self.value(item)
            return count
        raise ValueError(f"unknown metadata type {kind}")


def _read(r: _Reader) -> GgufLayout:
    if r.data[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    r.pos = 4
    version = r.unpack(_U32)
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    n_tensors, n_kv = r.length(r.count(), 24), r.length(r.count(), 12)  # the least each one takes
    meta: dict[str, object] = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = r.value(r.count(_U32))
    tensors: list[tuple[str, int]] = []
    n_params = 0
    types: set[int] = set()
    last = (-1, 0, 0)  # (offset, type, elements) of the tensor that lies last in the file
    for _ in range(n_tensors):
        name = r.string()
        elements = 1
        for _ in range(r.count(_U32)):
            elements *= r.count()
        n_params += elements
        kind = r.count(_U32)
        types.add(kind)
        offset = r.count()
        tensors.append((name, offset))
        last = max(last, (offset, kind, elements))
    if not tensors:
        raise ValueError("it has no tensors (a vocabulary-only file cannot be served)")
    align = int(meta.get("general.alignment", 32))  # type: ignore[call-overload]
    data_start = -(-r.pos // align) * align
    file_size = r.size
    if last[1] in _TYPE_SIZES:
        per_block, block_bytes = _TYPE_SIZES[last[1]]
        end = data_start + last[0] + last[2] // per_block * block_bytes
        if end > file_size:
            raise ValueError(f"truncated: its tensors need {end} bytes, the file has {file_size}")
    # a tensor's bytes run to the next tensor's offset (padding included); the last one to the end
    by_offset = sorted(tensors, key=lambda t: t[1])
    ends = [t[1] for t in by_offset[1:]] + [file_size - data_start]
    sizes = {name: end - offset for (name, offset), end in zip(by_offset, ends, strict=True)}
    return _layout(meta, sizes, n_params, frozenset(types))


def _layout(meta: dict[str, object], sizes: dict[str, int], n_params: int, types: frozenset[int]) -> GgufLayout:
    """The layout from the metadata and each tensor's bytes."""
    arch = str(meta["general.architecture"])

    def hparam(name: str, default: int | None = None) -> int:
        raw = meta.get(f"{arch}.{name}", default)
        if raw is None:
            raise KeyError(f"{arch}.{name}")
        if isinstance(raw, list):  # per-layer values (some architectures): the largest
            raw = max(raw)
        return int(raw)  # type: ignore[call-overload]

    n_layer = hparam("block_count")
    n_embd = hparam("embedding_length")
    n_head = hparam("attention.head_count")
    n_head_kv = hparam("attention.head_count_kv", n_head)
    head_k = hparam("attention.key_length", n_embd // max(n_head, 1))
    head_v = hparam("attention.value_length", head_k)
    layer_bytes = [0] * n_layer
    for name, size in sizes.items():
        if name.startswith("blk."):
            index = int(name.split(".")[1])
            if index < n_layer:
                layer_bytes[index] += size
    output = sizes.get("output.weight", sizes.get("token_embd.weight", 0)) + sizes.get("output_norm.weight", 0)
    tokens = meta.get("tokenizer.ggml.tokens", 0)
    n_vocab = len(tokens) if isinstance(tokens, list) else int(tokens)  # type: ignore[call-overload]
    return GgufLayout(
        n_layer=n_layer,
        layer_bytes=tuple(layer_bytes),
        output_bytes=output,
        kv_bytes_per_token=(head_k + head_v) * n_head_kv * 2,
        n_vocab=n_vocab,
        n_embd=n_embd,
        architecture=arch,
        name=str(meta.get("general.name", "")),
        file_type=int(meta["general.file_type"]) if "general.file_type" in meta else None,  # type: ignore[call-overload]
        context_length=hparam("context_length", 0),
        n_params=n_params,
        has_chat_template="tokenizer.chat_template" in meta,
        chat_template=str(meta.get("tokenizer.chat_template", "")),
        pooling=int(meta[f"{arch}.pooling_type"]) if f"{arch}.pooling_type" in meta else None,  # type: ignore[call-overload]
        tensor_types=types,
    )
