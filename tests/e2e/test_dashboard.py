"""The dashboard in a real browser, against a real api, a real controller and a receiver.

One database, api, controller, receiver and browser serve the whole module
(starting them per test would triple its time); each test makes its own
timers, with URLs unique to it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import text
from sqlalchemy.engine import URL

from tests.support.browser import SCREENSHOTS, chromium
from tests.support.databases import TestDatabase, fresh_database
from tests.support.processes import Api, Controller, Receiver
from tests.support.tasks import FAST_ENV
from tests.support.waiting import wait_until

TOKEN = "dash-" + secrets.token_hex(16)
FIRE_S = 20  # generous: the machine is shared


class Stack:
    def __init__(self, db: TestDatabase, api: Api, receiver: Receiver) -> None:
        self.db = db
        self.api = api
        self.receiver = receiver
        self.http = httpx.Client(
            base_url=api.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20
        )

    def create(self, *, delay: str, path: str | None = None, **extra: Any) -> dict[str, Any]:
        url = self.receiver.url(path or f"/ok/{uuid.uuid4().hex}")
        answer = self.http.post("/v1/timers", json={"url": url, "delay": delay}, **extra)
        assert answer.status_code == 201, answer.text
        timer: dict[str, Any] = answer.json()
        return timer

    def row(self, timer_id: int) -> Any:
        with self.db.engine.connect() as conn:
            return conn.execute(text("SELECT * FROM tasks WHERE id = :id"), {"id": timer_id}).one()

    def deliveries(self, timer_id: int) -> int:
        return sum(1 for r in self.receiver.records() if r.get("id") == str(timer_id))

    def wait_status(self, timer_id: int, status: str) -> Any:
        return wait_until(
            lambda: (row := self.row(timer_id)).status == status and row,
            timeout_s=FIRE_S,
            what=f"timer {timer_id} to be {status}",
        )


@pytest.fixture(scope="module")
def stack(db_server: URL) -> Iterator[Stack]:
    with fresh_database(db_server) as db:
        receiver = Receiver()
        controller = Controller(db.env(**FAST_ENV))
        api = Api(db.env(API_TOKENS=TOKEN))
        try:
            controller.wait_started()
            api.wait_started(timeout_s=60)
            yield Stack(db, api, receiver)
        finally:
            api.stop()
            controller.stop()
            receiver.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as started:
        yield started


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(
        base_url=stack.api.base_url, viewport={"width": 1280, "height": 900}
    )
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Page, token: str = TOKEN) -> None:
    page.goto("/ui")
    page.wait_for_url("**/ui/login**")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()


# -- logging in ------------------------------------------------------------------


def test_a_wrong_token_is_refused_and_the_right_one_logs_in_and_out(
    page: Page, stack: Stack
) -> None:
    page.goto("/")
    assert "/ui/login" in page.url  # / → /ui → the login form
    page.get_by_label("API token").fill("not-" + TOKEN)
    with page.expect_response(lambda r: r.url.endswith("/ui/login")) as answer:
        page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    assert not [c for c in page.context.cookies() if c["name"] == "tc_session"]

    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "tc_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"]

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_contain_text("logged out")
    page.goto("/ui/timers")
    assert "/ui/login" in page.url
    log = stack.api.output.text()
    assert "refused a login with a wrong token" in log
    assert TOKEN not in log


# -- the list and one timer --------------------------------------------------------


def test_a_timer_created_over_the_api_is_in_the_list_and_has_a_detail_page(
    page: Page, stack: Stack
) -> None:
    key = f"dash-{uuid.uuid4().hex}"
    timer = stack.create(delay="1h", path=f"/ok/list-{key}", headers={"Idempotency-Key": key})
    log_in(page)

    page.get_by_role("link", name="Timers").click()
    page.get_by_label("Idempotency key").fill(key)
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"#{timer['id']}")
    expect(rows.first).to_contain_text("waiting")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "timers.png"), full_page=True)

    # The same timer by its URL's prefix, and by its id.
    page.goto("/ui/timers?" + urlencode({"url_prefix": stack.receiver.url(f"/ok/list-{key}")}))
    expect(page.locator(f"tr[data-timer-id='{timer['id']}']")).to_have_count(1)
    expect(page.locator("tbody tr")).to_have_count(1)
    page.goto(f"/ui/timers?id={timer['id']}")
    expect(page.locator("tbody tr")).to_have_count(1)

    page.get_by_role("link", name=f"#{timer['id']}").click()
    expect(page.get_by_role("heading", name=f"Timer #{timer['id']}")).to_be_visible()
    fields = page.locator("dl.fields")
    expect(fields).to_contain_text(timer["url"])
    expect(fields).to_contain_text(key)
    expect(fields).to_contain_text("time left")
    expect(page.locator("ol.history")).to_contain_text("created")
    expect(page.get_by_role("button", name="Cancel this timer")).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "detail.png"), full_page=True)


def test_pages_through_the_list_by_keyset(page: Page, stack: Stack) -> None:
    prefix = f"/ok/pages-{uuid.uuid4().hex}"
    ids = [stack.create(delay="1h", path=f"{prefix}/{i}")["id"] for i in range(3)]
    log_in(page)
    page.goto("/ui/timers?" + urlencode({"url_prefix": stack.receiver.url(prefix), "limit": 25}))
    expect(page.locator("tbody tr")).to_have_count(3)
    # 25 is the smallest page; the cursor is the last id shown, as in the api.
    page.goto(
        "/ui/timers?"
        + urlencode({"url_prefix": stack.receiver.url(prefix), "after": ids[0], "limit": 25})
    )
    shown = page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.timerId)")
    assert shown == [str(i) for i in ids[1:]]


# -- the two buttons -----------------------------------------------------------------


def _tab_to(page: Page, name: str, *, presses: int = 60) -> None:
    """Move the keyboard focus to the button called ``name``, as a keyboard user would."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == name:
            return
    raise AssertionError(f"{name!r} cannot be reached with the Tab key")


