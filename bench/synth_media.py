"""Tiny random-weight multimodal projectors ("mmproj" GGUFs, as llama.cpp's tools/mtmd/clip.cpp loads them).

    python bench/synth.py vision|vision-gemma3|audio --out DIR [--seed N] [--size S] [--check] [--text-model GGUF]

``--size`` (``SIZES``): ``tiny`` for every kind; ``smolvlm-256m`` for vision, ``gemma3-4b`` for vision-gemma3.

For tests that cannot download a real vision or audio model; they pair with a text model of ``n_embd_text``
(576: SmolLM2-135M, the test model, which is SmolVLM-256M's text model). The metadata and tensors are what
convert_hf_to_gguf.py writes (conversion/smolvlm.py, conversion/gemma.py, conversion/ultravox.py), only tiny:

- ``vision``: projector ``idefics3`` (SmolVLM / Idefics3): a SigLIP ViT, image 64, patch 8 (8x8 patches), hidden 64,
  2 layers, 4 heads, GELU, post-norm, then pixel shuffle by scale_factor 4 and ``mm.model.fc`` (no bias) to
  ``n_embd_text``: 4 tokens per 64x64 tile. ``preproc_image_size`` (the processor's longest_edge) 128: mtmd resizes
  an image so that its longest side is 128, then to multiples of 64, and cuts it into tiles (a 2x2 grid at most)
  plus a 64x64 overview, each its own image chunk. ``--size smolvlm-256m`` (vision only) writes SmolVLM-256M's own
  tower instead, for speed: image 512, patch 16, hidden 768, 12 layers, 12 heads, FFN 3072, longest edge 2048
  (every image becomes 2048 on its longest side: up to 16 tiles of 64 tokens plus the overview), 190 MB.
- ``vision-gemma3``: projector ``gemma3`` (Gemma 3): the same tiny SigLIP tower (hidden 64, 2 layers, 4 heads, GELU,
  post-norm) on image 128, patch 4 (32x32 patches), then clip.cpp's Gemma 3 head: a 2x2 average pool
  (``clip.vision.projector.scale_factor`` 2, clip.cpp's n_merge; real Gemma 3 pools 64x64 patches by 4), RMS norm
  ``mm.soft_emb_norm`` and ``mm.input_projection`` (no bias) to ``n_embd_text``. mtmd resizes every image to 128x128
  (no tiles), so every image is one chunk of 256 tokens, as in real Gemma 3, between the text markers
  ``<start_of_image>`` and ``<end_of_image>`` (plain text to SmolLM2's tokenizer). Gemma 3 attends to an image's
  tokens both ways: ``mtmd_decode_use_non_causal`` is true, so whoever decodes the chunk needs n_batch and n_ubatch
  of 256 at least (the image in one ubatch). ``--size gemma3-4b`` writes Gemma 3 4B's own tower instead, for speed:
  image 896, patch 14 (64x64 patches), hidden 1152, 27 layers, 16 heads, FFN 4304, pooled by 4 to 16x16 = 256
  tokens, 0.85 GB: one encode of 4,096 rows through 27 layers per image.
- ``audio``: projector ``ultravox``: a Whisper encoder on 128 mel bins (conv1d k3 s1, conv1d k3 s2, GELU), hidden 64,
  2 layers, 4 heads, 1500 positions (30 s), then the Ultravox projector: frames stacked by 15 (not 8, see A_STACK),
  RMS norm, SwiGLU MLP (960 -> 2x256), RMS norm, 256 -> ``n_embd_text``. mtmd cuts audio into 30 s windows (the
  last one padded with silence), one chunk of 100 tokens each; no text around it.

Matrices F16 with std ``synth.WEIGHT_STD``; patch and position embeddings, norms and biases F32, as the converter
keeps them. ``check`` loads a projector with llama-cpp-python's mtmd bindings and encodes media through it.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import synth

KINDS = synth.MEDIA_KINDS
N_EMBD_TEXT = 576  # SmolLM2-135M


@dataclass(frozen=True)
class VisionSize:
    """A SigLIP tower and idefics3 projector: tile side, patch, hidden, layers, heads, FFN, pixel-shuffle scale, and
    the processor's longest edge (mtmd resizes every image so that its longest side is this, then cuts tiles)."""

    image: int
    patch: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    scale: int
    longest_edge: int


