"""The creates' fast path answers exactly as the FastAPI routes do, on the real database.

A request with ``Content-Type: application/json; charset=utf-8`` is one the
fast path leaves to FastAPI, so each pair below is the same create taken
both ways. A timer's id and times differ between two creates; nothing else may.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from tests.support.databases import TestDatabase
from timer_controller.api.app import create_app
from timer_controller.api.auth import BearerAuth
from timer_controller.api.creating import Creates
from timer_controller.api.fast_path import FastCreates
from timer_controller.api.routes import timer_router
from timer_controller.api.validation import TimerRules
from timer_controller.db.clock import utc_now
from timer_controller.db.timers import TimerStore

TOKEN = "fast-path-token-0123456789"
FAST = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
SLOW = {**FAST, "Content-Type": "application/json; charset=utf-8"}
VARYING = {"id", "due_at", "created_at", "time_left_s"}


@pytest.fixture
def client(db: TestDatabase) -> Iterator[TestClient]:
    app = create_app(store=TimerStore(db.engine), tokens=[TOKEN])
    with TestClient(app) as test_client:
        yield test_client


def post(client: TestClient, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    content = httpx.Request("POST", "/", json=body).content
    answer: httpx.Response = client.post(path, content=content, headers=headers)
    return answer


def same(one: httpx.Response, other: httpx.Response) -> None:
    """The same answer but for a new timer's id and times."""
    assert one.status_code == other.status_code, (one.text, other.text)
    assert one.headers["content-type"] == other.headers["content-type"]
    assert ("location" in one.headers) == ("location" in other.headers)

    def steady(body: Any) -> Any:
        if isinstance(body, dict):
            return {k: steady(v) for k, v in body.items() if k not in VARYING}
        if isinstance(body, list):
            return [steady(v) for v in body]
        return body

    assert steady(one.json()) == steady(other.json())


CREATES: list[dict[str, Any]] = [
    {"url": "https://example.com/a", "delay": "90s"},
    {
        "url": "https://example.com/b?x=1",
        "at": "2027-05-02T03:04:05.5+02:00",
        "method": "put",
        "headers": {"X-Trace": "1"},
        "body": "hé",
        "max_attempts": 5,
    },
]


@pytest.mark.parametrize("body", CREATES)
def test_a_create_answers_the_same_either_way(client: TestClient, body: dict[str, Any]) -> None:
    fast = post(client, "/v1/timers", body, FAST)
    slow = post(client, "/v1/timers", body, SLOW)

    assert fast.status_code == 201, fast.text
    same(fast, slow)
    assert fast.headers["location"] == f"/v1/timers/{fast.json()['id']}"
    assert client.get(fast.headers["location"], headers=FAST).json() == {
        **fast.json(),
        "time_left_s": pytest.approx(fast.json()["time_left_s"], abs=5),
    }


def test_replays_and_reused_keys_answer_the_same_either_way(client: TestClient) -> None:
    body = CREATES[0]
    first = post(client, "/v1/timers", body, {**FAST, "Idempotency-Key": '"fp-1"'})
    via_slow = post(client, "/v1/timers", body, {**SLOW, "Idempotency-Key": "fp-1"})
    via_fast = post(client, "/v1/timers", body, {**FAST, "Idempotency-Key": "fp-1"})
    other = {**body, "delay": 5}
    reused_fast = post(client, "/v1/timers", other, {**FAST, "Idempotency-Key": "fp-1"})
    reused_slow = post(client, "/v1/timers", other, {**SLOW, "Idempotency-Key": "fp-1"})

    assert first.status_code == 201
    assert via_fast.status_code == via_slow.status_code == 200
    assert via_fast.json()["id"] == via_slow.json()["id"] == first.json()["id"]
    assert reused_fast.status_code == 422
    assert reused_fast.json() == reused_slow.json()
    assert reused_fast.headers["content-type"] == "application/problem+json"


def test_a_batch_answers_the_same_either_way(client: TestClient) -> None:
    body = {"timers": [*CREATES, {**CREATES[0], "idempotency_key": f"b-{uuid.uuid4()}"}]}

    fast = post(client, "/v1/timers/batch", body, FAST)
    again = post(client, "/v1/timers/batch", {"timers": body["timers"][2:]}, SLOW)

    assert fast.status_code == 201
    assert again.status_code == 200
    assert again.json()["timers"][0] == {
        **fast.json()["timers"][2],
        "time_left_s": pytest.approx(fast.json()["timers"][2]["time_left_s"], abs=5),
    }
    slow = post(client, "/v1/timers/batch", {"timers": CREATES}, SLOW)
    same(post(client, "/v1/timers/batch", {"timers": CREATES}, FAST), slow)


