"""A small threaded TCP proxy the e2e tests can cut, restore, freeze and thaw.

    with TcpProxy("127.0.0.1", 3306) as proxy:
        env = db.env(DB_HOST="127.0.0.1", DB_PORT=str(proxy.port))
        ...
        proxy.cut()      # every live connection is reset; new ones are reset at once
        proxy.restore()  # new connections reach the server again
        proxy.freeze()   # nothing is relayed either way; every socket stays open
        proxy.thaw()     # relaying resumes, held bytes first

While cut, the proxy keeps its listening socket (so the port cannot be taken by
another process before ``restore``) but resets every connection it accepts
before a byte is forwarded: to a MySQL client that is a connection lost during
the handshake, as when a server or the network between goes away.

While frozen, it is a *silent* fault: dropped packets, a hung server, a
partition that resets nothing. Connections stay open and new ones are accepted
(the kernel completes the handshake), but no byte moves in either direction
until ``thaw``; a client sees only its own timeouts.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from types import TracebackType

_CHUNK = 64 * 1024
_ACCEPT_POLL_S = 0.05


def _abort(sock: socket.socket) -> None:
    """End a connection abruptly: RST on close (linger 0), and wake any thread in recv().

    shutdown() rather than close() alone: closing a socket another thread is
    blocked on does not wake that thread, nor release the connection.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _reset(sock: socket.socket) -> None:
    _abort(sock)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target_host:target_port`` until cut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._is_cut = False
        # Set while relaying; pumps and new connections wait on it while frozen.
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        #: Connections accepted so far, forwarded or reset.
        self.accepted = 0
        #: Connections reset on arrival because the proxy was cut.
        self.refused = 0
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="proxy-accept", daemon=True
        )
        self._acceptor.start()

    @property
    def is_cut(self) -> bool:
        return self._is_cut

    def cut(self) -> None:
        """Reset every live connection and every new one until ``restore``."""
        with self._lock:
            self._is_cut = True
            live = list(self._live)
        for sock in live:
            _abort(sock)  # its pump thread wakes and closes it

    def restore(self) -> None:
        with self._lock:
            self._is_cut = False

    @property
    def is_frozen(self) -> bool:
        return not self._flowing.is_set()

    def freeze(self) -> None:
        """Stop relaying in both directions, keeping every connection open, until ``thaw``."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()  # frozen pumps wake, and end with their sockets
        self._acceptor.join(5)
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            while not self._closed.is_set():
                if not sel.select(_ACCEPT_POLL_S):
                    continue
                try:
                    client, _ = self._listener.accept()
                except (BlockingIOError, OSError):
                    continue
                client.setblocking(True)
                self.accepted += 1
                threading.Thread(
                    target=self._connect, args=(client,), name="proxy-conn", daemon=True
                ).start()

    def _wait_flowing(self) -> bool:
        """Block while frozen; False once the proxy is closing."""
        while not self._flowing.wait(_ACCEPT_POLL_S):
            if self._closed.is_set():
                return False
        return not self._closed.is_set()

    def _connect(self, client: socket.socket) -> None:
        # A connection made while frozen waits, open and silent, like the rest.
        if not self._wait_flowing():
            _reset(client)
            return
        if self._is_cut:
            with self._lock:
                self.refused += 1
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self._lock:
            if self._is_cut:  # cut while connecting
                self.refused += 1
                _reset(client)
                _reset(upstream)
                return
            self._live.update((client, upstream))
        threading.Thread(
            target=self._pump, args=(upstream, client), name="proxy-down", daemon=True
        ).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy ``src`` to ``dst`` until either side ends; then end both."""
        try:
            # Waiting before the read too, so a frozen proxy leaves bytes in the
            # kernel's buffers, as a silent network does, rather than in ours.
            while self._wait_flowing():
                data = src.recv(_CHUNK)
                if not data or not self._wait_flowing():
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                owned = src in self._live or dst in self._live
                self._live.discard(src)
                self._live.discard(dst)
            if owned:  # the first of the pair's two threads to finish closes both
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    with contextlib.suppress(OSError):
                        sock.close()