VISION_SIZES = {
    "tiny": VisionSize(64, 8, 64, 2, 4, 256, 4, 128),
    # HuggingFaceTB/SmolVLM-256M-Instruct: vision_config (SigLIP base patch16-512) and scale_factor from config.json,
    # preprocessor_config.json's size.longest_edge 2048 and max_image_size 512: 16 tiles of 64 tokens + an overview
    "smolvlm-256m": VisionSize(512, 16, 768, 12, 12, 3072, 4, 2048),
}
# vision-gemma3: mtmd's fixed-size preprocessing resizes every image to image x image; longest_edge is not written.
GEMMA3_SIZES = {
    # the tiny tower on image 128, patch 4, pooled by 2 (scale: clip.cpp's n_merge): (128/4/2)^2 = 256 tokens an image
    "tiny": VisionSize(128, 4, 64, 2, 4, 256, 2, 128),
    # google/gemma-3-4b-it config.json: vision_config (SigLIP so400m at 896, patch 14) and mm_tokens_per_image 256,
    # so the pool is 64/16 = 4 (Gemma 3's own n_merge, which the converter does not write)
    "gemma3-4b": VisionSize(896, 14, 1152, 27, 16, 4304, 4, 896),
}
GEMMA3_SIZE = GEMMA3_SIZES["tiny"]
SIZES = {"vision": VISION_SIZES, "vision-gemma3": GEMMA3_SIZES, "audio": {"tiny": None}}  # each kind's --size choices

# audio (ultravox): ultravox-v0_5 is whisper-large-v3-turbo (128 mels, hidden 1280, 32 layers, 20 heads), stack 8.
# Stack 8 aborts this clip.cpp: it counts 3000/8/2 = 187 tokens a window, its graph makes ceil(1500/8) = 188, and
# clip_encode GGML_ABORTs on the mismatch; a factor that divides 1500 agrees. 15 (MERaLiON's): 100 tokens a window.
A_MELS, A_HIDDEN, A_LAYERS, A_HEADS, A_FFN, A_POSITIONS, A_STACK, A_PROJ = 128, 64, 2, 4, 256, 1500, 15, 256


class _Rand:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def f16(self, *shape: int) -> np.ndarray:  # numpy shape, reversed in the file (ggml ne)
        return (self.rng.standard_normal(shape, dtype=np.float32) * synth.WEIGHT_STD).astype(np.float16)

    def f32(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape, dtype=np.float32) * synth.WEIGHT_STD

    def bias(self, n: int) -> np.ndarray:
        return self.rng.standard_normal(n, dtype=np.float32) * (synth.WEIGHT_STD / 2)


def _header(gguf, out: Path, name: str):
    w = gguf.GGUFWriter(out, "clip")  # MODEL_ARCH.MMPROJ
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    return w


