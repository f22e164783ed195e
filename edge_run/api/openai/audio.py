"""``POST /v1/audio/transcriptions``: OpenAI's multipart form, answered by a model that takes audio.

The audio goes through the one internal request as a user turn with an instruction to transcribe it, so the
transcript is the model's greedy answer (at ``temperature`` 0 unless the form says otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body

from edge_run.api.deps import ModelAccess
from edge_run.engine import MEDIA_MARKER
from edge_run.errors import InvalidRequest
from edge_run.serving.assembly import collect
from edge_run.serving.media import audio_bytes
from edge_run.serving.prompt import check, start
from edge_run.serving.request import GenRequest, Turn

__all__ = ["Transcription", "TranscriptionForm", "transcriptions"]

MAX_AUDIO_BYTES = 25 << 20  # OpenAI's limit for this route
# a transcript's tokens at most: Whisper's 448 per 30 s window (15 a second, three times fast speech), 64 at least
TOKENS_PER_SECOND, MIN_TOKENS = 448 / 30, 64
INSTRUCTION = "Transcribe the audio exactly, word for word. Answer with the transcript only."


@dataclass
class TranscriptionForm:
    """OpenAI's form (a dataclass: Litestar reads multipart forms into one; the file is an ``UploadFile``)."""

    file: UploadFile
    model: str
    language: str | None = None  # ISO-639-1, passed on to the model in the instruction
    prompt: str | None = None  # text that comes before the audio (names, spelling), passed on too
    response_format: str = "json"
    temperature: float = 0.0


class TranscriptionUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    type: Literal["tokens"] = "tokens"


class Transcription(msgspec.Struct):
    text: str
    usage: TranscriptionUsage


@dataclass
class _Sampling:
    """The form's sampling: its temperature; the rest as a chat request leaves it."""

    temperature: float | None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    grammar: str | None = None
    reasoning_budget: int | None = None


async def _translate(form: TranscriptionForm) -> GenRequest:
    if form.response_format not in ("json", "text"):
        raise InvalidRequest(
            f"`response_format` `{form.response_format}` is not supported (json, text)", param="response_format"
        )
    if not 0 <= form.temperature <= 2:
        raise InvalidRequest("`temperature` must be between 0 and 2", param="temperature")
    raw = await form.file.read(MAX_AUDIO_BYTES + 1)
    if len(raw) > MAX_AUDIO_BYTES:
        raise InvalidRequest(f"`file` is over {MAX_AUDIO_BYTES >> 20} MiB", param="file")
    audio = audio_bytes(raw, form.file.filename or "", "file")
    words = [INSTRUCTION]
    if form.language:
        words.append(f"The language is `{form.language}`.")
    if form.prompt:
        words.append(f"It may follow this text: {form.prompt}")
    turn = Turn("user", MEDIA_MARKER + "\n" + " ".join(words), media=(audio,))
    limit = max(MIN_TOKENS, math.ceil(TOKENS_PER_SECOND * _seconds(raw)))  # a model that never ends stops there
    return GenRequest(model=form.model, sampling=_Sampling(form.temperature), turns=[turn], max_tokens=limit)


def _seconds(raw: bytes) -> float:
    """How long the audio lasts: from a WAV header's byte rate, else from its size at the lowest common bit rate
    (MP3 at 64 kbit/s), an upper bound."""
    byte_rate = int.from_bytes(raw[28:32], "little") if raw[:4] == b"RIFF" and raw[12:16] == b"fmt " else 0
    return len(raw) / (byte_rate or 8_000)


@post("/audio/transcriptions", status_code=200, summary="Transcribe audio (OpenAI's form) with a model that hears")
async def transcriptions(
    data: Annotated[TranscriptionForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    access: NamedDependency[ModelAccess],
) -> Transcription | Response[Any]:  # or text/plain
    gen = await _translate(data)
    check(gen)
    run = await access.run(data.model, None, lambda engine: start(gen, engine))
    if isinstance(run, Response):
        return run  # an upstream's answer, relayed
    [choice] = await collect(run)
    text = choice.text.strip()
    if data.response_format == "text":
        return Response(text, media_type="text/plain; charset=utf-8")
    prompt, completion = run.totals.prompt_tokens, run.totals.completion_tokens
    return Transcription(text=text, usage=TranscriptionUsage(prompt, completion, prompt + completion))
