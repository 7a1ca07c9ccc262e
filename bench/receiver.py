"""A fast single-process HTTP/1.1 receiver for the benchmark and the e2e tests.

    python bench/receiver.py [--host 127.0.0.1] [--port 0] [--record PATH]
                             [--secret WHSEC] [--full]

Plain ``asyncio.Protocol`` with a minimal parser (keep-alive, Content-Length
bodies, pipelining) instead of a framework: on this machine uvicorn would
become the bottleneck long before the controller does, and the benchmark must
measure the controller. The first stdout line is ``listening on http://H:P``
so a caller that passed ``--port 0`` can read the port.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http
import json
import signal
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
BIG_BODY = b"x" * (10 * 1024 * 1024)
STREAM_CHUNK = b"400\r\n" + b"s" * 0x400 + b"\r\n"  # one 1 KiB chunk, chunked framing
STREAM_INTERVAL_S = 0.05
#: /huge-redirect: a 302 whose body is this big, sent as fast as the client reads.
HUGE_REDIRECT_BYTES = 192 * 1024 * 1024
HUGE_CHUNK = b"h" * (256 * 1024)
#: /gzip and /gzip-redirect: gzip that inflates to this many zero bytes.
BOMB_INFLATED_BYTES = 1024 * 1024 * 1024


@functools.cache
def gzip_bomb() -> bytes:
    """About 1 MiB of gzip that inflates to 1 GiB; built on first use (about a second)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    zeros = bytes(1024 * 1024)
    parts = [packer.compress(zeros) for _ in range(BOMB_INFLATED_BYTES // len(zeros))]
    return b"".join([*parts, packer.flush()])


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: ``time.time()`` when the last byte of the request arrived.
    arrived: float
    keep_alive: bool


class Recorder:
    """Every request to a non-control path, plus duplicate counting by webhook-id."""

    def __init__(self, *, secret: str | None, full: bool) -> None:
        self._webhook = Webhook(secret) if secret else None
        self._full = full
        self.records: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._duplicates = 0

    def record(self, req: Request) -> None:
        webhook_id = req.headers.get("webhook-id")
        rec: dict[str, Any] = {
            "t": req.arrived,
            "id": webhook_id,
            "method": req.method,
            "path": req.path,
            "ts": req.headers.get("webhook-timestamp"),
            "body_len": len(req.body),
            "verified": self._verify(req),
        }
        if self._full:
            rec["headers"] = dict(req.headers)
            rec["body"] = req.body.decode("utf-8", "replace")
        self.records.append(rec)
        if webhook_id is not None:
            if webhook_id in self._ids:
                self._duplicates += 1
            else:
                self._ids.add(webhook_id)

    def _verify(self, req: Request) -> bool | None:
        if self._webhook is None:
            return None
        try:
            # json_parse=False: a valid signature over a non-JSON body is still valid.
            self._webhook.verify(req.body, req.headers, json_parse=False)
        # ValueError covers malformed signature headers (bad base64, no comma).
        except (WebhookVerificationError, ValueError):
            return False
        return True

    def stats(self) -> dict[str, int]:
        return {
            "count": len(self.records),
            "unique_ids": len(self._ids),
            "duplicates": self._duplicates,
        }

    def reset(self) -> None:
        self.records.clear()
        self._ids.clear()
        self._duplicates = 0

    def dump(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(rec) + "\n" for rec in self.records)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str], bool]:
    """Request line and headers -> (method, path, lower-case headers, keep_alive)."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    connection = headers.get("connection", "").lower()
    # HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 the reverse.
    if version == "HTTP/1.0":
        return method, target.split("?", 1)[0], headers, "keep-alive" in connection
    return method, target.split("?", 1)[0], headers, "close" not in connection


def _head_bytes(code: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    try:
        reason = http.HTTPStatus(code).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {code} {reason}"] + [f"{k}: {v}" for k, v in headers]
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Connection(asyncio.Protocol):
    """One client connection; requests are answered strictly in arrival order."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._buf = bytearray()
        self._queue: deque[Request] = deque()
        self._head: tuple[str, str, dict[str, str], bool, int] | None = None
        # True while a response is pending (slow, hang, stream): later pipelined
        # requests wait in the queue so responses never overtake each other.
        self._busy = False
        self._closed = False
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            self._parse(time.time())
        except (ValueError, IndexError):
            self._fail(400)
            return
        self._drain()

    def _parse(self, now: float) -> None:
        while not self._closed:
            if self._head is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_HEAD_BYTES:
                        raise ValueError("request head too large")
                    return
                method, path, headers, keep_alive = _parse_head(bytes(self._buf[:end]))
                del self._buf[: end + 4]
                if "transfer-encoding" in headers:
                    # Chunked request bodies are out of scope: every client under
                    # test sends Content-Length.
                    self._fail(501)
                    return
                length = int(headers.get("content-length", "0"))
                if not 0 <= length <= MAX_BODY_BYTES:
                    raise ValueError("bad content-length")
                self._head = (method, path, headers, keep_alive, length)
                if headers.get("expect", "").lower() == "100-continue" and length:
                    self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            method, path, headers, keep_alive, length = self._head
            if len(self._buf) < length:
                return
            body = bytes(self._buf[:length])
            del self._buf[:length]
            self._head = None
            self._queue.append(Request(method, path, headers, body, now, keep_alive))

    def _drain(self) -> None:
        while self._queue and not self._busy and not self._closed:
            self._handle(self._queue.popleft())

    def _handle(self, req: Request) -> None:
        if req.path.startswith("/_"):
            self._control(req)
            return
        self._recorder.record(req)
        parts = req.path.strip("/").split("/")
        head, arg = parts[0], parts[1] if len(parts) > 1 else ""
        if head == "status" and arg.isdigit() and 200 <= int(arg) <= 599:
            self._respond(req, int(arg), b"")
        elif head == "retry-after":
            self._respond(req, 503, b"retry later", [("retry-after", arg)])
        elif head == "hang":
            self._busy = True  # never answered; the connection stays open
        elif head == "stream":
            self._busy = True
            head_bytes = _head_bytes(200, [("transfer-encoding", "chunked")], True)
            self._write(head_bytes)
            self._stream()
        elif head == "slow" and arg.isdigit():
            self._busy = True
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(int(arg) / 1000, self._finish_slow, req)
        elif head == "redirect":
            self._respond(req, 302, b"", [("location", "/ok")])
        elif head in ("gzip", "gzip-redirect"):
            extra = [("content-encoding", "gzip")]
            if head == "gzip-redirect":
                extra.append(("location", "/ok"))
            self._respond(req, 302 if head == "gzip-redirect" else 200, gzip_bomb(), extra)
        elif head == "huge-redirect":
            self._busy = True
            headers = [("content-length", str(HUGE_REDIRECT_BYTES)), ("location", "/ok")]
            self._write(_head_bytes(302, headers, False))
            self._send_huge(HUGE_REDIRECT_BYTES)
        elif head == "big":
            self._respond(req, 200, BIG_BODY)
        else:
            self._respond(req, 200, b"ok")

    def _control(self, req: Request) -> None:
        if req.path == "/_stats" and req.method == "GET":
            self._respond_json(req, self._recorder.stats())
        elif req.path == "/_records" and req.method == "GET":
            self._respond_json(req, self._recorder.records)
        elif req.path == "/_reset" and req.method == "POST":
            self._recorder.reset()
            self._respond_json(req, {"reset": True})
        else:
            self._respond(req, 404, b"unknown control endpoint")

    def _finish_slow(self, req: Request) -> None:
        self._timer = None
        self._busy = False
        self._respond(req, 200, b"ok")
        self._drain()

    def _stream(self) -> None:
        if self._closed:
            return
        if not self._paused:  # a client that stops reading must not grow our buffer
            self._write(STREAM_CHUNK)
        self._timer = asyncio.get_running_loop().call_later(STREAM_INTERVAL_S, self._stream)

    def _send_huge(self, remaining: int) -> None:
        """The rest of a /huge-redirect body, only as fast as the client reads it."""
        while remaining > 0 and not self._paused and not self._closed:
            chunk = HUGE_CHUNK[:remaining]
            self._write(chunk)
            remaining -= len(chunk)
        if self._closed:
            return
        if remaining <= 0:
            self._close()
            return
        self._timer = asyncio.get_running_loop().call_later(
            STREAM_INTERVAL_S, self._send_huge, remaining
        )

    def _respond_json(self, req: Request, payload: object) -> None:
        body = json.dumps(payload).encode()
        self._respond(req, 200, body, [("content-type", "application/json")])

    def _respond(
        self, req: Request, code: int, body: bytes, extra: list[tuple[str, str]] | None = None
    ) -> None:
        headers = [("content-length", str(len(body)))] + (extra or [])
        if not any(k == "content-type" for k, _ in headers):
            headers.append(("content-type", "text/plain"))
        self._write(_head_bytes(code, headers, req.keep_alive))
        if body and req.method != "HEAD":
            self._write(body)
        if not req.keep_alive:
            self._close()

    def _fail(self, code: int) -> None:
        self._write(_head_bytes(code, [("content-length", "0")], False))
        self._close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def _close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()


async def serve(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    recorder = Recorder(secret=args.secret, full=args.full)
    server = await loop.create_server(
        lambda: Connection(recorder), args.host, args.port, backlog=4096
    )
    port = server.sockets[0].getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # No wait_closed(): /hang and /stream connections would keep it waiting forever.
    server.close()
    if args.record:
        recorder.dump(args.record)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--record", help="on SIGTERM/SIGINT, write records as JSON lines here")
    parser.add_argument("--secret", help="standard-webhooks secret (whsec_...) to verify with")
    parser.add_argument("--full", action="store_true", help="also record headers and body")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