def _blocks(w, r: _Rand, prefix: str, layers: int, h: int, f: int, k_bias: bool) -> None:
    for i in range(layers):
        b = f"{prefix}.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"{b}.{name}.weight", r.f16(h, h))
            if name != "attn_k" or k_bias:  # Whisper's k_proj has no bias (clip.cpp asserts it)
                w.add_tensor(f"{b}.{name}.bias", r.bias(h))
        for ln in ("ln1", "ln2"):
            w.add_tensor(f"{b}.{ln}.weight", np.ones(h, dtype=np.float32))
            w.add_tensor(f"{b}.{ln}.bias", np.zeros(h, dtype=np.float32))
        w.add_tensor(f"{b}.ffn_up.weight", r.f16(f, h))  # ne [h, f]; ne[0] != h on ffn_down, so no legacy swap
        w.add_tensor(f"{b}.ffn_up.bias", r.bias(f))
        w.add_tensor(f"{b}.ffn_down.weight", r.f16(h, f))
        w.add_tensor(f"{b}.ffn_down.bias", r.bias(h))
    w.add_tensor(f"{prefix}.post_ln.weight", np.ones(h, dtype=np.float32))
    w.add_tensor(f"{prefix}.post_ln.bias", np.zeros(h, dtype=np.float32))


def _siglip_hparams(w, v: VisionSize, n_embd_text: int) -> None:
    """What conversion/base.py's MmprojModel writes for a vision tower (before the projector's own keys)."""
    w.add_clip_has_vision_encoder(True)
    w.add_vision_projection_dim(n_embd_text)
    w.add_vision_image_size(v.image)
    w.add_vision_patch_size(v.patch)
    w.add_vision_embedding_length(v.hidden)
    w.add_vision_feed_forward_length(v.ffn)
    w.add_vision_block_count(v.layers)
    w.add_vision_head_count(v.heads)
    w.add_vision_image_mean([0.5, 0.5, 0.5])
    w.add_vision_image_std([0.5, 0.5, 0.5])


