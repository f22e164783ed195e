"""Images and audio against llama-server (issue 26): edge-run's answers next to llama.cpp's own server's.

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/media_oracle.py [--kinds vision audio ...] [--tokens 24]

For each synthetic projector kind (``bench/synth.py KIND``, default every kind in ``synth.MEDIA_KINDS``) the bench
writes the projector, starts llama-server (the vendored llama.cpp's, ``--mmproj``, ``-np 1 -c 4096``, a fixed
``--seed``, ``--no-repack``) on the text model, sends a few chat requests at temperature 0 with ``logprobs`` and
``top_logprobs: 2`` (``cache_prompt: false``), stops it, then serves the same text model and projector with edge-run
(``--slots 1 --ctx 4096``) and sends the same requests. One server at a time, each with ``--threads`` (2).

Requests (vision): one image after a question; two images in one message; an image in a second user turn after an
assistant turn. Audio: one clip after a question; a second clip in a second user turn. And a text-only control.
Rows:

- ``as sent``: llama-server gets the very body edge-run gets.
- ``aligned``: only where edge-run's prompt has other tokens than llama-server's for the same body. llama-server
  joins a message's text parts with ``\\n`` and puts nothing next to a media marker (common/chat.cpp); edge-run
  before 8ce27de joined every part with ``\\n``, so ``[text, image]`` was ``text<media>`` there and
  ``text\\n<media>`` here. ``aligned`` rewrites the parts so that llama-server renders that string. Which
  rendering is edge-run's is read from the prompt tokens, so the bench holds either way.
- ``same calls`` (the first media request, its question padded with `` ok`` words until mtmd's first media chunk
  starts at position 64): both servers cut the prompt into the same ``llama_decode`` calls, so the logprobs must
  agree to float noise (~2e-4, as the text-only control does). Elsewhere edge-run decodes blocks of 64 rows by
  position and llama-server each chunk whole: on random projector rows the logprobs move with the cut by up to a
  few tenths and a near-tie can flip; the ``-b 64 -ub 64`` table shows llama-server moving as much against itself.
  Past position 255 edge-run decodes a lone row on one thread (its answers do not depend on the thread count) and
  llama-server on ``--threads``: flash attention splits that row's KV otherwise, so with 2 threads an answer that
  runs past 255 drifts again; ``--threads 1`` compares those too.

Projectors whose marker tokens the text model lacks (idefics3 looks ``<fake_token_around_image>`` and
``<global-img>`` up as whole tokens; SmolLM2 has neither) make mtmd put ``LLAMA_TOKEN_NULL`` in the prompt:
llama-server refuses the request ("Invalid token"), edge-run drops the null tokens. The bench records that, then
runs the kind again on a copy of the text model whose spare control tokens are renamed to the markers, so that both
servers see real tokens (label ``KIND +markers``).

The table: prompt tokens on both servers, tokens compared (up to the first difference), whether the token texts
are identical, the largest |logprob difference| over the common tokens; at a first difference both servers' tokens
and their top-2 margins. Then llama-server against itself with ``-b 64 -ub 64``. Exit code 1 if any answers differ
in text (``--exact-only``: only in the text-only and ``same calls`` rows); a refusal is a row's result, not a
difference. ``--edge-run-root DIR`` serves edge-run from another tree (a ``git archive`` of a commit) while
edge_run/ is being edited.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import synth  # noqa: E402
import synth_media  # noqa: E402
from peers import LlamaServer, _free_port, cpu_model, start_llama_server, stop_process  # noqa: E402

from bench import wait_healthy  # noqa: E402

LLAMA_SERVER = Path("/work/peer/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server")
MARKER = "<__media__>"  # edge-run's (mtmd's default); llama-server's is random, read from /props
CTX, SEED, SAMPLE_RATE = 4096, 42, 16_000
# Tokens mtmd looks up whole (lookup_token) for a projector type; missing ones become LLAMA_TOKEN_NULL
LOOKED_UP = {"idefics3": ("<fake_token_around_image>", "<global-img>")}
BLOCK = 64  # edge_run.engine.scheduler.PREFILL_BLOCK (not imported: edge_run/ may be mid-edit)
LONE_ROW_FROM = 256  # edge_run.engine.llama.context.Context.splits_lone_row: a lone row from here on one thread
MAX_PAD = 130  # ' ok' words tried for the 'same calls' row
SPARE_PREFIXES = ("<jupyter_", "<issue_")  # SmolLM2's (StarCoder's) control tokens llama.cpp gives no role


# --- inputs -------------------------------------------------------------------------------------------------------


def wav(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """A mono 16-bit WAV of float samples in [-1, 1]."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def image_part(data: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}


