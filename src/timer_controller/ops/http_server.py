"""A tiny HTTP/1.1 server for probes and scrapes, bounded whatever its clients do.

The standard library's ThreadingHTTPServer starts a thread per connection
and waits for a request line forever: 1,000 idle connections made 1,004
threads. Here one thread runs an asyncio loop that serves every connection,
and each connection is bounded:

* its request head must arrive within ``READ_TIMEOUT_S`` and fit in
  ``MAX_HEAD_BYTES``;
* at most ``MAX_CONNECTIONS`` are open; a new one beyond that closes the
  oldest still sending its request, so idle sockets cannot lock a scrape out;
* one request per connection (``Connection: close``), as probes and
  Prometheus need nothing more.

Answers come from ``answer(path)``, run on one worker thread (the readiness
check may query the database) within ``ANSWER_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 5.0
MAX_HEAD_BYTES = 8 * 1024
MAX_CONNECTIONS = 64
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}

#: (status, body, content type) for a request path.
Answer = tuple[int, bytes, str]


class BoundedHttpServer:
    """Serves ``answer`` on ``host:port`` from one thread; ``start`` then ``stop``."""

    def __init__(self, answer: Callable[[str], Answer], *, host: str, port: int) -> None:
        self._answer = answer
        # Bound now, so that a port in use fails at start-up, in the caller.
        self._socket = socket.create_server((host, port), reuse_port=False)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="http-answer")
        self._loop = asyncio.new_event_loop()
        self._reading: dict[asyncio.StreamWriter, None] = {}  # oldest first
        self._open = 0
        self._stopped = asyncio.Event()
        self._thread = threading.Thread(target=self._serve, name="http-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout_s)
        self._socket.close()
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _serve(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        server = await asyncio.start_server(
            self._connection, sock=self._socket, limit=MAX_HEAD_BYTES
        )
        async with server:
            await self._stopped.wait()
            server.close()
            for writer in list(self._reading):
                writer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS and self._reading:
                next(iter(self._reading)).close()
            self._reading[writer] = None
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                return  # silent, slow, too big or gone: nothing to answer
            finally:
                self._reading.pop(writer, None)
            await self._reply(writer, head)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reply(self, writer: asyncio.StreamWriter, head: bytes) -> None:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            code, body, kind = 400, b"bad request\n", "text/plain"
        elif parts[0] != b"GET":
            code, body, kind = 405, b"only GET\n", "text/plain"
        else:
            path = parts[1].decode("latin-1").split("?", 1)[0]
            code, body, kind = await self._answer_in_worker(path)
        reason = _REASONS.get(code, "Unknown")
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            + body
        )
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await writer.drain()

    async def _answer_in_worker(self, path: str) -> Answer:
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                return await self._loop.run_in_executor(self._worker, self._answer, path)
        except TimeoutError:
            log.warning("answering %s took more than %gs", path[:100], ANSWER_TIMEOUT_S)
            return 503, b"timed out\n", "text/plain"
        except Exception:  # a probe answers; it never takes the server down
            log.exception("answering %s failed", path[:100])
            return 500, b"internal error\n", "text/plain"
