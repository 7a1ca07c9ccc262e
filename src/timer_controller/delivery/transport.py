"""The shared HTTP client: httpx's interface over aiohttp's connection pool.

Why aiohttp underneath: against a local receiver the httpx default transport
(httpcore) manages a few hundred requests/s and gets slower as concurrency
grows; the same httpx client over aiohttp is several times faster, see
docs/http-transport.md and bench/http_transports.py.

Why not the stock ``httpx_aiohttp.AiohttpTransport``: its exception map turns
a refused connection, a DNS failure and a server that hangs up into
``httpx.ConnectTimeout``, and it has no hook for the target policy. This
transport is the same idea with both fixed, measured as fast. The
dispatcher sends without following redirects through ``exchange``, which
builds no httpx objects but speaks the same exception contract; everything
else codes against httpx (``handle_async_request``, ``httpx.AsyncClient``).

Target policy (see guard.py): host names are checked by a resolver that sees
every address aiohttp is about to connect to, so a name that re-resolves to a
private address (DNS rebinding) is caught on each new connection; aiohttp
never resolves literal IPs, so this transport checks those itself.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from http.client import HTTPResponse
from http.cookiejar import CookieJar
from urllib.request import Request

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from timer_controller.delivery.policy import (
    BlockedDestinationError,
    TargetPolicy,
    check_address,
    is_legacy_ipv4,
    literal_ip,
)

# Below the 5 s idle timeout of uvicorn and Node.js servers, so that the
# client drops an idle connection before the server does; otherwise a POST
# can go out on a socket the server is closing, and POSTs are not retried.
KEEPALIVE_S = 4.0
# httpx.Request gives these a Content-Length even when the body is empty.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and drops refused addresses."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        listed = self._policy.lists_name(host)
        kept: list[ResolveResult] = []
        refusals: list[str] = []
        for result in results:
            ip = ipaddress.ip_address(result["host"])
            reason = check_address(ip, self._policy, host_listed=listed)
            if reason is None:
                kept.append(result)
            else:
                refusals.append(f"{ip} ({reason})")
        if not kept:
            raise BlockedDestinationError(
                f"blocked destination: {host} resolves to {', '.join(refusals)}"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()


class GuardedAiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request through one aiohttp session.

    The session is created on first use, inside the event loop that runs it.
    """

    def __init__(self, *, policy: TargetPolicy, max_connections: int) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._policy = policy
        self._max_connections = max_connections
        self._client: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # encoded=True: send exactly the bytes httpx built, with no requoting.
        url = URL(str(request.url), encoded=True)
        self._check_literal(url.raw_host or "")
        headers = request.headers.multi_items()
        data: bytes | AsyncIterator[bytes] | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = _aiter(request.stream)
            # aiohttp frames a streamed body itself and refuses a preset header.
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        with _mapped_errors(url):
            response = await self._session().request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=self._timeout(request),
                server_hostname=_sni(request),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, url),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout_s: float,
        read_limit: int,
    ) -> tuple[int, str | None]:
        """One request straight through the session, redirects not followed.

        The status and ``Retry-After`` of the answer, with at most
        ``read_limit`` bytes of its body read. The same bytes go out as
        through ``handle_async_request`` (the URL as httpx writes it, its
        Host header first), the same policy checks apply and the same httpx
        exceptions come out; only the ``httpx.Request`` and
        ``httpx.Response`` around it are not built: they were about a third
        of a webhook's CPU in the pod (docs/http-transport.md).
        """
        wire_url, host = _wire_url(url)
        self._check_literal(wire_url.raw_host or "")
        # The header list httpx.Request made: names lowercased, Host first;
        # Content-Length last for a body, or second when a method that
        # expects one has none.
        fields = [("host", host)]
        if not body and method in _BODY_METHODS:
            fields.append(("content-length", "0"))
        fields.extend((name.lower(), value) for name, value in headers.items())
        if body:
            fields.append(("content-length", str(len(body))))
        with _mapped_errors(wire_url):
            response = await self._session().request(
                method,
                wire_url,
                headers=fields,
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout_for(timeout_s, timeout_s, timeout_s),
            )
            try:
                received = 0
                async for chunk in response.content.iter_any():
                    received += len(chunk)
                    if received >= read_limit:
                        break
                # As httpx's Headers.get: repeated fields joined, first to last.
                retry_after = response.headers.getall("Retry-After", None)
                return response.status, None if retry_after is None else ", ".join(retry_after)
            finally:
                # Returns the connection to the pool if the body was read, else closes it.
                response.release()

    def open(self) -> None:
        """Build the connection pool now, inside the running loop.

        Loading the CA certificates takes about 30 ms: done on first use, it
        stalled the loop just as the first timers fired.
        """
        self._session()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self._resolver is not None:
            await self._resolver.close()

    def _check_literal(self, host: str) -> None:
        verdict = _literal_verdict(host, self._policy)
        if verdict is None:
            return
        error, message = verdict
        raise error(message)

    def _session(self) -> aiohttp.ClientSession:
        if self._client is not None:
            return self._client
        if self._policy.block_private_networks or self._policy.allowed_hosts:
            self._resolver = GuardedResolver(self._policy)
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=KEEPALIVE_S,
            ssl=httpx.create_ssl_context(),
            resolver=self._resolver,
        )
        self._client = aiohttp.ClientSession(
            connector=connector,
            # httpx decodes bodies and owns cookies (see _NoCookieJar).
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # An environment proxy would make the resolver check the proxy,
            # not the target.
            trust_env=False,
        )
        return self._client

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        spec = request.extensions.get("timeout", {})
        return self._timeout_for(spec.get("connect"), spec.get("read"), spec.get("pool"))

    def _timeout_for(
        self, connect_s: float | None, read_s: float | None, pool_s: float | None
    ) -> aiohttp.ClientTimeout:
        key = (connect_s, read_s, pool_s)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # aiohttp's "connect" covers waiting for a pooled connection too.
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=connect_s, sock_read=read_s, connect=pool_s
            )
            self._timeouts[key] = timeout
        return timeout


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, url: URL) -> None:
        self._response = response
        self._url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors(self._url):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # Returns the connection to the pool if the body was read, else closes it.
        self._response.release()