def audio_part(data: bytes) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def requests_for(inputs: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """name -> messages, for a projector that takes ``inputs``."""
    # the control: no media, so any logprob gap here is the two servers' text path (batch splits, kernels)
    out: dict[str, list[dict[str, Any]]] = {"text only": [{"role": "user", "content": "What is in this picture?"}]}
    if "image" in inputs:
        (a, _), (_, b) = synth_media.sample_images(), synth_media.sample_images((96, 64))  # gradient; noise
        out["one image"] = [{"role": "user", "content": [text("What is in this picture?"), image_part(a)]}]
        out["two images"] = [{"role": "user", "content": [text("Compare these two pictures."), image_part(a),
                                                          image_part(b)]}]  # fmt: skip
        out["image in turn 2"] = [
            {"role": "user", "content": [text("Describe this picture."), image_part(a)]},
            {"role": "assistant", "content": "It is a small square picture."},
            {"role": "user", "content": [text("And this one?"), image_part(b)]},
        ]
    if "audio" in inputs:
        low, high = (wav(t) for t in synth_media.sample_tones(SAMPLE_RATE))
        out["one clip"] = [{"role": "user", "content": [text("What do you hear?"), audio_part(low)]}]
        out["clip in turn 2"] = [
            {"role": "user", "content": [text("What do you hear?"), audio_part(low)]},
            {"role": "assistant", "content": "A steady tone."},
            {"role": "user", "content": [text("And now?"), audio_part(high)]},
        ]
    return out


def is_media(part: dict[str, Any]) -> bool:
    return part.get("type") in ("image_url", "input_audio")


def edge_run_join(parts: list[dict[str, Any]]) -> str:
    """A message's parts as edge-run renders them: every part joined by a newline, a marker for each media part."""
    return "\n".join(MARKER if is_media(p) else p["text"] for p in parts)


def aligned(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each part list rewritten so that llama-server's join gives edge-run's string: the texts
    between two media parts become one text part each (llama-server adds no newline next to a media marker)."""
    out = []
    for m in messages:
        if not isinstance(m["content"], list):
            out.append(m)
            continue
        media = iter([p for p in m["content"] if is_media(p)])
        parts: list[dict[str, Any]] = []
        for i, piece in enumerate(edge_run_join(m["content"]).split(MARKER)):
            if i:
                parts.append(next(media))
            if piece:
                parts.append(text(piece))
        out.append({**m, "content": parts})
    return out


# --- models -------------------------------------------------------------------------------------------------------


def header(path: Path) -> dict[str, Any]:
    import gguf

    reader = gguf.GGUFReader(path)
    keep = ("general.architecture", "clip.projector_type", "clip.vision.projector_type", "clip.audio.projector_type",
            "clip.vision.projection_dim", "clip.audio.projection_dim", "clip.has_vision_encoder",
            "clip.has_audio_encoder")  # fmt: skip
    out = {k: f.contents() for k, f in reader.fields.items() if k in keep or k.endswith(".embedding_length")}
    out["tokens"] = (
        reader.fields["tokenizer.ggml.tokens"].contents() if "tokenizer.ggml.tokens" in reader.fields else []
    )
    return out


def with_markers(model: Path, markers: tuple[str, ...], out: Path) -> dict[str, str]:
    """A copy of ``model`` whose spare control tokens are renamed to ``markers``; {old name: new name}."""
    import gguf

    reader = gguf.GGUFReader(model)
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    spare = [i for i, t in enumerate(tokens) if types[i] == gguf.TokenType.CONTROL and t.startswith(SPARE_PREFIXES)]
    if len(spare) < len(markers):
        raise RuntimeError(f"{model.name} has {len(spare)} spare control tokens, {len(markers)} needed")
    renamed = {}
    for i, marker in zip(spare, markers, strict=False):
        renamed[tokens[i]] = marker
        tokens[i] = marker
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(out, arch)
    for name, f in reader.fields.items():
        if name == "general.architecture" or name.startswith("GGUF."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = tokens if name == "tokenizer.ggml.tokens" else f.contents()
        writer.add_key_value(name, value, vtype, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    return renamed


def media_layout(model: Path, mmproj: Path, prompts: list[str], media: list[bytes]) -> list[tuple[int | None, bool]]:
    """For each prompt (``MARKER`` per file of ``media``), where its first media chunk starts as mtmd cuts it (as
    both servers' mtmd_tokenize does), and whether a media chunk's rows attend to each other (Gemma 3); in-process,
    on the text model's vocabulary only (nothing is encoded)."""
    import ctypes

    import llama_cpp as L
    from llama_cpp import mtmd_cpp as M

    global _quiet
    if _quiet is None:
        _quiet = L.llama_log_callback(_quiet_log)
    L.llama_backend_init()
    L.llama_log_set(_quiet, ctypes.c_void_p(0))
    M.mtmd_log_set(_quiet, ctypes.c_void_p(0))
    M.mtmd_helper_log_set(_quiet, ctypes.c_void_p(0))
    mparams = L.llama_model_default_params()
    mparams.vocab_only = True
    lm = L.llama_model_load_from_file(str(model).encode(), mparams)
    if not lm:
        raise RuntimeError(f"cannot load {model}")
    ctx, bitmaps = None, []
    try:
        params = M.mtmd_context_params_default()
        params.use_gpu, params.warmup, params.print_timings = False, False, False
        params.media_marker = MARKER.encode()
        ctx = M.mtmd_init_from_file(str(mmproj).encode(), lm, params)
        if not ctx:
            raise RuntimeError(f"mtmd_init_from_file failed for {mmproj}")
        for data in media:
            buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
            bitmaps.append(M.mtmd_helper_bitmap_init_from_buf(ctx, buf, len(data), False))
        array = (M.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
        out: list[tuple[int | None, bool]] = []
        for prompt in prompts:
            chunks = M.mtmd_input_chunks_init()
            try:
                raw = prompt.encode()
                inp = M.mtmd_input_text(raw, len(raw), True, True)
                if M.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), array, len(bitmaps)) != 0:
                    out.append((None, False))
                    continue
                pos, at, whole = 0, None, False
                for i in range(M.mtmd_input_chunks_size(chunks)):
                    chunk = M.mtmd_input_chunks_get(chunks, i)
                    if M.mtmd_input_chunk_get_type(chunk) != M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                        at = pos if at is None else at
                        whole |= bool(M.mtmd_decode_use_non_causal(ctx, chunk))
                    pos += M.mtmd_input_chunk_get_n_pos(chunk)
                out.append((at, whole))
            finally:
                M.mtmd_input_chunks_free(chunks)
        return out
    finally:
        for b in bitmaps:
            M.mtmd_bitmap_free(b)
        if ctx:
            M.mtmd_free(ctx)
        L.llama_model_free(lm)


def _quiet_log(level: int, text: bytes, user_data: Any) -> None:
    pass


_quiet: Any = None  # the ctypes callback, made on first use (llama_cpp imported late)


def padded(messages: list[dict[str, Any]], words: int) -> list[dict[str, Any]]:
    """``messages`` with `` ok`` ``words`` times after the text part before the first media part."""
    out, done = [], False
    for m in messages:
        parts = m["content"]
        if not done and isinstance(parts, list) and any(is_media(x) for x in parts):
            at = next(i for i, x in enumerate(parts) if is_media(x)) - 1
            if at >= 0 and parts[at].get("type") == "text":
                parts = [*parts[:at], text(parts[at]["text"] + " ok" * words), *parts[at + 1 :]]
                done = True
        out.append({**m, "content": parts})
    return out


def media_bytes(messages: list[dict[str, Any]]) -> list[bytes]:
    """The files of every media part of ``messages``, in order."""
    out = []
    for m in messages:
        for part in m["content"] if isinstance(m["content"], list) else []:
            if part.get("type") == "image_url":
                out.append(base64.b64decode(part["image_url"]["url"].split(",", 1)[1]))
            elif part.get("type") == "input_audio":
                out.append(base64.b64decode(part["input_audio"]["data"]))
    return out


# --- servers ------------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    error: str = ""  # "" when answered
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    margins: list[float | None] = field(default_factory=list)  # top-1 minus top-2 logprob at each step
    prompt_tokens: int | None = None
    finish: str = ""


def ask(url: str, model: str, messages: list[dict[str, Any]], tokens: int, **extra: Any) -> Answer:
    body = {"model": model, "messages": messages, "max_tokens": tokens, "temperature": 0, "seed": SEED,
            "logprobs": True, "top_logprobs": 2, **extra}  # fmt: skip
    try:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
    except httpx.HTTPError as e:
        return Answer(error=f"{type(e).__name__}: {e}")
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        return Answer(error=f"{r.status_code} {message}")
    data = r.json()
    choice = data["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    if content and choice.get("finish_reason") == "stop" and not content[-1]["token"]:
        content = content[:-1]  # llama-server lists the end-of-generation token (an empty piece); OpenAI does not
    margins: list[float | None] = []
    for c in content:
        top = sorted((t["logprob"] for t in c.get("top_logprobs") or []), reverse=True)
        margins.append(top[0] - top[1] if len(top) > 1 else None)
    return Answer(
        text=choice["message"].get("content") or "",
        tokens=[c["token"] for c in content],
        logprobs=[c["logprob"] for c in content],
        margins=margins,
        prompt_tokens=data.get("usage", {}).get("prompt_tokens"),
        finish=choice.get("finish_reason") or "",
    )


class LlamaPeer:
    """llama-server with the projector, restarted if a request kills it."""

    def __init__(self, binary: Path, model: Path, mmproj: Path, threads: int, flags: list[str]) -> None:
        self.args = (binary, model)
        self.kwargs = {"threads": threads, "slots": 1, "ctx": CTX, "alias": "oracle",
                       "extra": ["--mmproj", str(mmproj), "--seed", str(SEED), "--no-repack", *flags]}  # fmt: skip
        self.server: LlamaServer | None = None
        self.exits: list[int] = []

    def up(self) -> LlamaServer:
        if self.server is None or self.server.proc.poll() is not None:
            self.server = start_llama_server(*self.args, **self.kwargs)  # type: ignore[arg-type]
        return self.server

    def ask(self, messages: list[dict[str, Any]], tokens: int) -> Answer:
        server = self.up()
        # cache_prompt false: every prompt computed whole, whatever came before (edge-run's cached and cold prefills
        # make the same calls; llama-server's would start where its cache ends)
        answer = ask(server.url.removesuffix("/v1"), "oracle", messages, tokens, cache_prompt=False)
        if (rc := server.proc.poll()) is not None:
            self.exits.append(rc)
            answer.error = f"llama-server exited with code {rc} ({answer.error or 'mid-answer'})"
        return answer

    def render(self, messages: list[dict[str, Any]]) -> str:
        """llama-server's rendered prompt (``/apply-template``), its media marker written as edge-run's."""
        base = self.up().url.removesuffix("/v1")
        try:
            marker = httpx.get(base + "/props", timeout=30).json().get("media_marker") or "\0"
            prompt = httpx.post(base + "/apply-template", json={"messages": messages}, timeout=30).json()["prompt"]
        except (httpx.HTTPError, KeyError, ValueError) as e:
            return f"(/apply-template failed: {e})"
        return str(prompt).replace(marker, MARKER)

    def stop(self) -> None:
        if self.server is not None:
            stop_process(self.server.proc)


class EdgeRun:
    """``models add MODEL --id oracle/KIND --mmproj PROJ`` in a fresh EDGE_RUN_HOME, then ``serve`` it alone."""

    def __init__(self, model: Path, mmproj: Path, kind: str, threads: int, root: Path = ROOT) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="edge-run-oracle-"))
        self.id = f"oracle/{kind}"
        env = {**os.environ, "EDGE_RUN_HOME": str(self.home)}
        add = [sys.executable, "-m", "edge_run", "models", "add", str(model), "--id", self.id, "--mmproj", str(mmproj)]
        subprocess.run(add, cwd=root, env=env, check=True, capture_output=True)
        port = _free_port()
        flags = ["--model", self.id, "--slots", "1", "--ctx", str(CTX), "--threads", str(threads), "--no-auth",
                 "--port", str(port), "--keep-alive", "-1", "--no-browser"]  # fmt: skip
        self.log = self.home / "serve.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge_run", "serve", *flags], cwd=root, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(self.url, 180, self.proc)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.log.read_text()[-2000:]}") from e

    def ask(self, messages: list[dict[str, Any]], tokens: int) -> Answer:
        answer = ask(self.url, self.id, messages, tokens)
        if (rc := self.proc.poll()) is not None:
            answer.error = f"edge-run exited with code {rc} ({answer.error or 'mid-answer'})"
        elif answer.error.startswith("5"):  # its log says why
            tail = [x for x in self.log.read_text(errors="replace").splitlines() if x.strip()][-3:]
            answer.error += " | log: " + " / ".join(x.strip() for x in tail)
        return answer

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.home, ignore_errors=True)


