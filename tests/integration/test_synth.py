"""bench/synth.py: a random-weight GGUF in the llama layout that llama.cpp loads and generates from (speed only)."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from edge_run.engine import Engine, EngineOptions, SamplerSpec
from tests.support import share_of_cores

gguf = pytest.importorskip("gguf")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synth  # noqa: E402

pytestmark = pytest.mark.integration

N_TOKENS = 12


def expected_layout(shape: synth.Shape, n_vocab: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """What llama.cpp's llama loader asks for (ne0 first), with llama.cpp's Q4_K_M mix for 2 layers."""
    h, kv, f = shape.hidden, shape.kv_heads * shape.head_dim, shape.ffn
    out: dict[str, tuple[tuple[int, ...], str]] = {
        "rope_freqs.weight": ((shape.head_dim // 2,), "F32"),
        "token_embd.weight": ((h, n_vocab), "Q4_K"),
        "output_norm.weight": ((h,), "F32"),
        "output.weight": ((h, n_vocab), "Q6_K"),
    }
    for i in range(shape.layers):
        more = i == shape.layers - 1  # use_more_bits for 2 layers: the last only
        out |= {
            f"blk.{i}.attn_norm.weight": ((h,), "F32"),
            f"blk.{i}.attn_q.weight": ((h, h), "Q4_K"),
            f"blk.{i}.attn_k.weight": ((h, kv), "Q4_K"),
            f"blk.{i}.attn_v.weight": ((h, kv), "Q6_K" if more else "Q4_K"),
            f"blk.{i}.attn_output.weight": ((h, h), "Q4_K"),
            f"blk.{i}.ffn_norm.weight": ((h,), "F32"),
            f"blk.{i}.ffn_gate.weight": ((h, f), "Q4_K"),
            f"blk.{i}.ffn_up.weight": ((h, f), "Q4_K"),
            f"blk.{i}.ffn_down.weight": ((f, h), "Q6_K" if more else "Q4_K"),
        }
    return out


def test_a_tiny_synthetic_model_has_the_llama_layout_and_generates_exactly_n_tokens(tmp_path: Path, model_path: Path):
    path = tmp_path / "tiny.gguf"
    synth.write("tiny", "q4_k_m", path, tokenizer=model_path)

    reader = gguf.GGUFReader(path)
    source = {key: value for key, value, _, _ in synth.tokenizer_fields(model_path)}  # cached by write()
    n_vocab = len(source["tokenizer.ggml.tokens"])
    shape = synth.SHAPES["tiny"]
    assert shape.layers == 2
    got = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name) for t in reader.tensors}
    assert got == expected_layout(shape, n_vocab)
    llama_names = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.LLAMA]}
    assert set(got) <= {n.format(bid=i) + ".weight" for n in llama_names for i in range(shape.layers)}
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    assert fields["general.architecture"] == "llama"
    assert fields["llama.embedding_length"] == shape.hidden
    assert fields["llama.block_count"] == shape.layers
    assert fields["llama.attention.head_count_kv"] == shape.kv_heads
    assert fields["llama.rope.dimension_count"] == shape.head_dim
    assert fields["llama.vocab_size"] == n_vocab
    for key in ("tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"):
        assert reader.fields[key].contents() == source[key]

    async def go() -> list:
        engine = Engine(
            "synth",
            path,
            EngineOptions(ctx=256, threads=share_of_cores(), gpu_layers=0, slots=1, max_queue=1, batch=64),
        )
        await engine.load()
        try:
            assert engine.model is not None
            eog = [t for t in range(engine.model.n_vocab) if engine.model.is_eog(t)]
            assert eog
            prompt = await engine.prompt_tokens([{"role": "user", "content": "Say hi."}])
            spec = SamplerSpec(temperature=0, logit_bias=tuple((t, -1e9) for t in eog))
            gen = await engine.generate(prompt, spec, max_tokens=N_TOKENS, stops=(), top_logprobs=1)
            return [chunk async for chunk in gen]
        finally:
            await engine.close()

    chunks = asyncio.run(go())
    assert chunks[-1].finish_reason == "length"
    assert all(c.error is None for c in chunks)
    logprobs = [lp for c in chunks for lp in (c.logprobs or [])]
    assert len(logprobs) == N_TOKENS
    assert all(math.isfinite(lp.logprob) and all(math.isfinite(v) for _, v in lp.top) for lp in logprobs)


def test_vlm_writes_a_text_model_and_its_projector_that_mtmd_loads_and_encodes(tmp_path: Path, model_path: Path):
    """``synth.py vlm``: the tiny llama text model and a SmolVLM projector for its 256-wide embeddings; llama.cpp's
    mtmd loads the pair, and encodes an image the same twice and another one differently."""
    args = [sys.executable, synth.__file__, "vlm", "--out", str(tmp_path), "--tokenizer", str(model_path), "--check"]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    model, mmproj, report = done.stdout.strip().splitlines()[-3:]
    assert Path(model).is_file() and Path(mmproj).is_file()
    checked = json.loads(report)
    assert checked["caps"]["vision"] and checked["embd_shape"][1] == synth.SHAPES["tiny"].hidden
    assert checked["same_input_identical"] and checked["different_input_differs"] and checked["finite"]
