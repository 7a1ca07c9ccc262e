"""FOLLOW_REDIRECTS against real HTTP servers: every hop bounded, nothing forwarded wrongly.

Each test runs an aiohttp server on 127.0.0.1 in its own event loop and fires
one task through the Dispatcher over the real guarded transport.
"""

from __future__ import annotations

import asyncio
import functools
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from aiohttp import web

from timer_controller.delivery.dispatch import Dispatcher
from timer_controller.delivery.policy import TargetPolicy
from timer_controller.delivery.redirects import RedirectingSender
from timer_controller.delivery.transport import GuardedAiohttpTransport
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass

BOMB_INFLATED_BYTES = 256 * 1024 * 1024


@functools.cache
def bomb_bytes() -> bytes:
    """About 250 KiB of gzip that inflates to 256 MiB (a 1 MiB one took a pod past 2 GB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    zeros = bytes(1024 * 1024)
    parts = [packer.compress(zeros) for _ in range(BOMB_INFLATED_BYTES // len(zeros))]
    return b"".join([*parts, packer.flush()])


# Well below what reading the bomb (or a 64 MiB body) would allocate.
PEAK_BUDGET_BYTES = 8 * 1024 * 1024


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Servers:
    """Two servers on two ports: two origins."""

    ports: list[int] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str, which: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[which]}{path}"


@asynccontextmanager
async def serving() -> AsyncIterator[Servers]:
    servers = Servers()

    async def record(request: web.Request) -> None:
        servers.seen.append(
            Seen(request.method, request.path, dict(request.headers), await request.read())
        )

    async def hook(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="ok")

    async def redirect(request: web.Request) -> web.StreamResponse:
        """/redirect/<code>?to=<url>, with a body as ?body= asks."""
        await record(request)
        code = int(request.match_info["code"])
        to = request.query["to"]
        headers = {"Location": request.path_qs if to == "self" else to}
        kind = request.query.get("body", "")
        if kind == "bomb":
            headers["Content-Encoding"] = "gzip"
            return web.Response(status=code, body=bomb_bytes(), headers=headers)
        response = web.StreamResponse(status=code, headers=headers)
        if kind == "huge":  # 64 MiB, streamed as fast as the client takes it
            response.content_length = 64 * 1024 * 1024
            await response.prepare(request)
            chunk = b"x" * (1024 * 1024)
            for _ in range(64):
                await response.write(chunk)
            return response
        await response.prepare(request)
        return response

    async def bomb(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=bomb_bytes(), headers={"Content-Encoding": "gzip"})

    runners = []
    for _ in range(2):
        app = web.Application()
        app.router.add_route("*", "/hook", hook)
        app.router.add_route("*", "/bomb", bomb)
        app.router.add_route("*", "/redirect/{code}", redirect)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        servers.ports.append(runner.addresses[0][1])
        runners.append(runner)
    try:
        yield servers
    finally:
        for runner in runners:
            await runner.cleanup()


async def fire(task: ClaimedTask, *, policy: TargetPolicy | None = None) -> Outcome:
    """One attempt as bootstrap wires it with FOLLOW_REDIRECTS=true."""
    policy = policy or TargetPolicy()
    transport = GuardedAiohttpTransport(policy=policy, max_connections=10)
    try:
        dispatcher = Dispatcher(
            RedirectingSender(transport, policy=policy),
            timeout_s=10,
            policy=policy,
            keys=(),
            max_body_bytes=1024,
            db_clock=lambda: datetime(2026, 1, 1),
        )
        return await dispatcher.fire(task)
    finally:
        await transport.aclose()


def task(url: str, *, headers: str | None = None, body: str | None = None) -> ClaimedTask:
    return ClaimedTask(
        id=7,
        url=url,
        due_at=datetime(2026, 1, 1),
        attempt=1,
        max_attempts=3,
        headers=headers,
        body=body,
    )


def redirect_to(servers: Servers, to: str, *, code: int = 302, body: str = "") -> str:
    query = httpx.QueryParams({"to": to, "body": body})
    return servers.url(f"/redirect/{code}?{query}")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


async def peak_bytes(work: Awaitable[Outcome]) -> tuple[Outcome, int]:
    """The outcome, and the most memory Python allocated while it ran."""
    tracemalloc.start()
    try:
        outcome = await work
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_gzip_bomb_on_a_redirect_is_never_inflated() -> None:
    async def scenario() -> None:
        async with serving() as servers:
            url = redirect_to(servers, servers.url("/hook"), body="bomb")
            outcome, peak = await peak_bytes(fire(task(url)))
        assert outcome.klass is OutcomeClass.SUCCESS, outcome
        assert peak < PEAK_BUDGET_BYTES, f"{peak} bytes allocated"
        assert [s.path for s in servers.seen] == ["/redirect/302", "/hook"]

    run(scenario)


def test_a_huge_redirect_body_is_not_read() -> None:
    async def scenario() -> None:
        async with serving() as servers:
            url = redirect_to(servers, servers.url("/hook"), code=307, body="huge")
            outcome, peak = await peak_bytes(fire(task(url)))
        assert outcome.klass is OutcomeClass.SUCCESS, outcome
        assert peak < PEAK_BUDGET_BYTES, f"{peak} bytes allocated"

    run(scenario)


def test_a_gzip_bomb_after_redirects_is_read_raw_and_capped() -> None:
    async def scenario() -> None:
        async with serving() as servers:
            url = redirect_to(servers, servers.url("/bomb"))
            outcome, peak = await peak_bytes(fire(task(url)))
        assert outcome.klass is OutcomeClass.SUCCESS, outcome
        assert peak < PEAK_BUDGET_BYTES, f"{peak} bytes allocated"

    run(scenario)


def test_custom_headers_are_not_forwarded_to_another_origin() -> None:
    headers = json.dumps({"Authorization": "Bearer row-secret", "X-Tenant": "t1"})

    async def scenario() -> None:
        async with serving() as servers:
            url = redirect_to(servers, servers.url("/hook", which=1), code=307)
            outcome = await fire(task(url, headers=headers, body='{"a":1}'))
        assert outcome.klass is OutcomeClass.SUCCESS, outcome
        first, second = servers.seen
        assert first.headers["Authorization"] == "Bearer row-secret"
        forwarded = {name.lower(): value for name, value in second.headers.items()}
        assert "authorization" not in forwarded
        assert "x-tenant" not in forwarded
        assert forwarded["webhook-id"] == "7"
        assert second.method == "POST"
        assert second.body == b'{"a":1}'
        assert forwarded["host"] == f"127.0.0.1:{servers.ports[1]}"

    run(scenario)


def test_custom_headers_stay_on_the_same_origin() -> None:
    headers = json.dumps({"Authorization": "Bearer row-secret"})

    async def scenario() -> None:
        async with serving() as servers:
            url = redirect_to(servers, "/hook", code=308)
            outcome = await fire(task(url, headers=headers))
        assert outcome.klass is OutcomeClass.SUCCESS, outcome
        assert servers.seen[1].headers["Authorization"] == "Bearer row-secret"

    run(scenario)


def test_a_post_redirected_by_302_becomes_a_get_without_body_or_framing() -> None:
    async def scenario() -> None:
        async with serving() as servers:
            url = redirect_to(servers, "/hook", code=302)
            outcome = await fire(task(url, body='{"a":1}'))
        assert outcome.klass is OutcomeClass.SUCCESS, outcome
        hop = servers.seen[1]
        assert hop.method == "GET"
        assert hop.body == b""
        lowered = {name.lower() for name in hop.headers}
        assert not lowered & {"transfer-encoding", "content-length", "content-type"}, hop.headers

    run(scenario)


def test_a_redirect_to_a_refused_address_is_blocked() -> None:
    policy = TargetPolicy(block_private_networks=True, allowed_hosts=("127.0.0.1/32",))

    async def scenario() -> None:
        async with serving() as servers:
            url = redirect_to(servers, f"http://127.0.0.2:{servers.ports[1]}/hook")
            outcome = await fire(task(url), policy=policy)
        assert outcome.klass is OutcomeClass.INVALID, outcome
        assert outcome.error == "blocked destination"
        assert [s.path for s in servers.seen] == ["/redirect/302"]

    run(scenario)


def test_a_redirect_loop_ends() -> None:
    async def scenario() -> None:
        async with serving() as servers:
            outcome = await fire(task(redirect_to(servers, "self")))
        assert outcome.klass is OutcomeClass.CONNECT_ERROR, outcome
        assert outcome.error is not None
        assert "more than 10 redirects" in outcome.error
        assert len(servers.seen) == 11

    run(scenario)