# --- comparison ---------------------------------------------------------------------------------------------------


@dataclass
class Row:
    kind: str
    request: str
    mode: str
    peer: Answer
    ours: Answer
    note: str = ""

    @property
    def answered(self) -> bool:
        return not self.peer.error and not self.ours.error

    def compare(self, other: str = "edge-run") -> tuple[int, bool, float | None, str]:
        """(tokens compared, identical, max |Δ logprob| over the common tokens, what differs first)."""
        a, b = self.peer, self.ours
        same = 0
        while same < min(len(a.tokens), len(b.tokens)) and a.tokens[same] == b.tokens[same]:
            same += 1
        identical = a.tokens == b.tokens and a.text == b.text
        deltas = [abs(x - y) for x, y in zip(a.logprobs[:same], b.logprobs[:same], strict=True)]
        delta = max(deltas) if deltas else None
        if identical:
            return same, True, delta, ""
        if same < min(len(a.tokens), len(b.tokens)):

            def side(ans: Answer) -> str:
                margin = ans.margins[same]
                top2 = f", top-2 margin {margin:.3f}" if margin is not None else ""
                return f"{ans.tokens[same]!r} (logprob {ans.logprobs[same]:.3f}{top2})"

            gap = abs(a.logprobs[same] - b.logprobs[same])
            first = f"token {same}: llama-server {side(a)}, {other} {side(b)}; |Δ logprob| {gap:.3f}"
        else:
            first = (f"token {same}: llama-server stops after {len(a.tokens)} tokens ({a.finish}), {other} after "
                     f"{len(b.tokens)} ({b.finish})")  # fmt: skip
        return same, False, delta, first


