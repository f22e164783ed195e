"""A model's multimodal projector (``mmproj``) through llama.cpp's mtmd: images and audio in, embeddings out.

:meth:`Projector.tokenize` runs off the engine thread (decoding and resizing an image is the slow part of it, as
in llama-server's HTTP threads); :meth:`MediaSpan.embeddings` encodes a chunk once, when a prompt block first needs
its rows: on the engine thread, or beside it while other slots generate (:mod:`edge_run.engine.encoding`).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

import llama_cpp as L
import numpy as np
from llama_cpp import mtmd_cpp as M

from edge_run.engine.llama.backend import quiet_log
from edge_run.engine.media import MEDIA_MARKER, MediaSpan, media_ids
from edge_run.errors import EngineFailure, InvalidRequest

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from edge_run.engine.llama.model import Model
    from edge_run.engine.media import MediaInput

__all__ = ["Projector"]

log = logging.getLogger(__name__)

# mtmd takes its thread count once, at init (``mtmd_context_params.n_threads``), and reads it from its context at every
# encode: ``int n_threads`` at this offset of ``struct mtmd_context`` in llama-cpp-python 0.3.36's mtmd.cpp, between
# ``bool print_timings`` and ``std::string media_marker`` (checked at load, by those neighbours' values)
_N_THREADS_AT = 172

MAX_AUDIO_SECONDS = 600  # an audio input lasts ten minutes at most (20 windows of 30 s)
RECENT_BYTES = 64 << 20  # embeddings kept for chunks sent again
_KINDS = {M.MTMD_INPUT_CHUNK_TYPE_IMAGE: "image", M.MTMD_INPUT_CHUNK_TYPE_AUDIO: "audio"}


class Projector:
    """An ``mmproj`` file loaded beside its text model."""

    def __init__(self, path: Path, model: Model, *, threads: int, gpu: bool, batch: int) -> None:
        if not os.environ.get("EDGE_RUN_LLAMA_LOG"):  # mtmd prints each prompt's text: only its errors, to our log
            M.mtmd_log_set(quiet_log, ctypes.c_void_p(0))
            M.mtmd_helper_log_set(quiet_log, ctypes.c_void_p(0))
        params = M.mtmd_context_params_default()
        params.use_gpu = gpu
        params.n_threads = threads
        params.print_timings = False
        params.warmup = False
        params.media_marker = MEDIA_MARKER.encode()
        self._ptr = M.mtmd_init_from_file(str(path).encode(), model.ptr, params)
        if not self._ptr:
            raise EngineFailure(f"could not load the projector {path.name} for this model")
        self._threads = _threads_field(self._ptr, threads)
        # an encode may run beside the engine thread, on a share of the cores: on the CPU, where the count can be set
        self.beside = self._threads is not None and not gpu
        self.inputs = ("text",) + ("image",) * M.mtmd_support_vision(self._ptr) + ("audio",) * M.mtmd_support_audio(
            self._ptr
        )
        # M-RoPE (Qwen2-VL, Qwen2.5-VL...): an image's rows lie on a grid of positions, 4 a row
        self.mrope = bool(M.mtmd_decode_use_mrope(self._ptr))
        n_embd_inp = getattr(L, "llama_model_n_embd_inp", L.llama_model_n_embd)
        self.n_embd = int(n_embd_inp(model.ptr))
        self._batch = batch  # a chunk whose rows attend to each other is decoded in one batch
        self._lock = threading.Lock()  # one encode at a time: they share the context's output buffer
        self.encoded = 0  # media chunks encoded (a cached one is not encoded again)
        # the latest chunks' embeddings, by content: an image sent again whose rows must be computed again (past
        # the reusable blocks, or in another slot) is not encoded again
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()

    def tokenize(self, text: str, media: list[MediaInput], *, add_special: bool) -> tuple[list[int], list[MediaSpan]]:
        """``text`` with one :data:`MEDIA_MARKER` per input, as ids (media rows as :func:`media_ids`) and spans."""
        bitmaps = [self._bitmap(m) for m in media]
        chunks = M.mtmd_input_chunks_init()
        try:
            raw = text.encode()
            inp = M.mtmd_input_text(raw, len(raw), add_special, True)
            array = (M.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            rc = M.mtmd_tokenize(self._ptr, chunks, ctypes.byref(inp), array, len(bitmaps))
            if rc == 1:
                raise InvalidRequest("the prompt's media markers do not match its images and audio", param="messages")
            if rc != 0:
                raise InvalidRequest(f"the images or audio could not be prepared for this model (mtmd error {rc})")
            return self._walk(chunks)
        finally:
            M.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                M.mtmd_bitmap_free(bitmap)

    def _bitmap(self, media: MediaInput) -> M.mtmd_bitmap_p:
        """Decode an image or audio file; its content hash becomes its id (llama-server hashes the same way)."""
        if media.kind not in self.inputs:
            raise InvalidRequest(f"this model takes no {media.kind} input", param=media.param)
        if not media.data:  # an image URL the serving layer did not fetch
            raise InvalidRequest(f"the {media.kind} is empty (image URLs need --allow-image-urls)", param=media.param)
        buf = (ctypes.c_uint8 * len(media.data)).from_buffer_copy(media.data)
        bitmap = M.mtmd_helper_bitmap_init_from_buf(self._ptr, buf, len(media.data), False)
        if not bitmap:
            raise InvalidRequest(f"the {media.kind} could not be decoded", param=media.param)
        if M.mtmd_bitmap_is_audio(bitmap) != (media.kind == "audio"):
            M.mtmd_bitmap_free(bitmap)
            raise InvalidRequest(f"the data is not {media.kind}", param=media.param)
        size = M.mtmd_bitmap_get_n_bytes(bitmap)
        seconds = size / 4 / max(1, M.mtmd_get_audio_sample_rate(self._ptr)) if media.kind == "audio" else 0.0
        if seconds > MAX_AUDIO_SECONDS:  # float32 samples, mono
            M.mtmd_bitmap_free(bitmap)
            raise InvalidRequest(f"the audio lasts {seconds:.0f} s: {MAX_AUDIO_SECONDS} s at most", param=media.param)
        data = ctypes.string_at(M.mtmd_bitmap_get_data(bitmap), size)
        digest = hashlib.blake2b(data, digest_size=8)
        digest.update(b"%d,%d" % (M.mtmd_bitmap_get_nx(bitmap), M.mtmd_bitmap_get_ny(bitmap)))
        M.mtmd_bitmap_set_id(bitmap, digest.hexdigest().encode())
        return bitmap

    def _walk(self, chunks: M.mtmd_input_chunks_p) -> tuple[list[int], list[MediaSpan]]:
        ids: list[int] = []
        spans: list[MediaSpan] = []
        slices: dict[bytes, int] = {}  # an image cut into slices (llava-uhd, idefics3) gives a chunk per slice
        for i in range(M.mtmd_input_chunks_size(chunks)):
            chunk = M.mtmd_input_chunks_get(chunks, i)
            kind = M.mtmd_input_chunk_get_type(chunk)
            if kind == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                tokens = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                # a marker token the vocabulary lacks is LLAMA_TOKEN_NULL (-1): a projector paired with another
                # text model than its own (the tests' synthetic one) gives them; they cannot be decoded
                ids += [t for t in tokens[: n.value] if t != L.LLAMA_TOKEN_NULL]
                continue
            n_rows = M.mtmd_input_chunk_get_n_tokens(chunk)
            # Gemma 3's rows see each other; M-RoPE's share one position, where the 2-D mask orders them
            non_causal = bool(M.mtmd_decode_use_non_causal(self._ptr, chunk))
            if (non_causal or self.mrope) and n_rows > self._batch:
                need = f"`batch = {n_rows}` or more (it is {self._batch})"
                raise InvalidRequest(f"an image of {n_rows} rows needs {need}")
            own = M.mtmd_input_chunk_copy(chunk)
            content = M.mtmd_input_chunk_get_id(own) or b""
            slices[content] = slices.get(content, -1) + 1
            key = int.from_bytes(hashlib.blake2b(b"%s/%d" % (content, slices[content]), digest_size=8).digest())
            # any chunk that fits a batch is decoded whole, as llama.cpp's mtmd helper decodes it: its rows in one
            # call of 64 and more take flash attention's tiled kernel, where a block boundary would cut them in two
            # calls of fewer rows each (their per-row path: 1.5x the time over a SmolVLM prompt of 17 such chunks)
            span = MediaSpan(
                len(ids), n_rows, _KINDS[kind], self._encoder(own, n_rows, key), whole=n_rows <= self._batch,
                causal=not non_causal, n_pos=M.mtmd_input_chunk_get_n_pos(chunk), layout=self._layout(own, n_rows)
            )  # fmt: skip
            weakref.finalize(span, M.mtmd_input_chunk_free, own)
            ids += media_ids(key, n_rows)
            spans.append(span)
        return ids, spans

    def _layout(self, chunk: M.mtmd_input_chunk_p, n_rows: int) -> Callable[[int], np.ndarray] | None:
        """M-RoPE: the chunk's rows' positions (4, n) from ``pos0`` (t, y, x, z: llama.cpp's section order)."""
        if not self.mrope:
            return None
        image = M.mtmd_input_chunk_get_tokens_image(chunk)

        def layout(pos0: int) -> np.ndarray:
            if not image:  # audio: one position a row, in every section
                return np.tile(np.arange(pos0, pos0 + n_rows, dtype=np.int32), (4, 1))
            rows = [M.mtmd_image_tokens_get_decoder_pos(image, pos0, i) for i in range(n_rows)]
            return np.array([[r.t, r.y, r.x, r.z] for r in rows], np.int32).T.copy()

        return layout

    def _encoder(self, chunk: M.mtmd_input_chunk_p, n_rows: int, key: int) -> Callable[[int], np.ndarray]:
        def encode(threads: int) -> np.ndarray:
            with self._lock:
                if (rows := self._recent.get(key)) is not None:
                    self._recent.move_to_end(key)
                    return rows
                if threads and self._threads is not None:  # its embeddings do not depend on it (test_media)
                    self._threads.value = threads
                if M.mtmd_encode_chunk(self._ptr, chunk) != 0:
                    raise EngineFailure("encoding an image or audio input failed")
                out = M.mtmd_get_output_embd(self._ptr)
                self.encoded += 1
                rows = np.ctypeslib.as_array(out, shape=(n_rows, self.n_embd)).copy()
                self._recent[key] = rows
                while sum(r.nbytes for r in self._recent.values()) > RECENT_BYTES and len(self._recent) > 1:
                    self._recent.popitem(last=False)
                return rows

        return encode

    def close(self) -> None:
        if self._ptr:
            M.mtmd_free(self._ptr)
            self._ptr = None


def _threads_field(ptr: M.mtmd_context_p, threads: int) -> ctypes.c_int | None:
    """The context's thread count, to set before an encode; None unless the struct's layout is the one expected."""
    at = ptr if isinstance(ptr, int) else ctypes.cast(ptr, ctypes.c_void_p).value or 0  # c_void_p: an int
    marker = MEDIA_MARKER.encode()
    field = ctypes.c_int.from_address(at + _N_THREADS_AT)
    expected = (
        field.value == threads
        and ctypes.c_uint8.from_address(at + _N_THREADS_AT - 4).value == 0  # print_timings, False
        # media_marker, a short std::string (libstdc++): its data pointer, its length, its characters in place
        and ctypes.c_void_p.from_address(at + _N_THREADS_AT + 4).value == at + _N_THREADS_AT + 20
        and ctypes.c_size_t.from_address(at + _N_THREADS_AT + 12).value == len(marker)
        and ctypes.string_at(at + _N_THREADS_AT + 20, len(marker)) == marker
    )
    if not expected:
        log.warning("this llama.cpp's mtmd context is not laid out as expected: images encode on the engine thread")
    return field if expected else None
