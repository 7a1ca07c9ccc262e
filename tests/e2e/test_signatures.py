"""Signed deliveries, checked by an independent implementation.

The receiver verifies every request with the ``standardwebhooks`` package
from PyPI (not the controller's own signing code); the tests re-verify the
recorded requests with it too, and tamper with them to prove a change fails.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import FAST_ENV as FAST
from tests.support.tasks import insert_task as insert
from tests.support.waiting import wait_until

Start = Callable[..., Controller]


def new_secret() -> str:
    """A Standard Webhooks secret as the spec issues them: whsec_ + base64 of 24 bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@contextmanager
def verifying_receiver(secret: str | None) -> Iterator[Receiver]:
    """A receiver recording headers and bodies, verifying with ``secret`` if given."""
    started = Receiver(*(["--secret", secret] if secret else []), "--full")
    try:
        yield started
    finally:
        started.stop()


def wait_done(db: TestDatabase, ids: list[int], *, failed: tuple[int, ...] = ()) -> None:
    """Until every task has finished: ``failed`` ones failed, the others done."""

    def statuses() -> dict[int, str]:
        with db.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, status FROM tasks WHERE id IN :ids").bindparams(ids=tuple(ids))
            ).all()
        return {row.id: row.status for row in rows}

    wait_until(
        lambda: all(s in ("done", "failed") for s in statuses().values()),
        timeout_s=30,
        what=f"tasks {ids} to finish",
    )
    assert statuses() == {i: "failed" if i in failed else "done" for i in ids}


def start(controllers: Start, db: TestDatabase, **env: str) -> Controller:
    proc = controllers(db.env(**{**FAST, **env}))
    proc.wait_started()
    return proc


def requests_to(
    receiver: Receiver, ids: list[int], *, twice: tuple[int, ...] = ()
) -> list[dict[str, Any]]:
    """The recorded requests for ``ids``: one each, two for those in ``twice``."""
    records = [r for r in receiver.records() if r["id"] is not None and int(r["id"]) in ids]
    assert sorted(int(r["id"]) for r in records) == sorted([*ids, *twice])
    return records


def test_every_real_request_verifies_with_standardwebhooks(
    db: TestDatabase, controllers: Start
) -> None:
    secret = new_secret()
    with verifying_receiver(secret) as receiver:
        proc = start(controllers, db, WEBHOOK_SECRET=secret)
        ids = [
            insert(db, receiver.url("/signed/default")),
            insert(db, receiver.url("/signed/put"), method="PUT", body="hello, signed world"),
            insert(db, receiver.url("/signed/get"), method="GET"),
            insert(db, receiver.url("/signed/json"), headers='{"X-Tenant": "t1"}'),
        ]
        # A retried task is signed again on every attempt.
        retried = insert(db, receiver.url("/status/503"), max_attempts="2")
        wait_done(db, [*ids, retried], failed=(retried,))
        records = requests_to(receiver, [*ids, retried], twice=(retried,))

    assert [r["verified"] for r in records] == [True] * len(records)
    for record in records:
        # One signature per configured secret.
        assert record["headers"]["webhook-signature"].count("v1,") == 1
        Webhook(secret).verify(record["body"], record["headers"], json_parse=False)
    assert secret.removeprefix("whsec_") not in proc.output.text()


def test_a_tampered_request_fails_verification(db: TestDatabase, controllers: Start) -> None:
    secret = new_secret()
    with verifying_receiver(secret) as receiver:
        start(controllers, db, WEBHOOK_SECRET=secret)
        task_id = insert(db, receiver.url("/signed"))
        wait_done(db, [task_id])
        (record,) = requests_to(receiver, [task_id])

    body, headers = record["body"], record["headers"]
    webhook = Webhook(secret)
    assert webhook.verify(body, headers) == json.loads(body)  # the untouched request is fine
    tampered_body = json.dumps({**json.loads(body), "id": task_id + 1})
    with pytest.raises(WebhookVerificationError):
        webhook.verify(tampered_body, headers)
    with pytest.raises(WebhookVerificationError):
        webhook.verify(body + " ", headers)
    with pytest.raises(WebhookVerificationError):
        webhook.verify(body, {**headers, "webhook-id": str(task_id + 1)})
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_rotation_signs_with_every_secret(db: TestDatabase, controllers: Start) -> None:
    old, new = new_secret(), new_secret()
    with verifying_receiver(new) as knows_new, verifying_receiver(old) as knows_old:
        start(controllers, db, WEBHOOK_SECRET=f"{old} {new}")
        to_new = insert(db, knows_new.url("/rotated"))
        to_old = insert(db, knows_old.url("/rotated"))
        wait_done(db, [to_new, to_old])
        (new_record,) = requests_to(knows_new, [to_new])
        (old_record,) = requests_to(knows_old, [to_old])

    assert new_record["verified"] is True
    assert old_record["verified"] is True
    for record in (new_record, old_record):
        assert record["headers"]["webhook-signature"].count("v1,") == 2
    # And a receiver that knows neither rejects it.
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(new_record["body"], new_record["headers"])


def test_the_secret_can_come_from_a_file(
    db: TestDatabase, controllers: Start, tmp_path: Path
) -> None:
    secret = new_secret()
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(secret + "\n", encoding="utf-8")  # as secret mounts usually end
    with verifying_receiver(secret) as receiver:
        start(controllers, db, WEBHOOK_SECRET_FILE=str(secret_file))
        task_id = insert(db, receiver.url("/signed/from-file"))
        wait_done(db, [task_id])
        (record,) = requests_to(receiver, [task_id])

    assert record["verified"] is True


def test_without_a_secret_there_is_no_signature_header(
    db: TestDatabase, controllers: Start
) -> None:
    with verifying_receiver(None) as receiver:
        start(controllers, db)
        task_id = insert(db, receiver.url("/unsigned"))
        wait_done(db, [task_id])
        (record,) = requests_to(receiver, [task_id])

    headers = record["headers"]
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == str(task_id)
    assert headers["webhook-timestamp"].isdigit()