def projector(kind: str, model: Path, args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]]:
    """Write ``kind``'s projector for ``model``'s embedding size; its path and header."""
    n_embd = next(v for k, v in header(model).items() if k.endswith(".embedding_length"))
    mmproj = synth_media.write_media(kind, work / kind, seed=args.seed, n_embd_text=int(n_embd))
    return mmproj, header(mmproj)


def same_calls(
    peer: LlamaPeer, model: Path, mmproj: Path, messages: list[dict[str, Any]], block: int, shape: Any
) -> tuple[list[dict[str, Any]], int, int, bool] | str:
    """``messages`` padded with `` ok`` words until mtmd's first media chunk, in llama-server's rendering of
    ``shape(messages)``, starts at a multiple of ``block``: the messages, the words, that position and whether
    media rows attend to each other; or why not.

    edge-run decodes a prompt in blocks of ``block`` rows cut by position (the final block holds the remainder, a
    Gemma 3 image is never cut), each run of text or of media rows in a block its own ``llama_decode``; llama-server
    decodes each text chunk and each media chunk whole (up to its ``-b``). With the text before the first media
    chunk exactly whole blocks, and the rest in the final block, the two make the same calls."""
    candidates = [padded(messages, w) for w in range(MAX_PAD)]
    prompts = [peer.render(shape(c)) for c in candidates]
    for w, (pos, whole) in enumerate(media_layout(model, mmproj, prompts, media_bytes(messages))):
        if pos and pos % block == 0:
            return candidates[w], w, pos, whole
    return f"no padding up to {MAX_PAD} words puts the first media chunk at a multiple of {block}"


