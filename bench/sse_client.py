"""The benches' load generator: a bare HTTP/1.1 client for server-sent events, on asyncio streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import msgspec

__all__ = ["sse_events"]


async def sse_events(url: str, headers: dict[str, str], body: dict) -> AsyncIterator[bytes]:
    """POST ``body`` and yield each SSE ``data:`` payload.

    A bare HTTP/1.1 client on asyncio streams: the load generator shares the machine with the server
    under test, so it must cost as little as it can (about a third of httpx's CPU per event).
    """
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    payload = msgspec.json.encode(body)
    head = [f"POST {u.path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    head += [f"Content-Length: {len(payload)}", "Accept: text/event-stream", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
    try:
        status = await reader.readline()
        if status.split(b" ")[1:2] != [b"200"]:
            raise RuntimeError(f"{url}: {status.decode().strip()} {(await reader.read(2000)).decode(errors='replace')}")
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            chunked |= name.strip().lower() == "transfer-encoding" and "chunked" in value.lower()
        buf = b""
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    break
                buf += (await reader.readexactly(size + 2))[:-2]
            elif not (data := await reader.read(65536)):
                break
            else:
                buf += data
            while (end := buf.find(b"\n\n")) >= 0:
                event, buf = buf[:end], buf[end + 2 :]
                for line in event.splitlines():
                    if line.startswith(b"data: "):
                        yield line[6:]
    finally:
        writer.close()
