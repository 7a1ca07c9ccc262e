"""bench/receiver.py as a real process: status behaviours, records, stats, signatures."""

from __future__ import annotations

import json
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

RECEIVER = Path(__file__).resolve().parents[2] / "bench" / "receiver.py"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
START_DEADLINE_S = 10.0


@contextmanager
def running_receiver(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start the receiver on a free port; yield (base URL, process)."""
    proc = subprocess.Popen(
        [sys.executable, str(RECEIVER), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=START_DEADLINE_S):
                pytest.fail(f"receiver printed nothing within {START_DEADLINE_S} s")
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield line.removeprefix("listening on "), proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def base_url() -> Iterator[str]:
    with running_receiver("--secret", SECRET, "--full") as (url, _):
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "code", "header", "header_value"),
    [
        ("POST", "/status/201", 201, None, None),
        ("POST", "/status/404", 404, None, None),
        ("PUT", "/status/500", 500, None, None),
        ("POST", "/retry-after/7", 503, "retry-after", "7"),
        ("GET", "/redirect", 302, "location", "/ok"),
        ("DELETE", "/anything/else", 200, None, None),
    ],
)
def test_paths_answer_their_status(
    client: httpx.Client,
    method: str,
    path: str,
    code: int,
    header: str | None,
    header_value: str | None,
) -> None:
    response = client.request(method, path, content=b"{}")
    assert response.status_code == code
    if header is not None:
        assert response.headers[header] == header_value


def test_default_path_answers_ok(client: httpx.Client) -> None:
    response = client.post("/hook", json={"id": 1})
    assert (response.status_code, response.text) == (200, "ok")


def test_big_answers_ten_megabytes(client: httpx.Client) -> None:
    response = client.get("/big")
    assert response.status_code == 200
    assert len(response.content) == 10 * 1024 * 1024


def test_slow_answers_after_the_delay(client: httpx.Client) -> None:
    started = time.monotonic()
    response = client.post("/slow/300")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_hang_never_answers(client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.post("/hang", timeout=httpx.Timeout(5.0, read=0.5))


def test_stream_sends_body_without_end(client: httpx.Client) -> None:
    received = 0
    with client.stream("GET", "/stream", timeout=httpx.Timeout(5.0, read=2.0)) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received >= 3 * 1024:
                break
    assert received >= 3 * 1024


def test_records_describe_each_request(client: httpx.Client) -> None:
    before = time.time()
    client.post(
        "/hook/1",
        content=b'{"id": 42}',
        headers={"webhook-id": "42", "webhook-timestamp": "1700000000", "x-extra": "yes"},
    )
    client.get("/_stats")  # control endpoints are not recorded
    after = time.time()
    records = client.get("/_records").json()
    assert len(records) == 1
    rec = records[0]
    assert before <= rec["t"] <= after
    assert (rec["id"], rec["method"], rec["path"], rec["ts"]) == (
        "42",
        "POST",
        "/hook/1",
        "1700000000",
    )
    assert rec["body_len"] == 10
    assert rec["headers"]["x-extra"] == "yes"
    assert rec["body"] == '{"id": 42}'


def test_records_without_webhook_id_have_null_id(client: httpx.Client) -> None:
    client.get("/plain")
    assert [r["id"] for r in client.get("/_records").json()] == [None]


def test_stats_count_duplicates_and_reset_clears(client: httpx.Client) -> None:
    for webhook_id in ["1", "2", "2", "3", "3", "3"]:
        client.post("/hook", headers={"webhook-id": webhook_id})
    client.post("/hook")  # no id: counted, never a duplicate
    assert client.get("/_stats").json() == {"count": 7, "unique_ids": 3, "duplicates": 3}
    assert client.post("/_reset").status_code == 200
    assert client.get("/_stats").json() == {"count": 0, "unique_ids": 0, "duplicates": 0}


def _signed_headers(msg_id: str, body: str) -> dict[str, str]:
    now = datetime.now(tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, now, body),
        "content-type": "application/json",
    }


def test_signature_verification(client: httpx.Client) -> None:
    body = json.dumps({"id": 7, "due_at": "2026-01-01T00:00:00"})
    good = client.post("/hook", content=body, headers=_signed_headers("7", body))
    tampered_headers = _signed_headers("8", body)
    bad = client.post("/hook", content=body.replace("7", "9"), headers=tampered_headers)
    unsigned = client.post("/hook", content=body, headers={"webhook-id": "10"})
    # The receiver still answers 200: the test, not the receiver, judges.
    assert [r.status_code for r in (good, bad, unsigned)] == [200, 200, 200]
    verified = {r["id"]: r["verified"] for r in client.get("/_records").json()}
    assert verified == {"7": True, "8": False, "10": False}


def test_verified_is_null_without_secret() -> None:
    with running_receiver() as (url, _):
        httpx.post(f"{url}/hook", content=b"{}")
        assert [r["verified"] for r in httpx.get(f"{url}/_records").json()] == [None]


def _read_responses(sock: socket.socket, count: int, deadline_s: float) -> bytes:
    """Read until ``count`` status lines arrived or the deadline passes."""
    data = b""
    end = time.monotonic() + deadline_s
    while data.count(b"HTTP/1.1 ") < count and time.monotonic() < end:
        sock.settimeout(max(end - time.monotonic(), 0.01))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_pipelined_requests_are_answered_in_order(base_url: str) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        # A slow request first: a naive server would answer the second one first.
        sock.sendall(
            b"POST /slow/200 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
            b"POST /status/201 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        data = _read_responses(sock, 2, deadline_s=5.0)
        # Keep-alive: the same connection still serves a third request.
        sock.sendall(b"GET /status/202 HTTP/1.1\r\nHost: x\r\n\r\n")
        data += _read_responses(sock, 1, deadline_s=5.0)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"201", b"202"]


def test_sigterm_writes_records_as_json_lines(tmp_path: Path) -> None:
    record = tmp_path / "records.jsonl"
    with running_receiver("--record", str(record)) as (url, proc):
        ids = [uuid.uuid4().hex for _ in range(3)]
        for webhook_id in ids:
            httpx.post(f"{url}/hook", headers={"webhook-id": webhook_id})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    lines = record.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids
