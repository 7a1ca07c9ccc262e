"""A task URL's query string and userinfo never reach ``last_error`` or a log line.

A raw TCP server answers with broken HTTP, so that the HTTP library's own
error message, which quotes the URL, is what the dispatcher has to describe.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import pytest

from timer_controller.delivery.dispatch import Dispatcher, Exchanger, Send
from timer_controller.delivery.policy import TargetPolicy
from timer_controller.delivery.redirects import RedirectingSender
from timer_controller.delivery.transport import GuardedAiohttpTransport
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass

TOKEN = "s3cr3t-query-TOKEN"
PASSWORD = "hunter2-userinfo"
ANSWERS = {
    "bad-status-line": b"garbage\r\n\r\n",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "short-body": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
}


async def fire_against(answer: bytes, *, follow_redirects: bool) -> Outcome:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    policy = TargetPolicy()
    transport = GuardedAiohttpTransport(policy=policy, max_connections=2)
    send: Send | Exchanger = (
        RedirectingSender(transport, policy=policy) if follow_redirects else transport
    )
    task = ClaimedTask(
        id=1,
        url=f"http://alice:{PASSWORD}@127.0.0.1:{port}/hook?token={TOKEN}&x=1",
        due_at=datetime(2026, 1, 1),
        attempt=1,
        max_attempts=3,
    )
    async with server:
        dispatcher = Dispatcher(
            send,
            timeout_s=5,
            policy=policy,
            keys=(),
            max_body_bytes=1024,
            db_clock=lambda: datetime(2026, 1, 1),
        )
        try:
            return await dispatcher.fire(task)
        finally:
            await transport.aclose()


@pytest.mark.parametrize("follow_redirects", [False, True], ids=["direct", "redirects"])
@pytest.mark.parametrize("answer", list(ANSWERS), ids=list(ANSWERS))
def test_the_url_secrets_are_redacted_in_last_error_and_logs(
    answer: str, follow_redirects: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    outcome = asyncio.run(
        asyncio.wait_for(fire_against(ANSWERS[answer], follow_redirects=follow_redirects), 30)
    )

    assert outcome.klass is OutcomeClass.CONNECT_ERROR, outcome
    assert outcome.error is not None
    assert TOKEN not in outcome.error, outcome.error
    assert PASSWORD not in outcome.error, outcome.error
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert TOKEN not in logged
    assert PASSWORD not in logged