SHAPES: dict[str, Any] = {"as sent": lambda m: m, "aligned": aligned}  # what llama-server gets of a request


def run_kind(
    label: str, model: Path, mmproj: Path, inputs: tuple[str, ...], args: argparse.Namespace
) -> tuple[list[Row], list[Row], list[str]]:
    """Every request on llama-server, then on edge-run; the rows, llama-server's against itself, the notes.

    llama-server gets each request as sent and, where the parts join otherwise, aligned; the padded request for
    the 'same calls' row is padded for each of the two renderings (edge-run gets both). Which rendering is
    edge-run's is read from the prompt tokens afterwards, so the rows hold if edge-run's join changes."""
    reqs = requests_for(inputs)
    notes: list[str] = []
    print(f"[{label}] {mmproj.name} ({', '.join(inputs)}) on {model.name}", file=sys.stderr, flush=True)

    peer = LlamaPeer(args.llama_server, model, mmproj, args.threads, shlex.split(args.peer_flags))
    sent: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (request, mode) -> what llama-server got
    for name, messages in reqs.items():
        sent[name, "as sent"] = messages
        if (other := aligned(messages)) != messages:
            sent[name, "aligned"] = other
    first = next((n for n, m in sent if m == "aligned"), None)  # the first request with media
    peer_answers: dict[tuple[str, str], Answer] = {}
    whole = False
    try:
        if first is not None:
            for mode, shape in SHAPES.items():
                notes.append(f"llama-server renders {label}, {first!r}, {mode}: {peer.render(shape(reqs[first]))!r}")
                same = same_calls(peer, model, mmproj, reqs[first], args.block, shape)
                if isinstance(same, str):
                    notes.append(f"{label}, {first}, {mode}: no 'same calls' row: {same}")
                    continue
                whole |= same[3]
                reqs[f"{first}, padded ({mode})"] = same[0]
                sent[f"{first}, padded ({mode})", "same calls"] = shape(same[0])
                notes.append(f"{label}, {first} {mode}: {same[1]} words ' ok' put the first media chunk at {same[2]}")
        for key, body in sent.items():
            peer_answers[key] = peer.ask(body, args.tokens)
    except RuntimeError as e:  # it did not start
        for key in sent:
            peer_answers.setdefault(key, Answer(error=f"llama-server: {e}"))
    finally:
        peer.stop()

    itself: list[Row] = []  # llama-server against itself with another batch size: how much a partition moves
    if args.self_check and whole:
        notes.append(
            f"{label}: no llama-server -b {args.block} rows: an image's rows attend to each other and must be in one "
            f"ubatch; -ub {args.block} would cut it (another computation, not another partition)"
        )
    elif args.self_check and any(not a.error for (name, _), a in peer_answers.items() if name != "text only"):
        flags = [*shlex.split(args.peer_flags), "-b", str(args.block), "-ub", str(args.block)]
        other = LlamaPeer(args.llama_server, model, mmproj, args.threads, flags)
        try:
            for key, body in sent.items():
                if not peer_answers[key].error:
                    itself.append(Row(label, key[0], key[1], peer_answers[key], other.ask(body, args.tokens)))
        except RuntimeError as e:
            notes.append(f"{label}: llama-server -b {args.block} did not start: {e}")
        finally:
            other.stop()

    try:
        server = EdgeRun(model, mmproj, label.replace(" ", "-").replace("+", ""), args.threads, args.edge_run_root)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        err = str(getattr(e, "stderr", None) or e)[-300:]
        ours = {name: Answer(error=f"edge-run did not start: {err}") for name in reqs}
    else:
        try:
            ours = {name: server.ask(messages, args.tokens) for name, messages in reqs.items()}
        finally:
            server.stop()

    keep = []  # (request, mode): the as-sent rows, and the others where they are edge-run's prompt
    for (name, mode), answer in peer_answers.items():
        pt = ours[name].prompt_tokens
        if mode == "aligned" and pt is not None and peer_answers[name, "as sent"].prompt_tokens == pt:
            continue  # edge-run renders this request as llama-server does: the as-sent row is the same prompt
        if mode == "same calls" and pt is not None and answer.prompt_tokens not in (pt, None):
            continue  # padded for the other rendering
        twin = (name, "as sent") if mode == "aligned" else (name.replace("(aligned)", "(as sent)"), mode)
        if twin != (name, mode) and answer.error and peer_answers.get(twin, Answer()).error:
            continue  # llama-server refused both renderings: one row says so
        keep.append((name, mode))
    same = {k for k in keep if peer_answers[k].prompt_tokens == ours[k[0]].prompt_tokens}
    rows = [Row(label, name.split(" (")[0], mode, peer_answers[name, mode], ours[name]) for name, mode in keep]
    itself = [
        Row(label, r.request.split(" (")[0], r.mode, r.peer, r.ours) for r in itself if (r.request, r.mode) in same
    ]
    return rows, itself, notes