def test_fast_creates_are_counted_under_their_route(client: TestClient) -> None:
    for _ in range(3):
        assert post(client, "/v1/timers", CREATES[0], FAST).status_code == 201

    metrics = client.get("/metrics").text

    counted = r'timer_api_requests_total\{method="POST",route="/v1/timers",status="201"\} 3'
    assert re.search(counted, metrics), metrics
    assert 'timer_api_request_duration_seconds_count{method="POST",route="/v1/timers"} 3' in metrics


def test_concurrent_creates_with_colliding_keys_make_one_timer_per_key(
    client: TestClient, db: TestDatabase
) -> None:
    held = post(client, "/v1/timers", CREATES[0], {**FAST, "Idempotency-Key": "held"})
    requests: list[tuple[str | None, dict[str, Any]]] = [("held", CREATES[0])] * 5
    requests += [("new", CREATES[1])] * 5
    requests += [("other", {**CREATES[0], "delay": d}) for d in range(5)]
    requests += [(None, CREATES[0])] * 5

    def create(request: tuple[str | None, dict[str, Any]]) -> httpx.Response:
        key, body = request
        headers = FAST if key is None else {**FAST, "Idempotency-Key": key}
        return post(client, "/v1/timers", body, headers)

    # An entered TestClient serves every call on its one event loop: calls from these
    # threads meet in the api's groups, as an api process's concurrent creates do.
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(create, requests))

    by_key: dict[str | None, list[httpx.Response]] = {}
    for (key, _), answer in zip(requests, answers, strict=True):
        by_key.setdefault(key, []).append(answer)
    assert [a.status_code for a in by_key["held"]] == [200] * 5
    assert {a.json()["id"] for a in by_key["held"]} == {held.json()["id"]}
    assert sorted(a.status_code for a in by_key["new"]) == [200] * 4 + [201]
    assert len({a.json()["id"] for a in by_key["new"]}) == 1
    assert sorted(a.status_code for a in by_key["other"]) == [201] + [422] * 4
    assert len({a.json()["id"] for a in by_key[None]}) == 5
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT idempotency_key, COUNT(*) FROM tasks GROUP BY idempotency_key"
        ).all()
    assert dict(rows) == {None: 5, "held": 1, "new": 1, "other": 1}


def test_only_plainly_well_formed_creates_take_the_fast_path(db: TestDatabase) -> None:
    """Everything else reaches the FastAPI app behind it, with its body intact."""
    passed: list[tuple[str, bytes]] = []

    async def behind(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        message = await receive()
        passed.append((scope["path"], message.get("body", b"")))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    store, auth, rules = TimerStore(db.engine), BearerAuth([TOKEN]), TimerRules()
    creates = Creates(store=store, rules=rules, clock=utc_now)
    routes = timer_router(store=store, creates=creates, auth=auth, rules=rules, clock=utc_now)
    app = FastCreates(behind, creates=creates, auth=auth, routes=routes.routes)
    good = b'{"url": "https://example.com/", "delay": 1}'
    cases = [
        ("/v1/timers", good, FAST, 201),
        ("/v1/timers/batch", b'{"timers": [' + good + b"]}", FAST, 201),
        ("/v1/timers", good, SLOW, 299),
        ("/v1/timers", good, {**FAST, "Authorization": "Bearer wrong-token-0000"}, 299),
        ("/v1/timers", good, {"Content-Type": "application/json"}, 299),
        ("/v1/timers", good, {**FAST, "Idempotency-Key": "a b"}, 299),
        ("/v1/timers", b'{"url": "https://example.com/", "dealy": 1}', FAST, 299),
        ("/v1/timers", b"{not json", FAST, 299),
        ("/v1/timers", b"[]", FAST, 299),
        ("/v1/timers?x=1", good, FAST, 299),
        ("/v1/timers/", good, FAST, 299),
    ]
    test_client = TestClient(app)  # not entered: no lifespan, which `behind` does not speak
    for path, content, headers, status in cases:
        passed.clear()
        answer = test_client.post(path, content=content, headers=headers)
        assert answer.status_code == status, (path, content, headers, answer.text)
        assert passed == ([] if status != 299 else [(path.split("?")[0], content)])