def _siglip_tensors(w, r: _Rand, v: VisionSize) -> None:
    """The SigLIP tower: patch embedding (conv2d, F32 as converted), positions, blocks, post-norm."""
    n_patches = (v.image // v.patch) ** 2
    w.add_tensor("v.patch_embd.weight", r.f32(v.hidden, 3, v.patch, v.patch))  # conv2d kernel, ne [p, p, 3, h]
    w.add_tensor("v.patch_embd.bias", r.bias(v.hidden))
    w.add_tensor("v.position_embd.weight", r.f32(n_patches, v.hidden))
    _blocks(w, r, "v", v.layers, v.hidden, v.ffn, k_bias=True)


def write_vision(out: Path, seed: int = 0, n_embd_text: int = N_EMBD_TEXT, size: str = "tiny") -> None:
    """clip.cpp's PROJECTOR_TYPE_IDEFICS3 (models/siglip.cpp): SigLIP ViT, pixel shuffle, ``mm.model.fc``."""
    v = VISION_SIZES[size]
    gguf, r, h = synth._gguf(), _Rand(seed), v.hidden
    w = _header(gguf, out, f"synthetic {size} SmolVLM mmproj (idefics3, random weights)")
    _siglip_hparams(w, v, n_embd_text)
    w.add_clip_projector_type(gguf.VisionProjectorType.IDEFICS3)
    w.add_vision_attention_layernorm_eps(1e-6)
    w.add_vision_projector_scale_factor(v.scale)
    w.add_vision_use_gelu(True)
    w.add_vision_preproc_image_size(v.longest_edge)
    _siglip_tensors(w, r, v)
    w.add_tensor("mm.model.fc.weight", r.f16(n_embd_text, h * v.scale * v.scale))
    synth.write_out(w)


def write_vision_gemma3(out: Path, seed: int = 0, n_embd_text: int = N_EMBD_TEXT, size: str = "tiny") -> None:
    """clip.cpp's PROJECTOR_TYPE_GEMMA3 (models/siglip.cpp): SigLIP ViT, avg pool by n_merge, RMS norm
    ``mm.soft_emb_norm``, ``mm.input_projection``; the keys in conversion/gemma.py's Gemma3VisionModel order."""
    v = GEMMA3_SIZES[size]
    gguf, r, h = synth._gguf(), _Rand(seed), v.hidden
    w = _header(gguf, out, f"synthetic {size} Gemma 3 mmproj (gemma3, random weights)")
    _siglip_hparams(w, v, n_embd_text)
    w.add_clip_projector_type(gguf.VisionProjectorType.GEMMA3)
    w.add_vision_attention_layernorm_eps(1e-6)
    w.add_vision_use_gelu(True)
    if v.scale != 4:  # the converter writes it only when it is not Gemma 3's 4 (clip.cpp's default n_merge)
        w.add_vision_projector_scale_factor(v.scale)

    _siglip_tensors(w, r, v)
    # Gemma3RMSNorm scales by (1 + w); the converter adds the 1, so a zero-initialised norm is all ones here
    w.add_tensor("mm.soft_emb_norm.weight", np.ones(h, dtype=np.float32))
    # an nn.Parameter (vision hidden, text hidden), not a Linear: ne [n_embd_text, h]; the graph transposes it
    w.add_tensor("mm.input_projection.weight", r.f16(h, n_embd_text))
    synth.write_out(w)


def write_audio(out: Path, seed: int = 0, n_embd_text: int = N_EMBD_TEXT) -> None:
    """clip.cpp's PROJECTOR_TYPE_ULTRAVOX (models/whisper-enc.cpp): Whisper encoder, frame stacking, SwiGLU MLP."""
    gguf, r, h = synth._gguf(), _Rand(seed), A_HIDDEN
    w = _header(gguf, out, "synthetic tiny Ultravox mmproj (ultravox, random weights)")
    w.add_clip_has_audio_encoder(True)
    w.add_audio_projection_dim(n_embd_text)
    w.add_audio_embedding_length(h)
    w.add_audio_feed_forward_length(A_FFN)
    w.add_audio_block_count(A_LAYERS)
    w.add_audio_head_count(A_HEADS)
    w.add_clip_projector_type(gguf.VisionProjectorType.ULTRAVOX)
    w.add_audio_num_mel_bins(A_MELS)
    w.add_audio_attention_layernorm_eps(1e-5)
    w.add_audio_stack_factor(A_STACK)

    w.add_tensor("a.conv1d.1.weight", r.f16(h, A_MELS, 3))  # ne [3, mels, h]; biases ne [1, h] as converted
    w.add_tensor("a.conv1d.1.bias", r.bias(h).reshape(h, 1))
    w.add_tensor("a.conv1d.2.weight", r.f16(h, h, 3))
    w.add_tensor("a.conv1d.2.bias", r.bias(h).reshape(h, 1))
    w.add_tensor("a.position_embd.weight", r.f32(A_POSITIONS, h))
    _blocks(w, r, "a", A_LAYERS, h, A_FFN, k_bias=False)
    w.add_tensor("mm.a.norm_pre.weight", np.ones(h * A_STACK, dtype=np.float32))
    w.add_tensor("mm.a.mlp.1.weight", r.f16(2 * A_PROJ, h * A_STACK))  # SwiGLU: gate and up halves
    w.add_tensor("mm.a.norm_mid.weight", np.ones(A_PROJ, dtype=np.float32))
    w.add_tensor("mm.a.mlp.2.weight", r.f16(n_embd_text, A_PROJ))
    synth.write_out(w)


def write_media(kind: str, out_dir: Path, seed: int = 0, n_embd_text: int = N_EMBD_TEXT, size: str = "tiny") -> Path:
    """Write ``out_dir/synth-{kind}-mmproj.gguf`` (another ``size``: ``synth-{kind}-{size}-mmproj.gguf``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if size not in SIZES[kind]:
        raise ValueError(f"{kind}: unknown size {size!r}: one of {', '.join(SIZES[kind])}")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / (f"synth-{kind}-mmproj.gguf" if size == "tiny" else f"synth-{kind}-{size}-mmproj.gguf")
    if kind == "vision":
        write_vision(out, seed, n_embd_text, size)
    elif kind == "vision-gemma3":
        write_vision_gemma3(out, seed, n_embd_text, size)
    else:
        write_audio(out, seed, n_embd_text)
    return out


def png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an (height, width, 3) uint8 array (filter 0 on every row)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def sample_images(size: tuple[int, int] = (64, 64)) -> tuple[bytes, bytes]:
    """Two different PNGs of ``size`` (width, height): a colour gradient and seeded noise."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    grad = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    noise = np.random.default_rng(1).integers(0, 256, (height, width, 3))
    return png(grad.astype(np.uint8)), png(noise.astype(np.uint8))


def sample_tones(sample_rate: int, seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two different sine waves (440 Hz, 880 Hz) of ``seconds``, float32 in [-0.5, 0.5]."""
    t = np.arange(int(sample_rate * seconds), dtype=np.float32) / sample_rate
    return tuple((0.5 * np.sin(2 * math.pi * f * t)).astype(np.float32) for f in (440.0, 880.0))  # type: ignore


def _piece(llama_cpp, vocab, token: int) -> str:
    if token < 0:
        return "<NULL>"  # LLAMA_TOKEN_NULL: mtmd looked up a special token the vocabulary lacks
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    return buf.raw[: max(n, 0)].decode("utf-8", "replace")


def _run(llama_cpp, m, ctx, vocab, n_embd: int, bitmap, prompt: str) -> dict:
    """Tokenize ``prompt`` (one media marker) with ``bitmap``, encode every media chunk; frees the bitmap."""
    chunks = m.mtmd_input_chunks_init()
    try:
        text = m.mtmd_input_text(prompt.encode(), len(prompt.encode()), True, True)
        bitmaps = (m.mtmd_bitmap_p_ctypes * 1)(bitmap)
        if (rc := m.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, 1)) != 0:
            raise RuntimeError(f"mtmd_tokenize failed: {rc}")
        layout, embds, ms, n_media, n_media_pos, null_tokens, non_causal = [], [], 0.0, 0, 0, 0, None
        for i in range(m.mtmd_input_chunks_size(chunks)):
            chunk = m.mtmd_input_chunks_get(chunks, i)
            kind, n_tok = m.mtmd_input_chunk_get_type(chunk), m.mtmd_input_chunk_get_n_tokens(chunk)
            if kind == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ptr = m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                tokens = [ptr[j] for j in range(n.value)]
                null_tokens += sum(t < 0 for t in tokens)
                layout.append("".join(_piece(llama_cpp, vocab, t) for t in tokens))
                continue
            if non_causal is None:
                non_causal = bool(m.mtmd_decode_use_non_causal(ctx, chunk))
            n_media += n_tok
            n_media_pos += m.mtmd_input_chunk_get_n_pos(chunk)
            start = time.perf_counter()
            if (rc := m.mtmd_encode_chunk(ctx, chunk)) != 0:
                raise RuntimeError(f"mtmd_encode_chunk failed: {rc}")
            ms += (time.perf_counter() - start) * 1000
            out = np.ctypeslib.as_array(m.mtmd_get_output_embd(ctx), shape=(n_tok * n_embd,))
            embds.append(out.reshape(n_tok, n_embd).copy())
            layout.append(f"<{'image' if kind == m.MTMD_INPUT_CHUNK_TYPE_IMAGE else 'audio'}:{n_tok}>")
        return {
            "n_chunks": len(layout),
            "n_media_chunks": len(embds),
            "n_media_tokens": n_media,
            "n_media_pos": n_media_pos,
            "n_tokens_total": m.mtmd_helper_get_n_tokens(chunks),
            "n_pos_total": m.mtmd_helper_get_n_pos(chunks),
            "non_causal": non_causal,
            "null_text_tokens": null_tokens,
            "prompt": "".join(layout),
            "encode_ms": round(ms, 2),
            "embd": np.concatenate(embds),
        }
    finally:
        m.mtmd_input_chunks_free(chunks)
        m.mtmd_bitmap_free(bitmap)


@contextlib.contextmanager
def loaded(text_model: Path, mmproj: Path, n_threads: int) -> Iterator[tuple[object, object, float]]:
    """``text_model`` and ``mmproj`` loaded with llama-cpp-python's mtmd bindings: the model, the mtmd context and
    the milliseconds the context took to load; both freed after."""
    import llama_cpp
    from llama_cpp import mtmd_cpp as m

    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(text_model).encode(), llama_cpp.llama_model_default_params())
    if not model:
        raise RuntimeError(f"cannot load {text_model}")
    ctx = None
    try:
        params = m.mtmd_context_params_default()
        params.n_threads, params.print_timings = n_threads, False
        start = time.perf_counter()
        ctx = m.mtmd_init_from_file(str(mmproj).encode(), model, params)
        if not ctx:
            raise RuntimeError(f"mtmd_init_from_file failed for {mmproj}")
        yield model, ctx, (time.perf_counter() - start) * 1000
    finally:
        if ctx:
            m.mtmd_free(ctx)
        llama_cpp.llama_model_free(model)


def check(mmproj: Path, text_model: Path = synth.DEFAULT_TOKENIZER, n_threads: int = 2) -> dict:
    """Load ``mmproj`` with llama-cpp-python's mtmd bindings next to ``text_model`` and encode test media: one 64x64
    PNG (vision) or one second of a sine wave (audio). Also encodes the same input again (must be bitwise identical)
    and a different one (must differ), and a 300x200 image for the tiling."""
    import llama_cpp
    from llama_cpp import mtmd_cpp as m

    with loaded(text_model, mmproj, n_threads) as (model, ctx, init_ms):
        vocab, n_embd = llama_cpp.llama_model_get_vocab(model), llama_cpp.llama_model_n_embd_inp(model)
        vision, audio = bool(m.mtmd_support_vision(ctx)), bool(m.mtmd_support_audio(ctx))
        prompt = f"<|im_start|>user\n{m.mtmd_default_marker().decode()}What is this?<|im_end|>\n"

        if vision:  # bitmaps from PNG bytes through the helper (stb_image), as a server would get them
            (a, b), (c, _) = sample_images(), sample_images((300, 200))
            bufs = [(ctypes.c_uint8 * len(d)).from_buffer_copy(d) for d in (a, b, a, c)]
            bitmaps = [m.mtmd_helper_bitmap_init_from_buf(ctx, buf, len(buf), False) for buf in bufs]
        else:  # mono float32 PCM at the model's sample rate
            sample_rate = m.mtmd_get_audio_sample_rate(ctx)
            a, b = sample_tones(sample_rate)
            f32p = ctypes.POINTER(ctypes.c_float)
            bitmaps = [m.mtmd_bitmap_init_from_audio(len(d), d.ctypes.data_as(f32p)) for d in (a, b, a)]
        if not all(bitmaps):
            raise RuntimeError("cannot make a bitmap")
        runs = [_run(llama_cpp, m, ctx, vocab, n_embd, bmp, prompt) for bmp in bitmaps]
        first = runs[0]
        out = {
            "caps": {"vision": vision, "audio": audio},
            "mrope": bool(m.mtmd_decode_use_mrope(ctx)),
            **{k: v for k, v in first.items() if k != "embd"},
            "embd_shape": list(first["embd"].shape),
            "embd_std": round(float(first["embd"].std()), 4),
            "finite": bool(np.isfinite(first["embd"]).all()),
            "init_ms": round(init_ms, 1),
            "same_input_identical": first["embd"].tobytes() == runs[2]["embd"].tobytes(),
            "different_input_differs": not np.array_equal(first["embd"], runs[1]["embd"]),
        }
        if vision:
            out["image_300x200"] = {k: runs[3][k] for k in ("n_media_chunks", "n_media_tokens", "prompt")}
        else:
            out["sample_rate"] = sample_rate
        return out
