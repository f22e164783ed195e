"""Random-weight GGUFs in the exact tensor layout of a real family, for speed tests without downloads.

    python bench/synth.py --shape llama-1b|llama-8b|tiny --type q4_k_m|q8_0|f16|bf16 --out FILE
    python bench/synth.py embed-cls|embed-last|rerank --out DIR [--seed N]   (synth_retrieval.py; prints the path)
    python bench/synth.py vision|vision-gemma3|audio --out DIR [--seed N] [--size S] [--check]   (synth_media.py)
    python bench/synth.py qwen2vl --out DIR [--seed N] [--check]   (synth_qwen2vl.py: text model + mmproj; 2 paths)
    python bench/synth.py vlm --out DIR [--seed N] [--check]   (a tiny llama text model + SmolVLM's projector; 2 paths)

Writes a ``llama``-architecture GGUF shaped like Llama 3.2 1B or Llama 3.1 8B (or a tiny one for tests), with
SmolLM2's tokenizer (tokens, merges, token types, special ids, chat template) read from the test model on disk.
Quantized tensors are raw random blocks written straight from numpy (nothing is quantized in Python): random
quants, with the fp16 scales set so that weights have a standard deviation near 0.02 and the logits stay finite.
"Q4_K_M" follows llama.cpp's mix (``llama_tensor_get_type``): Q4_K everywhere, Q6_K for ``attn_v`` and ``ffn_down``
in the layers ``use_more_bits`` picks and for the output (the token embeddings when they are tied); norms in F32.
Tensors are written one at a time, so memory stays near the largest tensor (0.21 GB for the 8B Q8_0 embeddings).
Speed does not depend on the weights' values; the answers mean nothing.
"""

from __future__ import annotations

import argparse
import math
import mmap
import os
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np

DEFAULT_TOKENIZER = Path(os.environ.get("EDGE_RUN_TEST_CACHE", Path.home() / ".cache" / "edge-run-tests")) / (
    "SmolLM2-135M-Instruct.Q4_1.gguf"
)
WEIGHT_STD = 0.02
RETRIEVAL_KINDS = ("embed-cls", "embed-last", "rerank")  # synth_retrieval.KINDS, without importing it for --help
MEDIA_KINDS = ("vision", "vision-gemma3", "audio")  # synth_media.KINDS: multimodal projectors (mmproj)
PAIR_KINDS = ("qwen2vl", "vlm")  # a text model and its mmproj (synth_qwen2vl.KIND, main_vlm)


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    context: int
    rope_theta: float
    tied: bool
    rope_factor: float | None  # Llama 3's rope scaling ("llama3"): the rope_freqs tensor; None: no tensor
    rms_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SHAPES = {
    # meta-llama/Llama-3.2-1B config.json
    "llama-1b": Shape("Llama-3.2-1B", 2048, 16, 32, 8, 8192, 131072, 500000.0, True, 32.0),
    # meta-llama/Llama-3.1-8B config.json
    "llama-8b": Shape("Llama-3.1-8B", 4096, 32, 32, 8, 14336, 131072, 500000.0, False, 8.0),
    # for tests: every dimension a multiple of 256 (the K-quants' block)
    "tiny": Shape("tiny", 256, 2, 4, 2, 512, 4096, 500000.0, False, 8.0),
}


