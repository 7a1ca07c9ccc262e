"""Request validation: what the controller would refuse is a 422 at creation, by its own rules.

Every request here is refused before the store is asked, so the app runs
over a store whose engine was never connected (no I/O).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from timer_controller.api.app import create_app
from timer_controller.api.middleware import MAX_REQUEST_BYTES
from timer_controller.api.models import TimerSpec
from timer_controller.api.problems import PROBLEM_JSON
from timer_controller.api.validation import InvalidTimer, TimerRules, check_timer, url_problem
from timer_controller.db.timers import TimerStore
from timer_controller.delivery.policy import TargetPolicy, check_url
from timer_controller.domain.task import MAX_URL_CHARS

TOKEN = "unit-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 12, 1, 10, 0, 0)
RULES = TimerRules(max_body_bytes=100, max_horizon_s=86400.0)
BLOCKING = TimerRules(policy=TargetPolicy(block_private_networks=True))


@pytest.fixture
def client() -> Iterator[TestClient]:
    # Never connected: an accidental database call would fail the test with a 503.
    store = TimerStore(create_engine("mysql+mysqldb://nobody@127.0.0.1:9/none"))
    app = create_app(store=store, tokens=[TOKEN, "second-token-abcdefghij"], rules=RULES)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def problems_of(spec: dict[str, Any], rules: TimerRules = RULES) -> dict[str, str]:
    with pytest.raises(InvalidTimer) as caught:
        check_timer(TimerSpec.model_validate(spec), rules=rules, now=NOW)
    return {item.field or "": item.detail for item in caught.value.items}


OK = {"url": "https://example.com/hook", "delay": 5}


def test_a_valid_timer_becomes_the_row_the_controller_reads() -> None:
    spec = TimerSpec.model_validate(
        {**OK, "method": "put", "headers": {"X-Trace": "1"}, "body": "hi", "max_attempts": 2}
    )

    timer = check_timer(spec, rules=RULES, now=NOW, idempotency_key="k")

    assert (timer.url, timer.delay_s, timer.due_at) == ("https://example.com/hook", 5.0, None)
    assert (timer.method, timer.headers, timer.body) == ("PUT", '{"X-Trace":"1"}', "hi")
    assert (timer.max_attempts, timer.idempotency_key) == (2, "k")
    assert timer.idempotency_hash is not None


def test_no_method_stays_null_as_a_plain_insert_would() -> None:
    assert check_timer(TimerSpec.model_validate(OK), rules=RULES, now=NOW).method is None


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"url": ""}, "url", "empty URL"),
        ({"url": "ftp://example.com/"}, "url", "unsupported scheme 'ftp'"),
        ({"url": "example.com/hook"}, "url", "malformed URL"),
        ({"url": "http://"}, "url", "no host"),
        ({"url": "https://127.1/"}, "url", "non-canonical IPv4"),
        ({"url": "https://example.com/" + "a" * MAX_URL_CHARS}, "url", "longer than 2048"),
        ({"method": "TRACE"}, "method", "method 'TRACE' is not allowed"),
        ({"method": "GET", "body": "x"}, "body", "a GET request cannot carry a body"),
        ({"body": "x" * 101}, "body", "more than MAX_REQUEST_BODY (100)"),
        ({"headers": {"X-A": "a\r\nInjected: 1"}}, "headers", "line break or NUL"),
        ({"headers": {"Bad Name": "v"}}, "headers", "not a valid HTTP header name"),
        ({"headers": {"X-A": "café"}}, "headers", "must be ASCII"),
        ({"headers": {"Webhook-Signature": "v1,forged"}}, "headers", "set by the controller"),
        ({"headers": {"Host": "evil.example"}}, "headers", "set by the controller"),
        ({"delay": "2d"}, "delay", "beyond the maximum of 1 days"),
        ({"delay": "soon"}, "delay", "is not a duration"),
    ],
)
def test_what_the_controller_would_refuse_is_refused(
    change: dict[str, Any], field: str, reason: str
) -> None:
    assert reason in problems_of({**OK, **change})[field]


def test_every_problem_is_reported_at_once() -> None:
    found = problems_of({"url": "ftp://x", "method": "TRACE", "delay": "soon"})

    assert set(found) == {"url", "method", "delay"}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.1.2.3:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:192.168.0.1]/",
    ],
)
def test_with_private_networks_blocked_a_literal_private_ip_is_refused(url: str) -> None:
    assert problems_of({**OK, "url": url}, BLOCKING)["url"] == "blocked destination"
    check_timer(TimerSpec.model_validate({**OK, "url": url}), rules=RULES, now=NOW)


def test_with_private_networks_blocked_a_name_is_left_to_send_time() -> None:
    spec = TimerSpec.model_validate({**OK, "url": "http://localhost/"})

    assert check_timer(spec, rules=BLOCKING, now=NOW).url == "http://localhost/"


def test_allowed_hosts_apply_at_creation() -> None:
    rules = TimerRules(policy=TargetPolicy(allowed_hosts=("api.example.com",)))

    assert problems_of({**OK, "url": "https://other.example/"}, rules)["url"] == (
        "host not in ALLOWED_HOSTS"
    )


# -- through the app: problem+json for every refusal ------------------------------


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"url": "https://example.com/"}, None, "exactly one of at"),
        ({"url": "https://example.com/", "delay": 1, "at": "2026-12-01T10:00:00Z"}, None, "one"),
        ({"delay": 1}, "url", "Field required"),
        ({**OK, "dealy": 5}, "dealy", "Extra inputs are not permitted"),
        ({**OK, "delay": -1}, "delay", "delay must be a number of seconds >= 0"),
        ({**OK, "delay": True}, "delay", "delay must be a number of seconds >= 0"),
        ({**OK, "delay": [1]}, "delay", "delay must be a number of seconds >= 0"),
        ({**OK, "max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
        ({**OK, "max_attempts": 1001}, "max_attempts", "less than or equal to 1000"),
        ({**OK, "headers": {"X-A": 1}}, "headers.X-A", "valid string"),
        ({**OK, "url": "ftp://example.com/"}, "url", "unsupported scheme"),
        ({"url": "https://example.com/", "at": "2026-12-01T10:00:00"}, "at", "with an offset"),
    ],
)
def test_a_bad_create_is_a_422_problem_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str | None, reason: str
) -> None:
    problem = assert_problem(client.post("/v1/timers", json=body, headers=AUTH), 422)

    items = problem["errors"]
    assert reason in problem["detail"]
    if field is not None:
        assert any(item.get("field") == field for item in items), items


def test_not_json_is_a_422_problem(client: TestClient) -> None:
    response = client.post(
        "/v1/timers", content=b"{nope", headers={**AUTH, "Content-Type": "application/json"}
    )

    assert assert_problem(response, 422)["detail"] == "the body is not valid JSON"


def test_a_header_value_is_never_echoed_in_a_problem(client: TestClient) -> None:
    body = {**OK, "headers": {"Authorization": "Bearer sup3r-s3cret\n"}}

    response = client.post("/v1/timers", json=body, headers=AUTH)

    assert_problem(response, 422)
    assert "sup3r" not in response.text


@pytest.mark.parametrize("header", ['"unterminated', "two words", '""', "x" * 300])
def test_a_malformed_idempotency_key_is_a_400(client: TestClient, header: str) -> None:
    response = client.post("/v1/timers", json=OK, headers={**AUTH, "Idempotency-Key": header})

    assert "Idempotency-Key" in assert_problem(response, 400)["detail"] or "key" in response.text


def test_a_bad_batch_names_each_bad_index(client: TestClient) -> None:
    timers = [OK, {**OK, "url": "ftp://x"}, OK, {**OK, "delay": "soon"}]

    problem = assert_problem(
        client.post("/v1/timers/batch", json={"timers": timers}, headers=AUTH), 422
    )

    assert {item["index"] for item in problem["errors"]} == {1, 3}
    assert {item["field"] for item in problem["errors"]} == {"timers.1.url", "timers.3.delay"}


def test_a_key_twice_in_one_batch_is_refused(client: TestClient) -> None:
    timers = [{**OK, "idempotency_key": "k"}, {**OK, "idempotency_key": "k"}]

    problem = assert_problem(
        client.post("/v1/timers/batch", json={"timers": timers}, headers=AUTH), 422
    )

    assert [item["index"] for item in problem["errors"]] == [1]


@pytest.mark.parametrize("count", [0, 1001])
def test_a_batch_holds_1_to_1000_timers(client: TestClient, count: int) -> None:
    response = client.post("/v1/timers/batch", json={"timers": [OK] * count}, headers=AUTH)

    assert_problem(response, 422)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/timers/0", "timer_id"),
        ("/v1/timers/abc", "timer_id"),
        ("/v1/timers/9223372036854775808", "timer_id"),
        ("/v1/timers?limit=0", "limit"),
        ("/v1/timers?limit=1001", "limit"),
        ("/v1/timers?status=sleeping", "status"),
        ("/v1/timers?after=-1", "after"),
        ("/v1/timers?after=12345678901234567890", "after"),
    ],
)
def test_bad_paths_and_queries_are_422_problems(client: TestClient, path: str, field: str) -> None:
    problem = assert_problem(client.get(path, headers=AUTH), 422)

    assert [item["field"] for item in problem["errors"]] == [field]


def test_a_reschedule_beyond_the_horizon_is_a_422(client: TestClient) -> None:
    response = client.patch("/v1/timers/1", json={"delay": "3d"}, headers=AUTH)

    assert "beyond the maximum" in assert_problem(response, 422)["detail"]


def test_a_body_over_the_request_limit_is_a_413_before_it_is_read(client: TestClient) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}

    response = client.post("/v1/timers", content=b" " * (MAX_REQUEST_BYTES + 1), headers=headers)

    assert_problem(response, 413)


def test_a_chunked_body_over_the_limit_is_a_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(17):
            yield b" " * (1024 * 1024)

    headers = {**AUTH, "Content-Type": "application/json"}
    response = client.post("/v1/timers", content=chunks(), headers=headers)

    assert_problem(response, 413)


# -- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, 'Bearer realm="timer-controller"'),
        ({"Authorization": f"Basic {TOKEN}"}, 'Bearer realm="timer-controller"'),
        ({"Authorization": "Bearer"}, 'Bearer realm="timer-controller"'),
        (
            {"Authorization": "Bearer wrong-token-0123456789"},
            'Bearer realm="timer-controller", error="invalid_token"',
        ),
        (
            {"Authorization": f"Bearer {TOKEN}x"},
            'Bearer realm="timer-controller", error="invalid_token"',
        ),
        (
            {"Authorization": f"Bearer {TOKEN[:-1]}"},
            'Bearer realm="timer-controller", error="invalid_token"',
        ),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/timers"),
        ("GET", "/v1/timers/1"),
        ("POST", "/v1/timers"),
        ("POST", "/v1/timers/batch"),
        ("PATCH", "/v1/timers/1"),
        ("DELETE", "/v1/timers/1"),
    ],
)
def test_every_v1_request_needs_a_known_token(
    client: TestClient, headers: dict[str, str], challenge: str, method: str, path: str
) -> None:
    response = client.request(method, path, headers=headers, json=OK)

    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == challenge


def test_the_scheme_is_case_insensitive_and_any_listed_token_works(client: TestClient) -> None:
    for auth in (f"bearer {TOKEN}", "Bearer second-token-abcdefghij"):
        response = client.get("/v1/timers/0", headers={"Authorization": auth})
        assert response.status_code == 422  # past authentication, refused by validation


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/docs", "/openapi.json"])
def test_operations_pages_need_no_token(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/v2/timers", headers=AUTH), 404)
    response = client.put("/v1/timers/1", headers=AUTH, json=OK)
    assert_problem(response, 405)
    assert response.headers["allow"]


# -- docs work offline -------------------------------------------------------------


def test_the_docs_page_loads_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/docs").text

    assert "http://" not in page
    assert "https://" not in page
    assert '"validatorUrl": null' in page  # no badge fetched from validator.swagger.io
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        assert asset in page
        response = client.get(asset)
        assert response.status_code == 200
        assert len(response.content) > 10_000


def test_the_schema_documents_problems_as_problem_json(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    create = schema["paths"]["/v1/timers"]["post"]["responses"]
    assert set(create) >= {"200", "201", "400", "401", "413", "422", "503"}
    for code in ("400", "401", "422", "503"):
        assert list(create[code]["content"]) == [PROBLEM_JSON]
    assert list(create["201"]["content"]) == ["application/json"]
    assert "Location" in create["201"]["headers"]
    assert "Retry-After" in create["503"]["headers"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


@pytest.mark.parametrize("key", [None, '"k-surrogate"'])
@pytest.mark.parametrize(
    "field", ['"body": "\\ud800"', '"headers": {"X-A": "\\udfff"}', '"url": "http://a/\\ud83d"']
)
def test_an_unpaired_surrogate_is_a_422_not_a_database_error(
    client: TestClient, field: str, key: str | None
) -> None:
    body = f'{{"delay": 1, "url": "https://example.com/", {field}}}'.replace(
        '"url": "https://example.com/", "url"', '"url"'
    )
    headers = {**AUTH, "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key

    response = client.post("/v1/timers", content=body.encode(), headers=headers)

    assert "surrogate" in assert_problem(response, 422)["detail"]


@pytest.mark.parametrize("query", ["stauts=failed", "=0", "limit=5&x=1"])
def test_an_unknown_query_parameter_is_refused_not_ignored(client: TestClient, query: str) -> None:
    answer = client.get(f"/v1/timers?{query}", headers=AUTH)

    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    assert "unknown query parameter" in answer.json()["detail"]
    assert "this route takes: after, idempotency_key, limit, status" in answer.json()["detail"]


def test_a_route_without_query_parameters_refuses_any(client: TestClient) -> None:
    answer = client.get("/v1/timers/1?verbose=1", headers=AUTH)

    assert answer.status_code == 422, answer.text
    assert "this route takes: none" in answer.json()["detail"]


_URL_PART = st.text(alphabet=st.sampled_from("aZ09.-_~/:@[]%?#! \t\\é"), max_size=12)


@given(
    scheme=st.sampled_from(["http", "https", "ftp", "HTTP", "h tp", ""]),
    authority=st.one_of(
        st.sampled_from(["x", "127.0.0.1", "10.0.0.1:80", "[::1]", "a:99999", "", "0x7f.1"]),
        _URL_PART,
    ),
    path=_URL_PART,
    blocked=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_remembering_a_urls_verdict_by_authority_changes_no_verdict(
    scheme: str, authority: str, path: str, blocked: bool
) -> None:
    policy = TargetPolicy(block_private_networks=blocked)
    for url in (f"{scheme}://{authority}/{path}", f"{scheme}://{authority}{path}"):
        assert url_problem(url, policy) == check_url(url, policy)
