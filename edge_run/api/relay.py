"""Relay one request to an upstream pool and its answer back as an ordinary response: JSON as is, server-sent
events as they come.

Streams pass through event by event, never buffered whole. A streamed chat or text completion asks the
upstream for its usage (``stream_options.include_usage``) so that the local key is charged exactly; the
usage event is passed on only if the client asked for it too. Whatever the upstream answers, its key is
scrubbed from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Response

from edge_run.api.http.sse import SSE_HEADERS, EventStream

if TYPE_CHECKING:
    import httpx

    from edge_run.serving.metering import Meter
    from edge_run.upstream.pool import Replica, UpstreamPool

__all__ = ["relay"]

USAGE_ROUTES = ("/chat/completions", "/completions")  # where stream_options.include_usage exists


def _scrub(data: bytes, replica: Replica) -> bytes:
    secret = replica.secret()
    return data.replace(secret.encode(), b"***") if secret else data


def _charge(meter: Meter | None, usage: Any) -> None:
    """Charge an upstream's ``usage`` (OpenAI's or Anthropic's field names) to the request's meter."""
    if meter is None or not isinstance(usage, dict):
        return
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0
    details = usage.get("prompt_tokens_details") or {}
    meter.prompt(int(prompt), int(details.get("cached_tokens", 0) or 0) if isinstance(details, dict) else 0)
    meter.completion(int(completion))


async def relay(pool: UpstreamPool, path: str, body: dict[str, Any], meter: Meter | None) -> Response[Any]:
    """Send ``body`` to ``path`` (under the upstream's base URL, e.g. ``/chat/completions``) and relay the answer."""
    stream = bool(body.get("stream"))
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if stream and path in USAGE_ROUTES and not wants_usage:
        body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
    replica, response = await pool.send(path, body)
    media_type = response.headers.get("content-type", "application/json")
    if response.status_code >= 400 or not stream or not media_type.startswith("text/event-stream"):
        try:
            data = _scrub(await response.aread(), replica)
        finally:
            await response.aclose()
            pool.done(replica)
        if response.status_code < 400:
            try:
                _charge(meter, msgspec.json.decode(data).get("usage"))
            except (msgspec.DecodeError, AttributeError):
                pass
        return Response(data, status_code=response.status_code, media_type=media_type)
    events = _events(pool, replica, response, meter, drop_usage=stream and path in USAGE_ROUTES and not wants_usage)
    return EventStream(events, status_code=response.status_code, media_type="text/event-stream", headers=SSE_HEADERS)


async def _events(
    pool: UpstreamPool, replica: Replica, response: httpx.Response, meter: Meter | None, *, drop_usage: bool
) -> AsyncIterator[bytes]:
    buffer = b""
    tally = _Tally()
    try:
        async for piece in response.aiter_raw():
            buffer += piece.replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if tally.read(event, meter) and drop_usage:
                    continue  # the usage event the client did not ask for
                yield _scrub(event, replica) + b"\n\n"
        if buffer.strip():
            yield _scrub(buffer, replica)
    finally:
        if not tally.charged:  # an upstream that sends no usage: one token per content event
            _charge(meter, {"completion_tokens": tally.deltas})
        await response.aclose()
        pool.done(replica)


class _Tally:
    """What a stream's events say about its tokens."""

    def __init__(self) -> None:
        self.charged = False
        self.deltas = 0

    def read(self, event: bytes, meter: Meter | None) -> bool:
        """Charge an event's usage to the meter; whether it is a usage-only event (no choices)."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                chunk = msgspec.json.decode(line[5:].strip())
            except msgspec.DecodeError:
                return False  # [DONE], or not JSON
            if not isinstance(chunk, dict):
                return False
            usage = chunk.get("usage") or (chunk.get("message") or {}).get("usage")  # Anthropic: in message_start
            if usage:
                _charge(meter, usage)
                self.charged = True
                return not chunk.get("choices")
            choices = [c for c in chunk.get("choices") or [] if isinstance(c, dict)]
            self.deltas += any(c.get("delta") or c.get("text") for c in choices)
        return False
