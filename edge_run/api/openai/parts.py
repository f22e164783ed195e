"""The parts of a chat message's ``content``: text, images and audio (OpenAI's shapes)."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

__all__ = ["AudioPart", "ImagePart", "ImageUrl", "InputAudio", "TextPart"]


class TextPart(Struct, tag="text", tag_field="type"):
    text: str


class ImageUrl(Struct):
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's projector sets the resolution


class ImagePart(Struct, tag="image_url", tag_field="type"):
    image_url: ImageUrl


class InputAudio(Struct):
    data: str  # base64
    format: str  # wav, mp3 (flac too)


class AudioPart(Struct, tag="input_audio", tag_field="type"):
    input_audio: InputAudio
