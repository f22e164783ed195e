"""A tiny random-weight Qwen2-VL pair: a ``qwen2vl`` text model (M-RoPE) and its ``qwen2vl_merger`` projector.

    python bench/synth.py qwen2vl --out DIR [--seed N] [--tokenizer GGUF] [--check]

Writes ``DIR/synth-qwen2vl.gguf`` and ``DIR/synth-qwen2vl-mmproj.gguf`` and prints the two paths, one a line, the
text model first. For tests that need a vision model whose image chunks use M-RoPE (``mtmd_decode_use_mrope``), where
an image takes fewer positions than tokens (``mtmd_input_chunk_get_n_pos`` = max(grid width, grid height)), without
downloading Qwen2-VL. Metadata and tensors are what convert_hf_to_gguf.py writes (conversion/qwenvl.py:
Qwen2VLModel and Qwen2VLVisionModel) for Qwen/Qwen2-VL-2B-Instruct, only tiny:

- text (llama.cpp's LLM_ARCH_QWEN2VL, src/models/qwen2vl.cpp): Qwen2 blocks (RMS norm, q/k/v with biases, no output
  bias, SwiGLU FFN), n_embd 256, 2 layers, 4 heads, 2 KV heads (head_dim 64), FFN 768, tied embeddings, rope theta
  1e6, ``rope.dimension_sections`` [8, 12, 12, 0]: Qwen2-VL's mrope_section [16, 24, 24] (for head_dim 128) halved,
  so that the sections sum to head_dim / 2 (the rotated pairs). SmolLM2's tokenizer and chat template (ChatML)
  copied from the test model (``synth.tokenizer_fields``): 49k tokens, n_vocab 49152. 30 MB, 25 of them the F16
  embeddings; F16 matrices, F32 norms and biases.
- projector (clip.cpp's PROJECTOR_TYPE_QWEN2VL, tools/mtmd/models/qwen2vl.cpp): the Conv3D patch embedding split in
  two Conv2D kernels (``v.patch_embd.weight`` and ``.weight.1``, no bias; a still image goes through both), patch 8
  (real: 14), no position embedding (2D M-RoPE in the attention), ViT hidden 64, 2 layers, 4 heads, FFN 256 (Qwen2-VL's
  mlp_ratio 4), LayerNorms with biases, quick-GELU (no use_gelu/use_silu key), ``v.post_ln`` (merger.ln_q), then the
  merger: 2x2 neighbouring patches concatenated (256) and ``mm.0`` (256 -> 256), GELU, ``mm.2`` (256 -> n_embd_text).
  A token is 16x16 pixels. mtmd (``mtmd_image_preprocessor_dyn_size``) rounds each side to a multiple of 16, within
  8..4096 tokens (clip.cpp's set_limit_image_tokens for Qwen2-VL), one chunk an image, between the text markers
  ``<|vision_start|>`` and ``<|vision_end|>`` (plain text to SmolLM2's tokenizer): a 64x64 PNG is a 4x4 grid, 16
  tokens on 4 positions; a 120x80 one becomes 128x80, 8x5, 40 tokens on 8 positions.

``check`` loads the pair with llama-cpp-python's low-level API and mtmd bindings, tokenizes a prompt with one image,
evaluates it (``mtmd_helper_eval_chunks``) and greedily generates a few tokens; the answers mean nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import synth
from synth_media import _blocks, _header, _piece, _Rand, loaded, sample_images

KIND = "qwen2vl"


@dataclass(frozen=True)
class TextShape:
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 768
    context: int = 4096
    rope_theta: float = 1e6
    rms_eps: float = 1e-6
    sections: tuple[int, int, int, int] = (8, 12, 12, 0)  # t, h, w, (unused); sums to head_dim / 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class VisionShape:
    image: int = 560  # conversion/qwenvl.py's default: Qwen2-VL's config has no image_size; clip.cpp ignores it here
    patch: int = 8
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    ffn: int = 256
    merge: int = 2  # spatial_merge_size; clip.cpp's default for Qwen2-VL, and its graph hard-codes 2x2


TEXT = TextShape()
VISION = VisionShape()
# Qwen2-VL's preprocessor_config.json (OpenAI CLIP's)
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def write_text(out: Path, seed: int = 0, tokenizer: Path = synth.DEFAULT_TOKENIZER, t: TextShape = TEXT) -> None:
    """LLM_ARCH_QWEN2VL: the keys of conversion/base.py's TextModel (with mrope_section), tensors in HF order."""
    assert sum(t.sections) * 2 == t.head_dim, "the M-RoPE sections must sum to head_dim / 2"
    gguf, r = synth._gguf(), _Rand(seed)
    fields = synth.tokenizer_fields(tokenizer)
    n_vocab = len(next(v for k, v, _, _ in fields if k == "tokenizer.ggml.tokens"))  # type: ignore[arg-type]
    h, kv = t.hidden, t.kv_heads * t.head_dim

    w = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN2VL])
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("synthetic tiny Qwen2-VL (qwen2vl, random weights)")
    w.add_context_length(t.context)
    w.add_embedding_length(h)
    w.add_block_count(t.layers)
    w.add_feed_forward_length(t.ffn)
    w.add_head_count(t.heads)
    w.add_head_count_kv(t.kv_heads)
    w.add_rope_dimension_sections(list(t.sections))
    w.add_rope_freq_base(t.rope_theta)
    w.add_layer_norm_rms_eps(t.rms_eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(n_vocab)
    for key, value, vtype, sub in fields:
        w.add_key_value(key, value, vtype, sub)

    w.add_tensor("token_embd.weight", r.f16(n_vocab, h))  # tied: no output.weight (Qwen2-VL-2B ties them)
    for i in range(t.layers):
        b = f"blk.{i}"
        w.add_tensor(f"{b}.attn_norm.weight", np.ones(h, dtype=np.float32))
        w.add_tensor(f"{b}.ffn_down.weight", r.f16(h, t.ffn))
        w.add_tensor(f"{b}.ffn_gate.weight", r.f16(t.ffn, h))
        w.add_tensor(f"{b}.ffn_up.weight", r.f16(t.ffn, h))
        w.add_tensor(f"{b}.ffn_norm.weight", np.ones(h, dtype=np.float32))
        w.add_tensor(f"{b}.attn_k.bias", r.bias(kv))
        w.add_tensor(f"{b}.attn_k.weight", r.f16(kv, h))
        w.add_tensor(f"{b}.attn_output.weight", r.f16(h, h))
        w.add_tensor(f"{b}.attn_q.bias", r.bias(h))
        w.add_tensor(f"{b}.attn_q.weight", r.f16(h, h))
        w.add_tensor(f"{b}.attn_v.bias", r.bias(kv))
        w.add_tensor(f"{b}.attn_v.weight", r.f16(kv, h))
    w.add_tensor("output_norm.weight", np.ones(h, dtype=np.float32))
    synth.write_out(w)


def write_mmproj(out: Path, seed: int = 0, n_embd_text: int = TEXT.hidden, v: VisionShape = VISION) -> None:
    """PROJECTOR_TYPE_QWEN2VL: conversion/base.py's MmprojModel keys, then Qwen2VLVisionModel's."""
    gguf, r, h = synth._gguf(), _Rand(seed + 1), v.hidden
    w = _header(gguf, out, "synthetic tiny Qwen2-VL mmproj (qwen2vl_merger, random weights)")
    w.add_clip_has_vision_encoder(True)
    w.add_vision_projection_dim(n_embd_text)
    w.add_vision_image_size(v.image)
    w.add_vision_patch_size(v.patch)
    w.add_vision_embedding_length(h)
    w.add_vision_feed_forward_length(v.ffn)
    w.add_vision_block_count(v.layers)
    w.add_vision_head_count(v.heads)
    w.add_vision_image_mean(IMAGE_MEAN)
    w.add_vision_image_std(IMAGE_STD)
    w.add_clip_projector_type(gguf.VisionProjectorType.QWEN2VL)
    w.add_vision_attention_layernorm_eps(1e-6)

    # Conv3D (h, 3, temporal 2, p, p) split on the temporal axis: two Conv2D kernels, ne [p, p, 3, h], F16 as the
    # converter forces them for an F16 file; the model has no patch bias (the graph asserts it)
    w.add_tensor("v.patch_embd.weight", r.f16(h, 3, v.patch, v.patch))
    w.add_tensor("v.patch_embd.weight.1", r.f16(h, 3, v.patch, v.patch))
    _blocks(w, r, "v", v.layers, h, v.ffn, k_bias=True)  # qkv split in q, k, v; ends with v.post_ln (merger.ln_q)
    m = h * v.merge * v.merge
    w.add_tensor("mm.0.weight", r.f16(m, m))
    w.add_tensor("mm.0.bias", r.bias(m))
    w.add_tensor("mm.2.weight", r.f16(n_embd_text, m))
    w.add_tensor("mm.2.bias", r.bias(n_embd_text))
    synth.write_out(w)


def write_qwen2vl(out_dir: Path, seed: int = 0, tokenizer: Path = synth.DEFAULT_TOKENIZER) -> tuple[Path, Path]:
    """Write ``out_dir/synth-qwen2vl.gguf`` and ``out_dir/synth-qwen2vl-mmproj.gguf``; returns (text, mmproj)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text, mmproj = out_dir / f"synth-{KIND}.gguf", out_dir / f"synth-{KIND}-mmproj.gguf"
    write_text(text, seed, tokenizer)
    write_mmproj(mmproj, seed, TEXT.hidden)
    return text, mmproj


def _chunk_type(m, kind: int) -> str:
    return {m.MTMD_INPUT_CHUNK_TYPE_TEXT: "text", m.MTMD_INPUT_CHUNK_TYPE_IMAGE: "image"}.get(kind, str(kind))


def _one(llama_cpp, m, model, mctx, png: bytes, prompt: str, n_gen: int, n_threads: int) -> dict:
    """Tokenize ``prompt`` with one image, evaluate it in a fresh context and greedily generate ``n_gen`` tokens."""
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    buf = (ctypes.c_uint8 * len(png)).from_buffer_copy(png)
    bitmap = m.mtmd_helper_bitmap_init_from_buf(mctx, buf, len(buf), False)
    if not bitmap:
        raise RuntimeError("cannot make a bitmap")
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = 1024, 512, 512
    cparams.n_threads = cparams.n_threads_batch = n_threads
    lctx = llama_cpp.llama_init_from_model(model, cparams)
    chunks = m.mtmd_input_chunks_init()
    batch = llama_cpp.llama_batch_init(1, 0, 1)
    try:
        text = m.mtmd_input_text(prompt.encode(), len(prompt.encode()), True, True)
        bitmaps = (m.mtmd_bitmap_p_ctypes * 1)(bitmap)
        if (rc := m.mtmd_tokenize(mctx, chunks, ctypes.byref(text), bitmaps, 1)) != 0:
            raise RuntimeError(f"mtmd_tokenize failed: {rc}")
        layout, encode_ms = [], 0.0
        for i in range(m.mtmd_input_chunks_size(chunks)):
            chunk = m.mtmd_input_chunks_get(chunks, i)
            kind = m.mtmd_input_chunk_get_type(chunk)
            entry = {
                "type": _chunk_type(m, kind),
                "n_tokens": m.mtmd_input_chunk_get_n_tokens(chunk),
                "n_pos": m.mtmd_input_chunk_get_n_pos(chunk),
            }
            if kind == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ptr = m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                entry["text"] = "".join(_piece(llama_cpp, vocab, ptr[j]) for j in range(n.value))
            else:  # encode once on its own for the time (mtmd_helper_eval_chunks encodes it again)
                start = time.perf_counter()
                if (rc := m.mtmd_encode_chunk(mctx, chunk)) != 0:
                    raise RuntimeError(f"mtmd_encode_chunk failed: {rc}")
                encode_ms += (time.perf_counter() - start) * 1000
            layout.append(entry)

        n_past = llama_cpp.llama_pos(0)
        start = time.perf_counter()
        if (rc := m.mtmd_helper_eval_chunks(mctx, lctx, chunks, 0, 0, 512, True, ctypes.byref(n_past))) != 0:
            raise RuntimeError(f"mtmd_helper_eval_chunks failed: {rc}")
        eval_ms = (time.perf_counter() - start) * 1000
        n_prompt_past = pos = n_past.value

        tokens = []
        for _ in range(n_gen):  # greedy, one text token at a time at explicit positions (after the image's n_pos)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx, -1), shape=(n_vocab,))
            if not np.isfinite(logits).all():
                raise RuntimeError("non-finite logits")
            token = int(logits.argmax())
            tokens.append(token)
            batch.n_tokens = 1
            batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = token, pos, 1, True
            batch.seq_id[0][0] = 0
            if (rc := llama_cpp.llama_decode(lctx, batch)) != 0:
                raise RuntimeError(f"llama_decode failed: {rc}")
            pos += 1
        return {
            "chunks": layout,
            "n_tokens_total": m.mtmd_helper_get_n_tokens(chunks),
            "n_pos_total": m.mtmd_helper_get_n_pos(chunks),
            "n_past": n_prompt_past,
            "encode_ms": round(encode_ms, 2),
            "eval_ms": round(eval_ms, 2),
            "tokens": tokens,
            "text": "".join(_piece(llama_cpp, vocab, t) for t in tokens),
        }
    finally:
        llama_cpp.llama_batch_free(batch)
        m.mtmd_input_chunks_free(chunks)
        m.mtmd_bitmap_free(bitmap)
        llama_cpp.llama_free(lctx)


def check(text_model: Path, mmproj: Path, n_threads: int = 2, n_gen: int = 8) -> dict:
    """Load the pair with llama-cpp-python, then for a 64x64 and a 120x80 PNG: tokenize "<__media__>Describe.",
    list the chunks (type, n_tokens, n_pos), evaluate them with mtmd_helper_eval_chunks, generate ``n_gen`` tokens."""
    import llama_cpp
    from llama_cpp import mtmd_cpp as m

    with loaded(text_model, mmproj, n_threads) as (model, mctx, init_ms):
        prompt = f"{m.mtmd_default_marker().decode()}Describe."
        images = {f"{w}x{h}": sample_images((w, h))[0] for w, h in ((64, 64), (120, 80))}
        return {
            "rope_type_mrope": llama_cpp.llama_model_rope_type(model) == llama_cpp.LLAMA_ROPE_TYPE_MROPE,
            "mrope": bool(m.mtmd_decode_use_mrope(mctx)),
            "vision": bool(m.mtmd_support_vision(mctx)),
            "n_embd": llama_cpp.llama_model_n_embd_inp(model),
            "init_ms": round(init_ms, 1),
            "prompt": prompt,
            "images": {k: _one(llama_cpp, m, model, mctx, v, prompt, n_gen, n_threads) for k, v in images.items()},
        }


def main(argv: list[str]) -> int:
    """``qwen2vl --out DIR``: a tiny Qwen2-VL text model and projector; prints both paths (text model first)."""
    p = argparse.ArgumentParser(prog="synth.py", description=main.__doc__)
    p.add_argument("kind", choices=[KIND])
    p.add_argument("--out", type=Path, required=True, help="a folder: DIR/synth-qwen2vl.gguf and -mmproj.gguf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", type=Path, default=synth.DEFAULT_TOKENIZER, help="a GGUF to copy tokenizer.* from")
    p.add_argument("--check", action="store_true", help="load the pair with llama_cpp, generate, print a JSON line")
    args = p.parse_args(argv)
    start = time.perf_counter()
    text, mmproj = write_qwen2vl(args.out, args.seed, args.tokenizer)
    sizes = ", ".join(f"{f.name} {f.stat().st_size / 1e6:.2f} MB" for f in (text, mmproj))
    print(f"{sizes} in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    print(text)
    print(mmproj, flush=True)
    if args.check:
        print(json.dumps(check(text, mmproj)))
    return 0
