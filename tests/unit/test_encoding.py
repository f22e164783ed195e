"""The media encoder: a chunk encodes beside the engine thread while others generate, on its share of the cores."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_run.engine.encoding import Encoder
from edge_run.engine.media import MediaSpan
from edge_run.engine.threads import CoreShare
from edge_run.errors import EngineFailure


class SlowChunk:
    """A chunk's encode that waits for ``go``, and records its thread count and thread."""

    def __init__(self, fail: bool = False) -> None:
        self.go = threading.Event()
        self.started = threading.Event()
        self.threads: list[int] = []
        self.on: list[str] = []
        self.fail = fail

    def __call__(self, threads: int) -> np.ndarray:
        self.threads.append(threads)
        self.on.append(threading.current_thread().name)
        self.started.set()
        assert self.go.wait(10)
        if self.fail:
            raise EngineFailure("encoding an image or audio input failed")
        return np.ones((4, 8), np.float32)


def _span(encode: SlowChunk) -> MediaSpan:
    return MediaSpan(0, 4, "image", encode)


def test_beside_a_generating_slot_the_chunk_encodes_on_its_own_thread_and_share_of_the_cores():
    cores = CoreShare(2)
    engine = cores.join()
    cores.set_active(engine, True)
    encoder = Encoder(cores, engine, beside=True)
    chunk = SlowChunk()
    span, other = _span(chunk), _span(SlowChunk())
    assert not encoder.ready(span, 2, beside=True)  # under way: its slot waits
    assert chunk.started.wait(10)
    assert encoder.under_way
    assert cores.acquire(engine, 2) == 1  # the engine's steps run on the other core meanwhile
    cores.release(engine)
    assert not encoder.ready(span, 2, beside=True)
    assert not encoder.ready(other, 2, beside=False)  # one encode at a time, even one that would run here
    chunk.go.set()
    encoder.wait(10)
    assert encoder.ready(span, 2, beside=True) and span.encoded
    assert chunk.threads == [1] and chunk.on[0].startswith("edge-run-encode")
    assert encoder.encoded_beside == 1
    assert cores.acquire(engine, 2) == 2  # the encode's core is back
    cores.release(engine)
    encoder.close()


def test_with_no_one_generating_the_engine_thread_encodes_on_all_its_threads():
    cores = CoreShare(2)
    engine = cores.join()
    encoder = Encoder(cores, engine, beside=True)
    chunk = SlowChunk()
    chunk.go.set()
    assert encoder.ready(_span(chunk), 2, beside=False)
    assert chunk.threads == [2] and chunk.on == [threading.current_thread().name]
    assert encoder.encoded_beside == 0 and not encoder.under_way


def test_a_projector_that_cannot_encode_beside_encodes_here_a_chunk_a_step():
    """On a GPU, or where mtmd's thread count cannot be set: here, and while others generate its slot waits a
    step (they wait for one chunk, not a whole file)."""
    cores = CoreShare(2)
    encoder = Encoder(cores, cores.join(), beside=False)
    chunk = SlowChunk()
    chunk.go.set()
    span = _span(chunk)
    assert not encoder.ready(span, 2, beside=True)
    assert span.encoded and chunk.threads == [2] and chunk.on == [threading.current_thread().name]
    assert encoder.ready(span, 2, beside=True)


def test_a_failed_encode_beside_fails_its_own_slot_only():
    cores = CoreShare(2)
    encoder = Encoder(cores, cores.join(), beside=True)
    chunk = SlowChunk(fail=True)
    chunk.go.set()
    span = _span(chunk)
    assert not encoder.ready(span, 2, beside=True)
    encoder.wait(10)
    done = SlowChunk()
    done.go.set()
    assert encoder.ready(_span(done), 2, beside=False)  # another slot's chunk is not failed by it
    with pytest.raises(EngineFailure):
        encoder.ready(span, 2, beside=True)
    encoder.close()