@functools.lru_cache(maxsize=4096)
def _wire_url(url: str) -> tuple[URL, str]:
    """A task URL as httpx would send it, and the Host header httpx would give it.

    Parsed by httpx (which raises ``httpx.InvalidURL`` for a malformed one)
    so that ``exchange`` sends the same bytes as ``handle_async_request``;
    tasks share endpoints, so each is worked out once.
    """
    parsed = httpx.URL(url)
    return URL(str(parsed), encoded=True), parsed.netloc.decode("ascii")


@functools.lru_cache(maxsize=4096)
def _literal_verdict(
    host: str, policy: TargetPolicy
) -> tuple[type[httpx.TransportError], str] | None:
    """Why a literal-IP host may not be connected to (None: it may, or it is a name).

    Pure, and hosts repeat from task to task, so answers are kept (3.7 us
    a request uncached, docs/benchmarks.md).
    """
    ip = literal_ip(host)
    if ip is None:
        # Older aiohttp passes an all-digit host such as 2130706433 straight
        # to connect(), past the resolver; newer aiohttp refuses it the same way.
        if is_legacy_ipv4(host):
            return httpx.UnsupportedProtocol, f"invalid URL: non-canonical IPv4 address {host}"
        return None
    reason = check_address(ip, policy, host_listed=False)
    if reason is not None:
        return BlockedDestinationError, f"blocked destination: {ip} ({reason})"
    return None


def make_http_client(
    *,
    timeout_s: float,
    max_connections: int,
    follow_redirects: bool,
    policy: TargetPolicy,
    user_agent: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one shared client; use it from a single event loop and ``aclose`` it.

    Pass ``transport`` to share it with a caller that also uses it directly
    (see dispatch.py); otherwise a GuardedAiohttpTransport is made here.
    """
    return httpx.AsyncClient(
        transport=transport
        or GuardedAiohttpTransport(policy=policy, max_connections=max_connections),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=follow_redirects,
        headers={"User-Agent": user_agent},
        cookies=_NoCookieJar(),
    )


class _NoCookieJar(CookieJar):
    """Stores no cookie from a response, so none is ever sent with a later request.

    One client serves every task: a shared jar would carry the cookies one
    receiver set into the next task's request to the same site.
    """

    def extract_cookies(self, response: HTTPResponse, request: Request) -> None:
        return


def _sni(request: httpx.Request) -> str | None:
    value = request.extensions.get("sni_hostname")
    return value if isinstance(value, str) else None


async def _aiter(
    stream: httpx.AsyncByteStream | httpx.SyncByteStream,
) -> AsyncIterator[bytes]:
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("an async client needs an async request body")
    async for chunk in stream:
        yield chunk


@contextlib.contextmanager
def _mapped_errors(url: URL) -> Iterator[None]:
    """aiohttp errors as the httpx exceptions the httpcore transport raises for the same cause."""
    try:
        yield
    except httpx.HTTPError:
        raise
    except aiohttp.ClientConnectorDNSError as exc:
        raise httpx.ConnectError(f"DNS lookup failed for {url.host}: {exc.os_error}") from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(
            f"cannot connect to {exc.host}:{exc.port}: {exc.os_error}"
        ) from exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(f"timed out connecting to {url.host}") from exc
    except aiohttp.SocketTimeoutError as exc:
        raise httpx.ReadTimeout(f"timed out reading from {url.host}") from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError("server disconnected without sending a response") from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(f"bad response from {url.host}: {exc}") from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(f"invalid URL: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise httpx.NetworkError(f"{type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise httpx.TimeoutException(f"timed out talking to {url.host}") from exc
