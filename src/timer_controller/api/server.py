"""Serving the app with uvicorn on a socket bound up front.

Binding first turns "port in use" into one clear line before anything else
starts, and lets API_PORT=0 pick a free port that is then logged.
"""

from __future__ import annotations

import errno
import gc
import logging
import socket
import sys
from types import FrameType

from fastapi import FastAPI

log = logging.getLogger(__name__)

_BACKLOG = 2048
_SWITCH_INTERVAL_S = 0.0005


class ListenError(Exception):
    """The api cannot listen on API_HOST:API_PORT; the message says why."""


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; raises ListenError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            f"API_HOST={host} is not an address to listen on: {exc.strerror}"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"API_PORT={port} is in use on {host}; stop what listens there or pick another port"
            ) from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def serve(app: FastAPI, sock: socket.socket, *, threads: int, grace_s: float) -> int:
    """Serve until SIGTERM/SIGINT, then let requests finish for ``grace_s``; the exit code.

    ``threads``: how many blocking store calls may run at once.
    """
    import anyio.to_thread
    import uvicorn

    # A store call back from the database waits for the event loop to let go of
    # the interpreter: at most this long (Python's default is 5 ms, twice per create).
    sys.setswitchinterval(_SWITCH_INTERVAL_S)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # The limiter belongs to the running loop, so it is sized here.
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
            await super().startup(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # uvicorn raises a caught SIGTERM again once it has stopped; a stop
            # asked for is a clean exit here (0), as the controller's is.
            self._captured_signals.clear()

    config = uvicorn.Config(
        app,
        # Our logging as configured; no access log (it would add a line per request).
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(1, round(grace_s)),
        server_header=False,
    )
    # Everything built so far (the app, its schemas, the imported modules) lives as
    # long as the process: out of the collector's way, a full collection no longer
    # walks ~90k objects (~50 ms) while a batch's answer waits.
    gc.freeze()
    Server(config).run(sockets=[sock])
    log.info("api stopped", extra={"event": "api_stopped"})
    return 0