def test_cancel_with_the_button_and_it_never_fires(page: Page, stack: Stack) -> None:
    # Due in an hour while the browser works, so the button never races the controller.
    doomed = stack.create(delay="1h")
    log_in(page)
    page.goto(f"/ui/timers/{doomed['id']}")
    _tab_to(page, "Cancel this timer")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Cancelled")
    expect(page.locator("[data-status]")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel this timer")).to_have_count(0)
    assert stack.row(doomed["id"]).status == "cancelled"

    # Now make it long due, as a cancelled timer whose time has come, and let a
    # witness due after it fire: the controller has passed it and left it alone.
    with stack.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET due_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND WHERE id = :id"),
            {"id": doomed["id"]},
        )
    witness = stack.create(delay="0s")
    stack.wait_status(witness["id"], "done")
    assert stack.deliveries(witness["id"]) == 1
    assert stack.deliveries(doomed["id"]) == 0
    row = stack.row(doomed["id"])
    assert (row.status, row.attempts, row.fired_at) == ("cancelled", 0, None)


def test_reschedule_with_the_form_and_it_fires_at_the_new_time(page: Page, stack: Stack) -> None:
    timer = stack.create(delay="1h")
    log_in(page)
    page.goto(f"/ui/timers/{timer['id']}")
    page.get_by_label("Fire in").fill("2s")
    page.get_by_role("button", name="Reschedule").click()
    expect(page.get_by_role("status")).to_contain_text("Rescheduled")
    moved = stack.row(timer["id"])
    assert (moved.due_at - moved.created_at).total_seconds() < 60  # not an hour any more

    done = stack.wait_status(timer["id"], "done")
    assert done.fired_at >= moved.due_at
    assert stack.deliveries(timer["id"]) == 1

    # A typo is a message on the page, and changes nothing.
    other = stack.create(delay="1h")
    due_before = stack.row(other["id"]).due_at
    page.goto(f"/ui/timers/{other['id']}")
    page.get_by_label("Fire in").fill("soon")
    page.get_by_role("button", name="Reschedule").click()
    expect(page.get_by_role("alert")).to_contain_text("Delay")
    unchanged = stack.row(other["id"])
    assert (unchanged.status, unchanged.due_at) == ("waiting", due_before)


def test_a_form_without_its_csrf_token_is_refused(page: Page, stack: Stack) -> None:
    timer = stack.create(delay="1h")
    log_in(page)
    page.goto(f"/ui/timers/{timer['id']}")
    cancel = page.locator(f"form[action='/ui/timers/{timer['id']}/cancel']")
    cancel.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    with page.expect_response(lambda r: r.url.endswith("/cancel")) as answer:
        page.get_by_role("button", name="Cancel this timer").click()
    assert answer.value.status == 403
    expect(page.get_by_role("alert")).to_contain_text("CSRF")
    assert stack.row(timer["id"]).status == "waiting"

    # A token from another session is no better.
    page.goto(f"/ui/timers/{timer['id']}")
    cancel.locator("input[name=csrf_token]").evaluate(
        "input => { const v = input.value;"
        " input.value = v.slice(0, -1) + (v.endsWith('0') ? '1' : '0') }"
    )
    page.get_by_role("button", name="Cancel this timer").click()
    expect(page.get_by_role("alert")).to_contain_text("CSRF")
    assert stack.row(timer["id"]).status == "waiting"


