"""The dashboard's timer list against the real database: filters and keyset pages."""

from __future__ import annotations

from tests.support.databases import TestDatabase
from tests.support.tasks import insert_task
from timer_controller.db.browse import TimerBrowser, TimerFilter


def test_a_url_prefix_matches_literally_and_pages_follow_ids(db: TestDatabase) -> None:
    wanted = [insert_task(db, f"http://h/a_b%/{i}", in_s=60) for i in range(5)]
    insert_task(db, "http://h/aXb%/0", in_s=60)  # "_" is not a wildcard here
    insert_task(db, "http://h/a_bX/0", in_s=60)  # nor "%"
    browser = TimerBrowser(db.engine)
    where = TimerFilter(url_prefix="http://h/a_b%/")

    first = browser.page(where, after_id=None, limit=2)
    second = browser.page(where, after_id=first.next_after_id, limit=2)
    third = browser.page(where, after_id=second.next_after_id, limit=2)

    assert [t.id for t in first.timers + second.timers + third.timers] == wanted
    assert third.next_after_id is None


def test_filters_combine(db: TestDatabase) -> None:
    one = insert_task(db, "http://h/x", in_s=60)
    insert_task(db, "http://h/x", in_s=60)
    browser = TimerBrowser(db.engine)
    assert [
        t.id for t in browser.page(TimerFilter(timer_id=one), after_id=None, limit=50).timers
    ] == [one]
    empty = browser.page(TimerFilter(timer_id=one, status="done"), after_id=None, limit=50)
    assert empty.timers == []
    claim = browser.claim(one)
    assert claim is not None
    assert (claim.owner, claim.lease_expires_at) == (None, None)
    assert browser.claim(10**12) is None
