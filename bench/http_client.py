"""A lean HTTP/1.1 client for the api benchmark: one keep-alive connection, one request at a time.

The harness shares the machine's two cores with the api and the database.
aiohttp spent about 0.3 ms of CPU per request here, most of what the api
itself spent, so at 50 clients it capped the rate it measured. This client
writes a request's bytes and reads the answer's status line, headers and
Content-Length body over asyncio streams: real HTTP over TCP, with the
request's JSON encoded per request as before, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

_HEADERS_END = b"\r\n\r\n"


class HttpError(Exception):
    """The server answered something this client does not read (no Content-Length, say)."""


class KeepAlive:
    """One connection to ``base_url``; ``post`` sends JSON and returns the status and body."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        assert parts.hostname is not None, base_url
        assert parts.port is not None, base_url
        self._host, self._port = parts.hostname, parts.port
        fixed = {"Host": f"{self._host}:{self._port}", **headers}
        fixed["Content-Type"] = "application/json"
        self._fixed = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: Any) -> tuple[int, bytes]:
        content = json.dumps(body).encode()
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        head = f"POST {path} HTTP/1.1\r\n{self._fixed}Content-Length: {len(content)}\r\n\r\n"
        writer.write(head.encode("latin-1") + content)
        status, length, close = _parse_head(await reader.readuntil(_HEADERS_END))
        answer = await reader.readexactly(length)
        if close:
            self.close()
        return status, answer

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """The status, the Content-Length and whether the server closes, from a response's head."""
    status_line, *lines = head[: -len(_HEADERS_END)].decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    length, close = None, False
    for line in lines:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value.strip().lower() == "close"
    if length is None:
        raise HttpError(f"an answer without Content-Length (status {status})")
    return status, length, close
