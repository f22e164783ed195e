"""How many layers to offload to the GPU: ``--gpu-layers auto``.

The GGUF's tensor table gives each layer's weight bytes, its metadata the KV cache's bytes per token;
the free device memory comes from llama.cpp (:func:`edge_run.engine.llama.gpu_devices`). The plan
keeps room for the KV cache of ``ctx x slots`` tokens, the compute buffers and a margin, then fits as
many layers as the rest allows, counted the way llama.cpp counts ``n_gpu_layers``: the output layer
first, then the repeating layers from the last one down.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edge_run.errors import EngineFailure

__all__ = ["GgufLayout", "OffloadPlan", "plan_offload", "quant_name", "read_layout"]

MIB = 1 << 20
MARGIN = 512 * MIB  # the CUDA/Metal context's own growth, fragmentation, other programs' spikes

# GGUF metadata value types: struct format of the scalars; 8 is a string, 9 an array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
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

    @property
    def quant(self) -> str:
        return quant_name(self.file_type)

    def kv_bytes(self, tokens: int) -> int:
        """The KV cache of ``tokens`` tokens in every layer (``ctx x slots`` for a server)."""
        return self.kv_bytes_per_token * self.n_layer * tokens


def quant_name(file_type: int | None) -> str:
    """``general.file_type``'s usual name (Q4_K_M...), or ``?`` when unknown."""
    return "?" if file_type is None else _FILE_TYPES.get(file_type, f"type {file_type}")


@dataclass(frozen=True, slots=True)
class OffloadPlan:
    """The layers to offload and the figures they were chosen from (bytes)."""

    layers: int  # llama.cpp's n_gpu_layers: 0 = none, n_layer + 1 = all
    total_layers: int  # n_layer + 1: the repeating layers and the output layer
    free: int  # device memory free before loading
    needed: int  # estimated device memory for those layers, their KV cache and compute buffers
    reason: str

    @property
    def full(self) -> bool:
        return self.layers >= self.total_layers


def plan_offload(layout: GgufLayout, *, free: int, kv_tokens: int, n_batch: int, margin: int = MARGIN) -> OffloadPlan:
    """The most layers whose weights and KV cache fit in ``free`` after compute buffers and ``margin``.

    ``kv_tokens`` is every slot's context together (ctx x slots); ``n_batch`` the largest batch decoded
    at once (its logits and activations live in the compute buffer).
    """
    total = layout.n_layer + 1
    compute = n_batch * (layout.n_vocab + 8 * layout.n_embd) * 4  # f32 logits and activations
    budget = free - margin - compute
    kv_layer = layout.kv_bytes_per_token * kv_tokens
    layers, used = 0, 0
    for k in range(1, total + 1):
        # k = 1 is the output layer; each further k adds the next repeating layer from the end
        cost = layout.output_bytes if k == 1 else layout.layer_bytes[layout.n_layer - (k - 1)] + kv_layer
        if used + cost > budget:
            break
        layers, used = k, used + cost
    needed = used + (compute + margin if layers else 0)
    gib = 1 << 30
    if layers == total:
        reason = f"all {total} layers fit: {needed / gib:.2f} of {free / gib:.2f} GiB free"
    elif layers == 0:
        reason = f"no layer fits in {free / gib:.2f} GiB free (KV cache {kv_tokens} tokens)"
    else:
        reason = f"{layers} of {total} layers fit in {free / gib:.2f} GiB free (KV cache {kv_tokens} tokens)"
    return OffloadPlan(layers=layers, total_layers=total, free=free, needed=needed, reason=reason)


def read_layout(path: Path) -> GgufLayout:
    """Read a GGUF file's tensor table and the metadata that sizes its layers and KV cache."""
    try:
        with path.open("rb") as f:
            return _read(f, path.stat().st_size)
    except (OSError, struct.error, UnicodeDecodeError, KeyError, ValueError) as exc:
        raise EngineFailure(f"could not read the GGUF layout of {path.name}: {exc}") from exc


def _read(f: BinaryIO, file_size: int) -> GgufLayout:
    def unpack(fmt: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        data = f.read(size)
        if len(data) != size:
            raise ValueError("truncated file")
        return struct.unpack(fmt, data)[0]

    def length(count: int, size: int = 1) -> int:
        """A length read from the file, refused if it runs past the file's end (a corrupt header)."""
        if count * size > file_size - f.tell():
            raise ValueError(f"corrupt: a length of {count} runs past the end of the file")
        return count

    def string() -> str:
        return f.read(length(int(unpack("<Q")))).decode("utf-8")

    def value(kind: int) -> object:
        if kind in _SCALARS:
            return unpack(_SCALARS[kind])
        if kind == _STRING:
            return string()
        if kind == _ARRAY:
            item, count = int(unpack("<I")), length(int(unpack("<Q")))
            if count <= 64:
                return [value(item) for _ in range(count)]
            # long arrays (the vocabulary, its scores and merges): only their length is needed
            if item in _SCALARS:
                f.seek(struct.calcsize(_SCALARS[item]) * count, 1)
            elif item == _STRING:
                for _ in range(count):
                    f.seek(length(int(unpack("<Q"))), 1)
            else:
                for _ in range(count):
                    value(item)
            return count
        raise ValueError(f"unknown metadata type {kind}")

    if f.read(4) != b"GGUF":
        raise ValueError("not a GGUF file")
    version = unpack("<I")
    if version < 2:
        raise ValueError(f"GGUF version {version} is too old")
    n_tensors, n_kv = length(int(unpack("<Q")), 24), length(int(unpack("<Q")), 12)  # the least each one takes
    meta: dict[str, object] = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(int(unpack("<I")))
    tensors: list[tuple[str, int]] = []
    n_params = 0
    last = (-1, 0, 0)  # (offset, type, elements) of the tensor that lies last in the file
    for _ in range(n_tensors):
        name = string()
        elements = 1
        for _ in range(int(unpack("<I"))):
            elements *= int(unpack("<Q"))
        n_params += elements
        kind = int(unpack("<I"))
        offset = int(unpack("<Q"))
        tensors.append((name, offset))
        last = max(last, (offset, kind, elements))
    if not tensors:
        raise ValueError("it has no tensors (a vocabulary-only file cannot be served)")
    align = int(meta.get("general.alignment", 32))  # type: ignore[call-overload]
    data_start = -(-f.tell() // align) * align
    if last[1] in _TYPE_SIZES:
        per_block, block_bytes = _TYPE_SIZES[last[1]]
        end = data_start + last[0] + last[2] // per_block * block_bytes
        if end > file_size:
            raise ValueError(f"truncated: its tensors need {end} bytes, the file has {file_size}")
    # a tensor's bytes run to the next tensor's offset (padding included); the last one to the end
    by_offset = sorted(tensors, key=lambda t: t[1])
    ends = [t[1] for t in by_offset[1:]] + [file_size - data_start]
    sizes = {name: end - offset for (name, offset), end in zip(by_offset, ends, strict=True)}

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
    )
