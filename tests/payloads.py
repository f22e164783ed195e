"""Request parts that several test modules send (no tests here), and the JSON-schema check for the answers."""

from __future__ import annotations

import math
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

__all__ = ["ASK", "NO_EOS", "WEATHER", "png", "synth_projector", "validate", "wav"]

# Chat Completions' tool shape; the Responses and Messages tests reshape it to theirs.
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
ASK = [{"role": "user", "content": "What's the weather like in Paris right now?"}]

# Token ids 0, 2 and 4 are SmolLM2's end-of-generation tokens: banning them keeps a stream going.
NO_EOS = {"0": -100, "2": -100, "4": -100}


def validate(value: Any, schema: dict[str, Any]) -> None:
    """A small JSON-schema check for the features these tests use (no extra dependency)."""
    kind = schema.get("type")
    if "enum" in schema:
        assert value in schema["enum"], (value, schema["enum"])
    if kind == "object":
        assert isinstance(value, dict)
        for key in schema.get("required", []):
            assert key in value, (key, value)
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub)
    elif kind == "array":
        assert isinstance(value, list)
        assert len(value) <= schema.get("maxItems", len(value))
        for item in value:
            validate(item, schema["items"])
    elif kind == "string":
        assert isinstance(value, str)
        assert len(value) <= schema.get("maxLength", len(value))
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool)
    elif kind == "boolean":
        assert isinstance(value, bool)


def png(width: int, height: int, seed: int, *, data: bytes | None = None) -> bytes:
    """A PNG of random RGB pixels (``data`` replaces the compressed pixels, to make a broken one)."""
    rng = random.Random(seed)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height)) if data is None else b""
    pixels = zlib.compress(rows) if data is None else data
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def wav(seconds: float, hertz: float, rate: int = 16_000) -> bytes:
    """A mono 16-bit WAV file of a sine tone."""
    n = int(seconds * rate)
    data = struct.pack(f"<{n}h", *(int(12_000 * math.sin(2 * math.pi * hertz * i / rate)) for i in range(n)))
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    head = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt
    return head + b"data" + struct.pack("<I", len(data)) + data


def synth_projector(kind: str, out: Path, *extra: str) -> Path:
    """``bench/synth.py vision|vision-gemma3|audio``: a tiny random-weight projector (for the test model unless
    ``extra`` says another size); its path."""
    [path] = _synth(kind, out, *extra)
    return path


def synth_pair(kind: str, out: Path, tokenizer: Path) -> tuple[Path, Path]:
    """``bench/synth.py qwen2vl|vlm``: a tiny random-weight text model with ``tokenizer``'s tokens and template, and
    its projector; their paths."""
    model, mmproj = _synth(kind, out, "--tokenizer", str(tokenizer))
    return model, mmproj


def _synth(kind: str, out: Path, *extra: str) -> list[Path]:
    synth = Path(__file__).resolve().parents[1] / "bench" / "synth.py"
    done = subprocess.run([sys.executable, str(synth), kind, "--out", str(out), *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [Path(line) for line in done.stdout.split()]
