"""llama.cpp's own multimodal path: an oracle for edge-run's image answers.

``first_token`` tokenizes a prompt and an image with mtmd, decodes them with ``mtmd_helper_eval_chunks`` (which
lays out each projector's positions and attention as llama.cpp means them: Gemma 3's rows unmasked, M-RoPE's
grid) and returns the first token's top log-probabilities. No edge-run code runs there. It runs in a process of
its own, with no repacked weights (as edge-run loads them) and without ggml-cpu's tiled K-quant kernel, whose
arithmetic depends on a call's rows (ggml reads ``GGML_CPU_TILED_MM`` once a process): a server it is compared with
must run without it too, since the oracle cuts a prompt otherwise.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def first_token(model: Path, mmproj: Path, prompt: str, image: Path) -> tuple[int, list[tuple[str, float]]]:
    """The prompt's token count and its next token's 5 best ``(piece, logprob)``, greedy order."""
    args = [sys.executable, __file__, str(model), str(mmproj), prompt, str(image)]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "GGML_CPU_TILED_MM": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    n, top = json.loads(done.stdout.splitlines()[-1])
    return n, [tuple(t) for t in top]


def _first_token(model: Path, mmproj: Path, prompt: str, image: bytes, top: int = 5) -> tuple[int, list]:
    import llama_cpp as L
    from llama_cpp import mtmd_cpp as M

    L.llama_backend_init()
    params = L.llama_model_default_params()
    params.use_mmap = True
    params.use_extra_bufts = False  # as edge-run loads weights (and llama-server --no-repack)
    lm = L.llama_model_load_from_file(str(model).encode(), params)
    assert lm, model
    cparams = L.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = 2048, 512, 512
    cparams.n_threads = cparams.n_threads_batch = 2
    ctx = L.llama_init_from_model(lm, cparams)
    mparams = M.mtmd_context_params_default()
    mparams.use_gpu, mparams.n_threads, mparams.print_timings, mparams.warmup = False, 2, False, False
    mctx = M.mtmd_init_from_file(str(mmproj).encode(), lm, mparams)
    chunks = M.mtmd_input_chunks_init()
    buf = (ctypes.c_uint8 * len(image)).from_buffer_copy(image)
    bitmap = M.mtmd_helper_bitmap_init_from_buf(mctx, buf, len(image), False)
    try:
        vocab = L.llama_model_get_vocab(lm)
        raw = prompt.encode()
        text = M.mtmd_input_text(raw, len(raw), bool(L.llama_vocab_get_add_bos(vocab)), True)
        bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert M.mtmd_tokenize(mctx, chunks, ctypes.byref(text), bitmaps, 1) == 0
        n_past = L.llama_pos(0)
        assert M.mtmd_helper_eval_chunks(mctx, ctx, chunks, 0, 0, 512, True, ctypes.byref(n_past)) == 0
        n_vocab = L.llama_vocab_n_tokens(vocab)
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).astype(np.float64)
        logprobs = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        best = np.argsort(-logprobs, kind="stable")[:top]
        return int(M.mtmd_helper_get_n_tokens(chunks)), [(_piece(L, vocab, int(t)), float(logprobs[t])) for t in best]
    finally:
        M.mtmd_bitmap_free(bitmap)
        M.mtmd_input_chunks_free(chunks)
        M.mtmd_free(mctx)
        L.llama_free(ctx)
        L.llama_model_free(lm)


def _piece(L, vocab, token: int) -> str:
    buf = ctypes.create_string_buffer(256)
    n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    return buf.raw[:n].decode("utf-8", errors="replace")


if __name__ == "__main__":
    model, mmproj, prompt, image = sys.argv[1:5]
    print(json.dumps(_first_token(Path(model), Path(mmproj), prompt, Path(image).read_bytes())))
