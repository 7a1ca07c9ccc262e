"""The api as a user meets it: a real ``timer-controller api``, a real controller, a receiver.

Timers are created over HTTP, fired by the controller at the local
receiver, and read back over HTTP. Start-up errors end in one line.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support.databases import TestDatabase
from tests.support.processes import Api, Controller, Receiver
from tests.support.tasks import FAST_ENV
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

TOKEN = "e2e-token-Qx7.never-logged"
WRONG_TOKEN = "e2e-wrong-token-Zk4-never-logged"
EXIT_USAGE = 2

StartApi = Callable[..., Api]
StartController = Callable[..., Controller]


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def arrivals(receiver: Receiver, timer_id: int) -> list[float]:
    return [float(r["t"]) for r in receiver.records() if r["id"] == str(timer_id)]


@pytest.fixture
def api(db: TestDatabase, apis: StartApi) -> Api:
    started = apis(db.env(API_TOKENS=TOKEN))
    started.wait_started()
    return started


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    with api.client(TOKEN) as started:
        yield started


@pytest.fixture
def controller(db: TestDatabase, controllers: StartController) -> Controller:
    started = controllers(db.env(**FAST_ENV))
    started.wait_started()
    return started


def timer(client: httpx.Client, timer_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/timers/{timer_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.usefixtures("controller")
def test_create_over_http_fires_and_shows_done(client: httpx.Client, receiver: Receiver) -> None:
    response = client.post("/v1/timers", json={"url": receiver.url("/hello"), "delay": "1s"})

    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == f"/v1/timers/{created['id']}"
    assert created["status"] == "waiting"
    wait_until(lambda: arrivals(receiver, created["id"]), timeout_s=15, what="the webhook")
    done = wait_until(
        lambda: (t := timer(client, created["id"]))["status"] == "done" and t,
        timeout_s=15,
        what="the timer to show done",
    )
    assert done["attempts"] == 1
    assert done["last_status_code"] == 200
    assert done["time_left_s"] == 0
    assert arrivals(receiver, created["id"])[0] >= epoch(created["due_at"])


@pytest.mark.usefixtures("controller")
def test_a_cancelled_timer_never_fires(client: httpx.Client, receiver: Receiver) -> None:
    doomed = client.post("/v1/timers", json={"url": receiver.url("/doomed"), "delay": "1.5s"})
    cancelled = client.delete(f"/v1/timers/{doomed.json()['id']}")
    # Due after the cancelled one: once it has fired, the cancelled one had its chance.
    sentinel = client.post("/v1/timers", json={"url": receiver.url("/sentinel"), "delay": "2.5s"})

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    wait_until(lambda: arrivals(receiver, sentinel.json()["id"]), timeout_s=15, what="sentinel")
    assert arrivals(receiver, doomed.json()["id"]) == []
    assert timer(client, doomed.json()["id"])["status"] == "cancelled"
    again = client.delete(f"/v1/timers/{doomed.json()['id']}")
    assert again.status_code == 409
    assert again.json()["timer_status"] == "cancelled"


@pytest.mark.usefixtures("controller")
def test_a_rescheduled_timer_fires_at_the_new_time_not_the_old(
    client: httpx.Client, receiver: Receiver
) -> None:
    later = client.post("/v1/timers", json={"url": receiver.url("/later"), "delay": "1s"}).json()
    sooner = client.post("/v1/timers", json={"url": receiver.url("/sooner"), "delay": "1h"}).json()

    moved_later = client.patch(f"/v1/timers/{later['id']}", json={"delay": "3.5s"})
    moved_sooner = client.patch(f"/v1/timers/{sooner['id']}", json={"delay": 1})

    assert moved_later.status_code == 200, moved_later.text
    assert moved_sooner.status_code == 200, moved_sooner.text
    wait_until(lambda: arrivals(receiver, later["id"]), timeout_s=20, what="the moved timer")
    wait_until(lambda: arrivals(receiver, sooner["id"]), timeout_s=20, what="the hurried timer")
    (fired_later,) = arrivals(receiver, later["id"])
    (fired_sooner,) = arrivals(receiver, sooner["id"])
    assert fired_later >= epoch(moved_later.json()["due_at"])
    assert fired_later >= epoch(later["due_at"]) + 2  # not at the old time
    assert fired_sooner >= epoch(moved_sooner.json()["due_at"])
    assert fired_sooner < epoch(sooner["due_at"])
    done = wait_until(
        lambda: timer(client, later["id"])["status"] == "done", timeout_s=10, what="done"
    )
    assert done
    too_late = client.patch(f"/v1/timers/{later['id']}", json={"delay": 5})
    assert too_late.status_code == 409
    assert too_late.json()["timer_status"] == "done"


def test_a_batch_of_1000_fires_every_timer_once(
    db: TestDatabase,
    client: httpx.Client,
    receiver: Receiver,
    controllers: StartController,
) -> None:
    controller = controllers(db.env(**FAST_ENV, BATCH_SIZE="200", MAX_IN_FLIGHT="500"))
    controller.wait_started()
    timers = [{"url": receiver.url(f"/batch/{i}"), "delay": 1} for i in range(1000)]

    response = client.post("/v1/timers/batch", json={"timers": timers})

    assert response.status_code == 201, response.text[:500]
    created = response.json()["timers"]
    assert [t["url"] for t in created] == [t["url"] for t in timers]
    wait_until(lambda: receiver.stats()["count"] >= 1000, timeout_s=60, what="1000 webhooks")
    assert receiver.stats()["duplicates"] == 0
    done = wait_until(
        lambda: len(client.get("/v1/timers?status=done&limit=1000").json()["timers"]) == 1000,
        timeout_s=30,
        what="1000 done",
    )
    assert done


def test_idempotency_keys_over_http(client: httpx.Client, receiver: Receiver) -> None:
    body = {"url": receiver.url("/once"), "delay": "1h"}

    first = client.post("/v1/timers", json=body, headers={"Idempotency-Key": '"order-42"'})
    again = client.post("/v1/timers", json=body, headers={"Idempotency-Key": "order-42"})
    other = client.post(
        "/v1/timers", json={**body, "delay": "2h"}, headers={"Idempotency-Key": "order-42"}
    )

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 422)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["due_at"] == first.json()["due_at"]
    assert other.headers["content-type"] == "application/problem+json"
    listed = client.get("/v1/timers", params={"idempotency_key": "order-42"}).json()
    assert [t["id"] for t in listed["timers"]] == [first.json()["id"]]


def test_authentication_failures_and_tokens_stay_out_of_the_log(
    db: TestDatabase, apis: StartApi
) -> None:
    api = apis(db.env(API_TOKENS=f"{TOKEN} second-token-0123456789", LOG_LEVEL="DEBUG"))
    api.wait_started()
    with httpx.Client(base_url=api.base_url, timeout=10) as anonymous:
        missing = anonymous.get("/v1/timers")
        wrong = anonymous.get("/v1/timers", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
        right = anonymous.get("/v1/timers", headers={"Authorization": f"Bearer {TOKEN}"})
        second = anonymous.get(
            "/v1/timers", headers={"Authorization": "Bearer second-token-0123456789"}
        )
        open_pages = [
            anonymous.get(path).status_code for path in ("/healthz", "/readyz", "/metrics")
        ]

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.headers["www-authenticate"] == 'Bearer realm="timer-controller"'
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert missing.headers["content-type"] == "application/problem+json"
    assert (right.status_code, second.status_code) == (200, 200)
    assert open_pages == [200, 200, 200]
    api.terminate()
    assert api.wait() == 0  # SIGTERM: a clean stop
    assert "never-logged" not in api.output.text()
    assert "second-token" not in api.output.text()


def test_metrics_count_requests_by_route_and_status(api: Api, client: httpx.Client) -> None:
    client.get("/v1/timers/1")
    client.get("/v1/timers/2")
    client.get("/nowhere")

    page = httpx.get(api.base_url + "/metrics", timeout=10).text

    assert re.search(
        r'timer_api_requests_total\{method="GET",route="/v1/timers/\{timer_id\}",status="404"\} 2',
        page,
    ), page
    assert 'route="<unmatched>",status="404"' in page
    assert 'timer_api_request_duration_seconds_bucket{le="0.05",method="GET"' in page


def test_an_unreachable_database_is_a_503_with_retry_after(
    db: TestDatabase, apis: StartApi
) -> None:
    with TcpProxy(db.url.host or "127.0.0.1", db.url.port or 3306) as proxy:
        api = apis(db.env(API_TOKENS=TOKEN, DB_HOST="127.0.0.1", DB_PORT=str(proxy.port)))
        api.wait_started()
        with api.client(TOKEN) as client:
            assert client.get("/v1/timers").status_code == 200
            proxy.cut()

            lost = client.get("/v1/timers")
            create = client.post("/v1/timers", json={"url": "http://example.com/", "delay": 1})
            not_ready = httpx.get(api.base_url + "/readyz", timeout=30)

            proxy.restore()
            back = wait_until(
                lambda: client.get("/v1/timers").status_code == 200,
                timeout_s=30,
                what="the api to reach the database again",
            )

    for response in (lost, create):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"].isdigit()
        assert response.headers["content-type"] == "application/problem+json"
        assert "database is unavailable" in response.json()["detail"]
    assert not_ready.status_code == 503
    assert back
    assert "Traceback" not in api.output.text()


# -- start-up ------------------------------------------------------------------------


def one_line_exit(proc: Api, timeout_s: float = 30) -> str:
    code = proc.wait(timeout_s)
    lines = [line for line in proc.output.lines if line.strip()]
    assert code == EXIT_USAGE, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_without_api_tokens_the_api_refuses_to_start(db: TestDatabase, apis: StartApi) -> None:
    line = one_line_exit(apis(db.env()))

    assert "API_TOKENS is required but not set" in line


def test_a_port_in_use_is_one_line_and_exit_2(db: TestDatabase, apis: StartApi) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        line = one_line_exit(apis(db.env(API_TOKENS=TOKEN, API_PORT=str(port))))

    assert f"API_PORT={port} is in use" in line
    assert TOKEN not in line


def test_a_bad_api_setting_is_one_line_and_exit_2(db: TestDatabase, apis: StartApi) -> None:
    line = one_line_exit(apis(db.env(API_TOKENS=f"{TOKEN} x", API_PORT="8080")))

    assert line.endswith("API_TOKENS is invalid: token 2 is shorter than 16 characters")
    assert "never-logged" not in line


def test_an_address_it_cannot_listen_on_is_one_line_and_exit_2(
    db: TestDatabase, apis: StartApi
) -> None:
    # TEST-NET-1 (RFC 5737): never an address of this machine; nothing is sent.
    line = one_line_exit(apis(db.env(API_TOKENS=TOKEN, API_HOST="192.0.2.1")))

    assert "cannot listen on 192.0.2.1:0" in line
