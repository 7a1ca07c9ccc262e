"""The shared httpx client against a real HTTP server on 127.0.0.1.

Each test runs its own event loop (asyncio.run) with an aiohttp.web server
in it, so what crosses the wire is real: redirects, refused connections,
the resolved-address check, headers, timeouts.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web

from timer_controller.delivery.policy import BlockedDestinationError, TargetPolicy
from timer_controller.delivery.transport import make_http_client

USER_AGENT = "timer-controller-test/1.0"
OPEN = TargetPolicy()
BLOCK = TargetPolicy(block_private_networks=True)


@dataclass
class Server:
    port: int
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    server = Server(port=0)

    async def hook(request: web.Request) -> web.Response:
        server.paths.append(request.path)
        server.headers.append(dict(request.headers))
        return web.json_response({"ok": True}, headers={"Set-Cookie": "session=abc"})

    async def moved(request: web.Request) -> web.Response:
        server.paths.append(request.path)
        raise web.HTTPFound("/hook")

    async def stalled(request: web.Request) -> web.Response:
        server.paths.append(request.path)
        await asyncio.Event().wait()  # never answers; the server cancels it on cleanup
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_route("*", "/hook", hook)
    app.router.add_route("*", "/moved", moved)
    app.router.add_route("*", "/stalled", stalled)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


def client(
    *,
    policy: TargetPolicy = OPEN,
    follow_redirects: bool = False,
    timeout_s: float = 5.0,
) -> httpx.AsyncClient:
    return make_http_client(
        timeout_s=timeout_s,
        max_connections=10,
        follow_redirects=follow_redirects,
        policy=policy,
        user_agent=USER_AGENT,
    )


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_redirect_is_not_followed_by_default() -> None:
    async def scenario() -> None:
        async with serving() as server, client() as http:
            response = await http.post(server.url("/moved"), json={})
        assert response.status_code == 302
        assert response.headers["location"] == "/hook"
        assert server.paths == ["/moved"]

    run(scenario)


def test_redirect_is_followed_when_enabled() -> None:
    async def scenario() -> None:
        async with serving() as server, client(follow_redirects=True) as http:
            response = await http.get(server.url("/moved"))
        assert response.status_code == 200
        assert response.url.path == "/hook"
        assert server.paths == ["/moved", "/hook"]

    run(scenario)


def test_closed_port_raises_connect_error() -> None:
    async def scenario() -> None:
        async with client() as http:
            with pytest.raises(httpx.ConnectError, match="cannot connect"):
                await http.post(f"http://127.0.0.1:{closed_port()}/hook", json={})

    run(scenario)


def test_silent_server_raises_read_timeout() -> None:
    async def scenario() -> None:
        async with serving() as server, client(timeout_s=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(server.url("/stalled"), json={})
            assert server.paths == ["/stalled"]

    run(scenario)


def test_legacy_numeric_host_is_refused_before_connecting() -> None:
    # 2130706433 is 127.0.0.1; it must not reach connect() as if it were a name.
    async def scenario() -> None:
        async with serving() as server, client(policy=BLOCK) as http:
            with pytest.raises(httpx.UnsupportedProtocol, match="2130706433"):
                await http.post(server.url(host="2130706433"), json={})
        assert server.paths == []

    run(scenario)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_private_target_is_blocked(host: str) -> None:
    # "localhost" is not a literal IP: only the check on resolved addresses can stop it.
    async def scenario() -> None:
        async with serving() as server, client(policy=BLOCK) as http:
            with pytest.raises(BlockedDestinationError, match="blocked destination"):
                await http.post(server.url(host=host), json={})
        assert server.paths == []

    run(scenario)


def test_host_not_listed_is_blocked_after_resolution() -> None:
    policy = TargetPolicy(allowed_hosts=("api.example.com",))

    async def scenario() -> None:
        async with serving() as server, client(policy=policy) as http:
            with pytest.raises(BlockedDestinationError, match="not in ALLOWED_HOSTS"):
                await http.post(server.url(host="localhost"), json={})
        assert server.paths == []

    run(scenario)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_listed_range_overrides_private_block(host: str) -> None:
    policy = TargetPolicy(block_private_networks=True, allowed_hosts=("127.0.0.0/8",))

    async def scenario() -> None:
        async with serving() as server, client(policy=policy) as http:
            response = await http.post(server.url(host=host), json={"n": 1})
        assert response.status_code == 200
        assert response.json() == {"ok": True}
        assert server.paths == ["/hook"]

    run(scenario)


def test_user_agent_arrives_and_cookies_are_not_replayed() -> None:
    async def scenario() -> None:
        async with serving() as server, client() as http:
            first = await http.post(server.url(), json={})
            second = await http.post(server.url(), json={})
        assert first.headers["set-cookie"] == "session=abc"
        assert second.status_code == 200
        assert [h["User-Agent"] for h in server.headers] == [USER_AGENT, USER_AGENT]
        # One task's receiver must not see cookies another response set.
        assert [h.get("Cookie") for h in server.headers] == [None, None]

    run(scenario)