# -- the overview ----------------------------------------------------------------------


def _database_numbers(stack: Stack) -> dict[str, int]:
    with stack.db.engine.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "SELECT 'waiting', COUNT(*) FROM tasks WHERE status = 'waiting' UNION ALL "
                    "SELECT 'claimed', COUNT(*) FROM tasks WHERE status = 'claimed' UNION ALL "
                    "SELECT status, COUNT(*) FROM tasks WHERE status IN ('done', 'failed', "
                    "'cancelled') AND finished_at >= UTC_TIMESTAMP(6) - INTERVAL 1 HOUR "
                    "GROUP BY status UNION ALL "
                    "SELECT 'backlog', COUNT(*) FROM tasks WHERE status = 'waiting' "
                    "AND due_at <= UTC_TIMESTAMP(6) UNION ALL "
                    "SELECT 'fired', COUNT(*) FROM tasks "
                    "WHERE fired_at >= UTC_TIMESTAMP(6) - INTERVAL 1 HOUR"
                )
            ).all()
        )


def _shown_numbers(page: Page) -> dict[str, int]:
    pairs = page.locator("[data-count]").evaluate_all(
        "nodes => nodes.map(n => [n.dataset.count, n.textContent.trim()])"
    )
    return {name: int(value) for name, value in pairs}


def test_the_overview_matches_the_database_after_a_burst(page: Page, stack: Stack) -> None:
    log_in(page)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    burst = [{"url": stack.receiver.url(f"/ok/burst-{i}"), "delay": 0} for i in range(80)] + [
        {"url": stack.receiver.url("/status/410"), "delay": 0} for _ in range(5)
    ]
    answer = stack.http.post("/v1/timers/batch", json={"timers": burst})
    assert answer.status_code == 201, answer.text
    ids = [t["id"] for t in answer.json()["timers"]]
    wait_until(
        lambda: all(stack.row(i).status in ("done", "failed") for i in ids),
        timeout_s=60,
        what="the burst to finish",
    )
    # The panel refreshes by itself: no reload, the numbers catch up.
    expected = _database_numbers(stack)
    wait_until(
        lambda: {k: v for k, v in _shown_numbers(page).items() if k in expected} == expected,
        timeout_s=30,
        what=f"the overview to show {expected}",
    )
    assert page.evaluate("window.notReloaded") is True
    shown = _shown_numbers(page)
    assert shown["done"] >= 80
    assert shown["failed"] >= 5
    assert shown["failed-hour"] == expected["failed"]
    assert shown["first-attempts"] >= 85
    expect(page.locator("svg.chart rect.bar").first).to_be_visible()

    # A refresh keeps what the operator opened and where the keyboard was.
    page.locator("#histogram-numbers-summary").click()
    page.get_by_role("link", name="Recent failures").focus()
    stamp = page.locator(".stamp time").inner_text()
    wait_until(
        lambda: page.locator(".stamp time").inner_text() != stamp,
        timeout_s=30,
        what="the next refresh",
    )
    assert page.locator("#histogram-numbers").evaluate("details => details.open") is True
    assert page.evaluate("document.activeElement.textContent") == "Recent failures"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)

    page.get_by_role("link", name="Recent failures").click()
    first = page.locator("tbody tr").first
    expect(first).to_contain_text("410")
    page.screenshot(path=str(SCREENSHOTS / "failures.png"), full_page=True)


def test_every_page_fits_a_phone_screen(browser: Browser, stack: Stack) -> None:
    timer = stack.create(delay="1h")
    context = browser.new_context(
        base_url=stack.api.base_url, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    try:
        phone = context.new_page()
        log_in(phone)
        for path in ("/ui", "/ui/timers", f"/ui/timers/{timer['id']}", "/ui/failures"):
            phone.goto(path)
            overflow = phone.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} is {overflow}px wider than the phone"
        phone.goto("/ui")
        phone.screenshot(path=str(SCREENSHOTS / "overview-phone.png"), full_page=True)
    finally:
        context.close()