def _gguf() -> ModuleType:  # imported late so that --help works without it
    import gguf

    return gguf


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers that get more bits in the _M mixes."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def tensor_plan(shape: Shape, qtype: str, n_vocab: int) -> Iterator[tuple[str, tuple[int, ...], str]]:
    """(name, ggml shape (ne0 first), type name) for each tensor, in llama.cpp's convert order."""
    q = {"q8_0": "Q8_0", "f16": "F16", "bf16": "BF16"}.get(qtype, "Q4_K")
    out = "Q6_K" if q == "Q4_K" else q
    h, kv = shape.hidden, shape.kv_heads * shape.head_dim
    if shape.rope_factor is not None:
        yield "rope_freqs.weight", (shape.head_dim // 2,), "F32"
    yield "token_embd.weight", (h, n_vocab), out if shape.tied else q
    for i in range(shape.layers):
        more = qtype == "q4_k_m" and use_more_bits(i, shape.layers)
        yield f"blk.{i}.attn_norm.weight", (h,), "F32"
        yield f"blk.{i}.ffn_down.weight", (shape.ffn, h), "Q6_K" if more else q
        yield f"blk.{i}.ffn_gate.weight", (h, shape.ffn), q
        yield f"blk.{i}.ffn_up.weight", (h, shape.ffn), q
        yield f"blk.{i}.ffn_norm.weight", (h,), "F32"
        yield f"blk.{i}.attn_k.weight", (h, kv), q
        yield f"blk.{i}.attn_output.weight", (h, h), q
        yield f"blk.{i}.attn_q.weight", (h, h), q
        yield f"blk.{i}.attn_v.weight", (h, kv), "Q6_K" if more else q
    yield "output_norm.weight", (h,), "F32"
    if not shape.tied:
        yield "output.weight", (h, n_vocab), out


def llama3_rope_factors(shape: Shape) -> np.ndarray:
    """As convert_hf_to_gguf.py computes them for rope_scaling type "llama3" (low 1, high 4, original 8192)."""
    assert shape.rope_factor is not None
    factor, low, high, old_ctx = shape.rope_factor, 1.0, 4.0, 8192
    freqs = 1.0 / (shape.rope_theta ** (np.arange(0, shape.head_dim, 2, dtype=np.float64) / shape.head_dim))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


_FLOATS = ("F16", "BF16")
# Where the fp16 scale fields sit in each block: (offset of d, offset of dmin or None).
_SCALE_FIELDS = {"Q8_0": (0, None), "Q4_0": (0, None), "Q4_K": (0, 2), "Q6_K": (208, None)}


class Blocks:
    """Random blocks of one quant type with valid, small fp16 scales."""

    def __init__(self, type_name: str, rng: np.random.Generator):
        gguf = _gguf()
        self.qtype = gguf.GGMLQuantizationType[type_name]
        self.block_size, self.type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        self.rng = rng
        if type_name in _FLOATS:  # unquantized: random weights of the usual spread, as halves of floats
            return
        self.d_off, self.dmin_off = _SCALE_FIELDS[type_name]
        # Measure the spread of the weights with d = 1 on a sample, then pick d for WEIGHT_STD.
        # For Q4_K (w = d*sc*q - dmin*m, q in 0..15 and sc, m in 0..63) dmin = 7.5 d centres the weights on 0.
        self.d = 1.0
        sample = self.raw(256 * self.block_size)
        std = float(gguf.quants.dequantize(sample, self.qtype).std())
        self.d = WEIGHT_STD / std

    def raw(self, n_values: int) -> np.ndarray:
        """``n_values`` weights as a (n_blocks, type_size) uint8 array."""
        n_blocks = n_values // self.block_size
        if self.qtype.name in _FLOATS:
            weights = self.rng.standard_normal(n_values, dtype=np.float32) * WEIGHT_STD
            if self.qtype.name == "F16":
                return weights.astype("<f2").view(np.uint8).reshape(n_blocks, 2)
            return (weights.view("<u4") >> 16).astype("<u2").view(np.uint8).reshape(n_blocks, 2)  # BF16: the high half
        data = self.rng.integers(0, 256, size=(n_blocks, self.type_size), dtype=np.uint8)
        d = np.frombuffer(np.float16(self.d).tobytes(), dtype=np.uint8)
        data[:, self.d_off : self.d_off + 2] = d
        if self.dmin_off is not None:
            dmin = np.frombuffer(np.float16(self.d * 7.5).tobytes(), dtype=np.uint8)
            data[:, self.dmin_off : self.dmin_off + 2] = dmin
        return data


@lru_cache(maxsize=4)
def tokenizer_fields(path: Path) -> list[tuple[str, object, object, object]]:
    """Every ``tokenizer.*`` key of ``path`` as (key, value, value type, array item type), the values as gguf's
    ``GGUFReader`` gives them (``field.contents()``). Read here from the header's bytes: GGUFReader makes a numpy
    view of each of the 49k tokens and merges, 2.8 s of CPU for every model a test writes with them."""
    gguf = _gguf()
    kinds = gguf.GGUFValueType
    scalars = {kind: np.dtype(dtype).newbyteorder("<") for kind, dtype in _SCALAR_DTYPES.items()}
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        pos = 24  # magic, version, tensor count, then the key-value count
        (n_kv,) = struct.unpack_from("<Q", data, 16)

        def string() -> str:
            nonlocal pos
            (n,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + n
            return data[pos - n : pos].decode("utf-8")

        def values(kind: int, count: int) -> list:
            nonlocal pos
            if kind == kinds.STRING:
                return [string() for _ in range(count)]
            dtype = scalars[kind]
            out = np.frombuffer(data, dtype, count, pos)
            pos += dtype.itemsize * count
            return [bool(v) for v in out] if kind == kinds.BOOL else out.tolist()

        out = []
        for _ in range(n_kv):
            key = string()
            (vtype,) = struct.unpack_from("<I", data, pos)
            pos += 4
            sub = None
            if vtype == kinds.ARRAY:
                sub, count = struct.unpack_from("<IQ", data, pos)
                pos += 12
                value: object = values(sub, count)
            else:
                [value] = values(vtype, 1)
            if key.startswith("tokenizer."):
                out.append((key, value, kinds(vtype), None if sub is None else kinds(sub)))
        return out


_SCALAR_DTYPES = {  # GGUF's scalar value types, by their number in the format
    0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
    6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64,
}  # fmt: skip


def write(shape_name: str, qtype: str, out: Path, tokenizer: Path = DEFAULT_TOKENIZER, seed: int = 0) -> None:
    gguf = _gguf()
    shape = SHAPES[shape_name]
    fields = tokenizer_fields(tokenizer)
    n_vocab = len(next(v for k, v, _, _ in fields if k == "tokenizer.ggml.tokens"))  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)

    w = gguf.GGUFWriter(out, "llama")
    w.add_name(f"synthetic {shape.name} ({qtype}, random weights)")
    w.add_type("model")
    w.add_context_length(shape.context)
    w.add_embedding_length(shape.hidden)
    w.add_block_count(shape.layers)
    w.add_feed_forward_length(shape.ffn)
    w.add_head_count(shape.heads)
    w.add_head_count_kv(shape.kv_heads)
    w.add_rope_freq_base(shape.rope_theta)
    w.add_layer_norm_rms_eps(shape.rms_eps)
    w.add_file_type(
        gguf.LlamaFileType[
            {"q8_0": "MOSTLY_Q8_0", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16"}.get(qtype, "MOSTLY_Q4_K_M")
        ]
    )
    w.add_vocab_size(n_vocab)
    w.add_rope_dimension_count(shape.head_dim)
    for key, value, vtype, sub in fields:
        w.add_key_value(key, value, vtype, sub)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    plan = list(tensor_plan(shape, qtype, n_vocab))
    blocks = {t: Blocks(t, rng) for t in {t for _, _, t in plan if t != "F32"}}
    for name, dims, type_name in plan:
        n = math.prod(dims)
        if type_name == "F32":
            w.add_tensor_info(name, tuple(reversed(dims)), np.dtype(np.float32), n * 4)
        else:
            b = blocks[type_name]
            nbytes = n // b.block_size * b.type_size
            byte_shape = (*reversed(dims[1:]), dims[0] // b.block_size * b.type_size)
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=b.qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, dims, type_name in plan:
        n = math.prod(dims)
        if name == "rope_freqs.weight":
            w.write_tensor_data(llama3_rope_factors(shape))
        elif type_name == "F32":
            w.write_tensor_data(np.ones(n, dtype=np.float32))
        else:
            w.write_tensor_data(blocks[type_name].raw(n))
    w.close()


def write_out(w) -> None:
    """Write a GGUFWriter's header, metadata and added tensors, and close it (the retrieval and media models)."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main_retrieval(argv: list[str]) -> int:
    """``KIND --out DIR``: a tiny retrieval model (see synth_retrieval.py); prints the path it wrote."""
    from synth_retrieval import KINDS, write_retrieval

    p = argparse.ArgumentParser(prog="synth.py", description=main_retrieval.__doc__)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--out", type=Path, required=True, help="a folder: the file is DIR/synth-KIND.gguf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="embed-last: a GGUF to copy it from")
    args = p.parse_args(argv)
    start = time.perf_counter()
    out = write_retrieval(args.kind, args.out, args.seed, tokenizer=args.tokenizer)
    size = out.stat().st_size
    print(f"{out}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(out)
    return 0


def main_media(argv: list[str]) -> int:
    """``KIND --out DIR``: a tiny multimodal projector (see synth_media.py); prints the path it wrote."""
    import json

    from synth_media import KINDS, N_EMBD_TEXT, SIZES, check, write_media

    p = argparse.ArgumentParser(prog="synth.py", description=main_media.__doc__)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--out", type=Path, required=True, help="a folder: the file is DIR/synth-KIND-mmproj.gguf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-embd-text", type=int, default=N_EMBD_TEXT, help="the text model's embedding size")
    sizes = list(dict.fromkeys(s for kind in SIZES.values() for s in kind))
    p.add_argument("--size", choices=sizes, default="tiny",
                   help="a real tower's size: smolvlm-256m (vision), gemma3-4b (vision-gemma3)")  # fmt: skip
    p.add_argument("--check", action="store_true", help="load it with llama_cpp's mtmd, encode, print a JSON line")
    p.add_argument("--text-model", type=Path, default=DEFAULT_TOKENIZER, help="--check: the text model to pair")
    args = p.parse_args(argv)
    start = time.perf_counter()
    if args.size not in SIZES[args.kind]:
        p.error(f"--size: {args.kind} has {', '.join(SIZES[args.kind])}")
    out = write_media(args.kind, args.out, args.seed, args.n_embd_text, args.size)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    print(out, flush=True)
    if args.check:
        print(json.dumps(check(out, args.text_model)))
    return 0


def main_vlm(argv: list[str]) -> int:
    """``vlm --out DIR``: a tiny vision language model of random weights, the ``tiny`` llama text model (SmolLM2's
    tokenizer) and an idefics3 (SmolVLM) projector for its width; prints both paths, the text model first."""
    import json

    from synth_media import check, write_media

    p = argparse.ArgumentParser(prog="synth.py", description=main_vlm.__doc__)
    p.add_argument("kind", choices=["vlm"])
    p.add_argument("--out", type=Path, required=True, help="a folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="a GGUF to copy tokenizer.* from")
    p.add_argument("--check", action="store_true", help="load both with llama_cpp's mtmd, encode, print a JSON line")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "synth-vlm-text.gguf"
    write("tiny", "q8_0", model, args.tokenizer, args.seed)
    mmproj = write_media("vision", args.out, args.seed, SHAPES["tiny"].hidden)
    print(f"{model}\n{mmproj}", flush=True)
    if args.check:
        print(json.dumps(check(mmproj, model)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in RETRIEVAL_KINDS:
        return main_retrieval(argv)
    if argv and argv[0] in MEDIA_KINDS:
        return main_media(argv)
    if argv and argv[0] == "vlm":
        return main_vlm(argv)
    if argv and argv[0] in PAIR_KINDS:
        from synth_qwen2vl import main as main_pair

        return main_pair(argv)
    epilog = (
        f"or: synth.py {{{','.join(RETRIEVAL_KINDS)}}} --out DIR [--seed N]: tiny retrieval models; "
        f"or: synth.py {{{','.join(MEDIA_KINDS)}}} --out DIR [--seed N] [--check]: tiny multimodal projectors; "
        f"or: synth.py {{{','.join(PAIR_KINDS)}}} --out DIR [--seed N] [--check]: a tiny vision text model + mmproj"
    )
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=epilog)
    p.add_argument("--shape", choices=sorted(SHAPES), required=True)
    p.add_argument("--type", choices=["q4_k_m", "q8_0", "f16", "bf16"], required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="a GGUF to copy tokenizer.* from")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()
    write(args.shape, args.type, args.out, args.tokenizer, args.seed)
    size = args.out.stat().st_size
    print(f"{args.out}: {size / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
