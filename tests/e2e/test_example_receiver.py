"""examples/receiver.py, run as a real process, checks Standard Webhooks signatures."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

RECEIVER = Path(__file__).resolve().parents[2] / "examples" / "receiver.py"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # test-only value
START_TIMEOUT_S = 10.0
LINE_TIMEOUT_S = 5.0


@dataclass
class Receiver:
    url: str
    lines: queue.Queue[str]

    def wait_for_line(self, needle: str, timeout_s: float = LINE_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if needle in line:
                return line
        raise AssertionError(f"receiver printed no line containing {needle!r} within {timeout_s}s")


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    proc = subprocess.Popen(
        [sys.executable, str(RECEIVER), "--host", "127.0.0.1", "--port", "0"],
        env={**os.environ, "WEBHOOK_SECRET": SECRET},
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    # A reader thread lets the test wait on output with a deadline.
    threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
    try:
        try:
            first = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"receiver did not print its address within {START_TIMEOUT_S}s")
        assert first.startswith("listening on http://"), first
        yield Receiver(url=first.removeprefix("listening on ").strip(), lines=lines)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def signed_headers(msg_id: str, body: str) -> dict[str, str]:
    now = datetime.now(tz=UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, now, body),
    }


def test_signed_request_is_accepted_and_printed_as_verified(receiver: Receiver) -> None:
    msg_id = f"msg_{uuid.uuid4().hex}"
    body = json.dumps({"id": msg_id, "due_at": "2030-01-01T00:00:00Z"})

    response = httpx.post(
        receiver.url + "/hello", content=body, headers=signed_headers(msg_id, body)
    )

    assert response.status_code == 200
    line = receiver.wait_for_line(msg_id)
    assert "verified=yes" in line
    assert body in line


def test_tampered_body_is_rejected_with_401(receiver: Receiver) -> None:
    msg_id = f"msg_{uuid.uuid4().hex}"
    body = json.dumps({"id": msg_id, "due_at": "2030-01-01T00:00:00Z"})
    tampered = body.replace("2030", "2031")

    response = httpx.post(
        receiver.url + "/hello", content=tampered, headers=signed_headers(msg_id, body)
    )

    assert response.status_code == 401
    assert "verified=no" in receiver.wait_for_line(msg_id)
