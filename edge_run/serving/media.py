"""Images and audio as requests send them: ``data:`` URLs and base64, checked before any model is touched.

The decoding itself is llama.cpp's (stb_image, miniaudio, in the model's projector); here only what a request can
be refused for without it: the encoding, the format, and an image's size, read from its header (a 100-megapixel
image is refused before 300 MB of pixels exist).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import struct
from typing import TYPE_CHECKING

from edge_run.engine import MediaInput
from edge_run.errors import InvalidRequest

if TYPE_CHECKING:
    import httpx

    from edge_run.serving.request import GenRequest

__all__ = ["MAX_PIXELS", "ImageFetcher", "audio_bytes", "audio_input", "fetch_images", "image_base64", "image_input"]

MAX_PIXELS = 50_000_000  # an image's width x height at most (a 48-megapixel phone photo passes)
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/gif", "image/bmp")
_AUDIO_FORMATS = ("wav", "mp3", "flac")


def _base64(data: str, param: str) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"`{param}` is not valid base64: {exc}", param=param) from None
    if not raw:
        raise InvalidRequest(f"`{param}` is empty", param=param)
    return raw


def image_input(url: str, param: str) -> MediaInput:
    """An image from an ``image_url`` (a ``data:image/...;base64,`` URL; fetching http(s) URLs is off)."""
    if url.startswith(("http://", "https://")):
        return MediaInput("image", b"", param, url=url)  # fetched before the model, if the server allows it
    head, sep, data = url.partition(",")
    if not (url.startswith("data:") and sep and head.endswith(";base64")):
        raise InvalidRequest(f"`{param}` must be a data: URL with base64 (data:image/png;base64,...)", param=param)
    mime = head[len("data:") : -len(";base64")].lower()
    if mime not in _IMAGE_TYPES:
        raise InvalidRequest(f"`{param}`: images of type `{mime}` are not supported (PNG, JPEG, GIF, BMP)", param=param)
    return image_bytes(_base64(data, param), param)


def image_base64(data: str, param: str) -> MediaInput:
    """An image as base64 alone (Ollama's ``images``)."""
    return image_bytes(_base64(data, param), param)


def image_bytes(raw: bytes, param: str) -> MediaInput:
    """An image file's bytes, refused when its header is not one of the formats taken or it is too large."""
    size = image_size(raw)
    if size is None:
        raise InvalidRequest(f"`{param}` is not a PNG, JPEG, GIF or BMP image (or it is cut short)", param=param)
    width, height = size
    if width * height > MAX_PIXELS or not width or not height:
        raise InvalidRequest(
            f"`{param}`: a {width}x{height} image is not taken: {MAX_PIXELS:,} pixels at most", param=param
        )
    return MediaInput("image", raw, param)


class ImageFetcher:
    """Images by ``http(s)`` URL (``serve --allow-image-urls``): at most ``max_bytes``, within ``timeout`` seconds.

    Off by default: a server that fetches what a request names can be made to reach hosts only it can see."""

    def __init__(self, client: httpx.AsyncClient, *, max_bytes: int = 20 << 20) -> None:
        self._client = client
        self.max_bytes = max_bytes

    async def get(self, url: str, param: str) -> MediaInput:
        import httpx

        try:
            async with self._client.stream("GET", url) as r:
                if r.status_code != 200:
                    raise InvalidRequest(f"`{param}`: fetching the image answered {r.status_code}", param=param)
                kind = r.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind not in _IMAGE_TYPES:
                    raise InvalidRequest(f"`{param}`: the URL is `{kind or 'untyped'}`, not an image", param=param)
                raw = b""
                async for part in r.aiter_bytes():
                    raw += part
                    if len(raw) > self.max_bytes:
                        raise InvalidRequest(f"`{param}`: the image is over {self.max_bytes:,} bytes", param=param)
        except httpx.HTTPError as exc:
            why = type(exc).__name__
            raise InvalidRequest(f"`{param}`: the image could not be fetched ({why})", param=param) from None
        return image_bytes(raw, param)


async def fetch_images(req: GenRequest, fetcher: ImageFetcher | None) -> GenRequest:
    """``req`` with its images by URL fetched; a 400 naming the first when the server fetches none."""
    pending = [m for turn in req.turns for m in turn.media if m.url]
    if not pending:
        return req
    if fetcher is None:
        raise InvalidRequest(
            f"`{pending[0].param}`: this server fetches no image URLs (start it with --allow-image-urls); send "
            "the image inline as a data: URL (data:image/png;base64,...)",
            param=pending[0].param,
        )
    turns = []
    for turn in req.turns:
        media = tuple([await fetcher.get(m.url, m.param) if m.url else m for m in turn.media])
        turns.append(dataclasses.replace(turn, media=media))
    return dataclasses.replace(req, turns=turns)


def audio_input(data: str, fmt: str, param: str) -> MediaInput:
    """An ``input_audio`` part: base64 audio in ``fmt`` (wav, mp3 or flac)."""
    if fmt not in _AUDIO_FORMATS:
        raise InvalidRequest(f"`{param}.format` `{fmt}` is not supported (wav, mp3, flac)", param=param)
    return audio_bytes(_base64(data, f"{param}.data"), f"x.{fmt}", param)


def audio_bytes(raw: bytes, name: str, param: str) -> MediaInput:
    """An audio file's bytes, refused unless its header says WAV, MP3 or FLAC (``name``'s extension aside)."""
    wav = raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    mp3 = raw[:3] == b"ID3" or (len(raw) > 1 and raw[0] == 0xFF and raw[1] & 0xE0 == 0xE0)
    if not (wav or mp3 or raw[:4] == b"fLaC"):
        what = f"`{name}`" if name else "the data"
        raise InvalidRequest(f"`{param}`: {what} is not WAV, MP3 or FLAC audio", param=param)
    return MediaInput("audio", raw, param)


def image_size(raw: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, BMP or JPEG header; None for anything else."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) >= 24 and raw[12:16] == b"IHDR":
        return struct.unpack(">II", raw[16:24])
    if raw[:6] in (b"GIF87a", b"GIF89a") and len(raw) >= 10:
        return struct.unpack("<HH", raw[6:10])
    if raw.startswith(b"BM") and len(raw) >= 26:
        width, height = struct.unpack("<ii", raw[18:26])
        return abs(width), abs(height)
    if raw.startswith(b"\xff\xd8"):
        return _jpeg_size(raw)
    return None


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """The frame size from a JPEG's first SOF marker."""
    i = 2
    while i + 9 <= len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", raw[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", raw[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None