def describe(root: Path) -> str:
    """Which edge-run: the tree's commit, and whether edge_run/ has changes not committed."""

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=root, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit or Path(git("rev-parse", "--show-toplevel") or "/").resolve() != root.resolve():
        return f"edge-run from {root} (not a git checkout)"
    dirty = " + uncommitted changes in edge_run/" if git("status", "--porcelain", "--", "edge_run") else ""
    return f"edge-run at {commit}{dirty}"


def fmt_prompt(row: Row) -> str:
    a, b = row.peer.prompt_tokens, row.ours.prompt_tokens
    return f"{'-' if a is None else a} / {'-' if b is None else b}"


EXACT = ("text only", "same calls")  # modes where both servers make the same llama_decode calls


def table(rows: list[Row], other: str = "edge-run") -> tuple[str, list[str], list[Row]]:
    """The markdown table of llama-server against ``other``, the notes under it, and the rows whose answers differ
    in text."""
    lines = [f"| kind | request | llama-server got | prompt tokens (llama-server / {other}) | tokens compared "
             "| identical | max \\|Δ logprob\\| |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    notes, differ = [], []
    for r in rows:
        mode = "text only" if r.request == "text only" else r.mode
        if not r.answered:
            who = "llama-server" if r.peer.error else other
            err = r.peer.error or r.ours.error
            status = "refused" if err[:1] == "4" else "error"
            lines.append(f"| {r.kind} | {r.request} | {mode} | {fmt_prompt(r)} | - | {who} {status} | - |")
            notes.append(f"{r.kind}, {r.request}, {mode}: {who}: {err}")
            continue
        n, identical, delta, first = r.compare(other)
        if not identical:
            differ.append(r)
            notes.append(f"{r.kind}, {r.request}, {mode}: first difference at {first}")
        d = "-" if delta is None else f"{delta:.2e}"
        lines.append(f"| {r.kind} | {r.request} | {mode} | {fmt_prompt(r)} | {n} | {'yes' if identical else 'NO'} "
                     f"| {d} |")  # fmt: skip
    return "\n".join(lines), notes, differ


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=list(synth.MEDIA_KINDS), help="projector kinds (bench/synth.py)")
    p.add_argument("--tokens", type=int, default=24, help="max_tokens of every answer")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="the projectors' weights")
    p.add_argument("--text-model", type=Path, default=synth.DEFAULT_TOKENIZER)
    p.add_argument("--llama-server", type=Path, default=LLAMA_SERVER)
    p.add_argument("--block", type=int, default=BLOCK, help="edge-run's prompt block, for the 'same calls' row")
    p.add_argument("--peer-flags", default="", help="more llama-server flags, e.g. '-b 64 -ub 64'")
    p.add_argument("--no-self-check", dest="self_check", action="store_false",
                   help="skip llama-server against itself with -b/-ub BLOCK")  # fmt: skip
    p.add_argument(
        "--exact-only",
        action="store_true",
        help="exit 1 only for a difference where both servers make the same calls (text only, same calls)",
    )
    p.add_argument(
        "--edge-run-root",
        type=Path,
        default=ROOT,
        help="serve edge-run from this tree (python -m edge_run there), e.g. a `git archive` of a commit",
    )
    p.add_argument("--json", type=Path, help="also write every answer here")  # fmt: skip
    args = p.parse_args(argv)
    unknown = [k for k in args.kinds if k not in synth_media.KINDS]
    if unknown:
        p.error(f"unknown kinds {unknown}: bench/synth_media.py has {list(synth_media.KINDS)}")

    rows: list[Row] = []
    itself: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="media-oracle-") as tmp:
        work = Path(tmp)
        vocab = set(header(args.text_model)["tokens"])
        for kind in args.kinds:
            mmproj, ph = projector(kind, args.text_model, args, work)
            inputs = ("image",) * bool(ph.get("clip.has_vision_encoder")) + ("audio",) * bool(
                ph.get("clip.has_audio_encoder")
            )
            runs = [(kind, args.text_model)]
            ptype = ph.get("clip.projector_type")
            if missing := tuple(t for t in LOOKED_UP.get(str(ptype), ()) if t not in vocab):
                patched = work / f"{args.text_model.stem}+markers.gguf"
                renamed = with_markers(args.text_model, missing, patched)
                notes.append(
                    f"{kind}: projector {ptype} looks up {', '.join(missing)}, absent from "
                    f"{args.text_model.name}: mtmd makes them LLAMA_TOKEN_NULL. Run again as "
                    f"'{kind} +markers' on a copy with {renamed} (control tokens of the same type)"
                )
                runs.append((f"{kind} +markers", patched))
            for label, model in runs:
                r, i, n = run_kind(label, model, mmproj, inputs, args)
                rows, itself, notes = rows + r, itself + i, notes + n

    out, more, differ = table(rows)
    for r in rows:
        past = (r.ours.prompt_tokens or 0) + len(r.ours.tokens) > LONE_ROW_FROM
        if r.mode == "same calls" and r.answered and past and args.threads > 1:
            more.append(
                f"{r.kind}, {r.request}: the answer runs past position {LONE_ROW_FROM - 1}, where edge-run decodes a "
                f"lone row on 1 thread and llama-server on {args.threads}: --threads 1 compares it exactly"
            )
    print(
        f"\nCPU: {cpu_model()}; {args.threads} threads; max_tokens {args.tokens}; text model {args.text_model.name}; "
        f"{describe(args.edge_run_root)}; llama-server {args.llama_server} {args.peer_flags}\n"
    )
    print(out)
    print()
    for line in notes + more:
        print(f"- {line}")
    if itself:
        out, more, _ = table(itself, f"llama-server -b {args.block} -ub {args.block}")
        print(f"\nllama-server against itself, -b {args.block} -ub {args.block} (another batch partition):\n")
        print(out)
        print()
        for line in more:
            print(f"- {line}")
    if args.json:
        pairs = [(r, "edge-run") for r in rows] + [(r, f"llama-server -b {args.block}") for r in itself]
        out_json = [{"kind": r.kind, "request": r.request, "mode": r.mode, "llama_server": r.peer.__dict__,
                     "other": r.ours.__dict__, "other_is": who} for r, who in pairs]  # fmt: skip
        args.json.write_text(json.dumps(out_json, indent=1))
    failing = [r for r in differ if not args.exact_only or r.mode in EXACT or r.request == "text only"]
    if failing:
        print(
            f"\n{len(failing)} answers differ in text: "
            + "; ".join(f"{r.kind}, {r.request}, {r.mode}" for r in failing)
        )
    return 1 if failing else 0


if __name__ == "__main__":
    raise SystemExit(main())
