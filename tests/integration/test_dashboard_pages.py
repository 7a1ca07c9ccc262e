"""The dashboard's pages and forms in-process (TestClient) against the real database.

The browser tests (tests/e2e/test_dashboard.py) drive the same pages through
chromium; these check the HTTP contract underneath: redirects, cookies,
status codes, CSRF refusals, headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.support.databases import TestDatabase
from tests.support.tasks import insert_task
from tests.support.tcp_proxy import TcpProxy
from timer_controller.api.app import create_app
from timer_controller.api.ui.mount import ui_router
from timer_controller.db.setup import make_engine
from timer_controller.db.timers import TimerStore

TOKEN = "page-test-token-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def client(db: TestDatabase) -> Iterator[TestClient]:
    app = create_app(store=TimerStore(db.engine), tokens=[TOKEN])
    app.include_router(ui_router(app, engine=db.engine, tokens=[TOKEN]))
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


def log_in(client: TestClient, token: str = TOKEN) -> str:
    """Log in through the form; the CSRF token of the page it lands on."""
    form = client.get("/ui/login")
    login_csrf = CSRF.search(form.text)
    assert login_csrf is not None
    answer = client.post(
        "/ui/login", data={"token": token, "csrf_token": login_csrf.group(1), "next": "/ui"}
    )
    assert answer.status_code == 200, answer.text  # followed the 303 to the overview
    found = CSRF.search(answer.text)
    assert found is not None
    return found.group(1)


def status_of(db: TestDatabase, task_id: int) -> str:
    with db.engine.connect() as conn:
        return str(
            conn.execute(text("SELECT status FROM tasks WHERE id = :id"), {"id": task_id}).scalar()
        )


def test_root_and_every_page_send_a_stranger_to_the_login_form(client: TestClient) -> None:
    for path in ("/", "/ui", "/ui/timers", "/ui/timers/1", "/ui/failures"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        location = answer.headers["location"]
        assert location.startswith("/ui") if path == "/" else location.startswith("/ui/login")
    assert client.get("/ui/overview/panel").status_code == 401


def test_the_session_cookie_is_httponly_strict_and_the_login_rotates_it(
    client: TestClient,
) -> None:
    form = client.get("/ui/login")
    login_csrf = CSRF.search(form.text)
    assert login_csrf is not None
    answer = client.post(
        "/ui/login",
        data={"token": TOKEN, "csrf_token": login_csrf.group(1), "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui"  # never another site
    cookie = next(v for k, v in answer.headers.multi_items() if v.startswith("tc_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/ui" in cookie


def test_a_wrong_token_or_a_login_without_its_csrf_token_is_refused(client: TestClient) -> None:
    form = client.get("/ui/login")
    login_csrf = CSRF.search(form.text)
    assert login_csrf is not None
    wrong = client.post("/ui/login", data={"token": "nope", "csrf_token": login_csrf.group(1)})
    assert wrong.status_code == 401
    assert "not accepted" in wrong.text
    assert "tc_session" not in client.cookies
    forged = client.post("/ui/login", data={"token": TOKEN, "csrf_token": "forged"})
    assert forged.status_code == 403
    assert "tc_session" not in client.cookies


def test_cancel_needs_the_sessions_csrf_token(client: TestClient, db: TestDatabase) -> None:
    task_id = insert_task(db, "http://127.0.0.1:9/x", in_s=3600)
    csrf = log_in(client)
    for data in ({}, {"csrf_token": ""}, {"csrf_token": csrf[:-2] + "00"}):
        refused = client.post(f"/ui/timers/{task_id}/cancel", data=data)
        assert refused.status_code == 403, data
        assert status_of(db, task_id) == "waiting"
    done = client.post(f"/ui/timers/{task_id}/cancel", data={"csrf_token": csrf})
    assert done.status_code == 200
    assert "Cancelled" in done.text
    assert status_of(db, task_id) == "cancelled"
    again = client.post(f"/ui/timers/{task_id}/cancel", data={"csrf_token": csrf})
    assert "no longer waiting" in again.text


def test_reschedule_reads_a_delay_or_a_utc_time_and_refuses_nonsense(
    client: TestClient, db: TestDatabase
) -> None:
    task_id = insert_task(db, "http://127.0.0.1:9/x", in_s=3600)
    csrf = log_in(client)
    moved = client.post(
        f"/ui/timers/{task_id}/reschedule", data={"csrf_token": csrf, "at": "2027-01-02T03:04"}
    )
    assert "Rescheduled" in moved.text
    with db.engine.connect() as conn:
        due = conn.execute(text("SELECT due_at FROM tasks WHERE id = :id"), {"id": task_id})
        assert str(due.scalar()) == "2027-01-02 03:04:00"
    nonsense = [
        {"delay": "soon"},
        {},
        {"delay": "5m", "at": "2027-01-01T00:00"},
        {"delay": "9999d"},
    ]
    for data in nonsense:
        refused = client.post(f"/ui/timers/{task_id}/reschedule", data={"csrf_token": csrf, **data})
        assert refused.status_code == 422, data
        assert 'role="alert"' in refused.text


def test_pages_escape_what_rows_contain_and_carry_a_strict_policy(
    client: TestClient, db: TestDatabase
) -> None:
    task_id = insert_task(db, "http://127.0.0.1:9/<script>alert(1)</script>", in_s=3600)
    log_in(client)
    for path in (f"/ui/timers/{task_id}", "/ui/timers"):
        page = client.get(path)
        assert page.status_code == 200
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"


def test_logout_ends_the_session(client: TestClient) -> None:
    csrf = log_in(client)
    out = client.post("/ui/logout", data={"csrf_token": csrf})
    assert out.status_code == 200
    assert "logged out" in out.text
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_a_missing_timer_is_a_404_page(client: TestClient) -> None:
    log_in(client)
    assert client.get("/ui/timers/999999999").status_code == 404


def test_a_lost_database_is_a_503_page_and_the_dashboard_recovers(db: TestDatabase) -> None:
    with TcpProxy(db.url.host or "127.0.0.1", db.url.port or 3306) as proxy:
        engine = make_engine(db.url.set(port=proxy.port), pool_size=2)
        try:
            app = create_app(store=TimerStore(engine), tokens=[TOKEN])
            app.include_router(ui_router(app, engine=engine, tokens=[TOKEN]))
            with TestClient(app) as client:
                log_in(client)
                proxy.cut()
                for path in ("/ui", "/ui/overview/panel", "/ui/timers", "/ui/failures"):
                    down = client.get(path)
                    assert down.status_code == 503, path
                    assert down.headers["retry-after"].isdigit()
                    assert "unreachable" in down.text
                proxy.restore()
                assert client.get("/ui").status_code == 200
        finally:
            engine.dispose()
