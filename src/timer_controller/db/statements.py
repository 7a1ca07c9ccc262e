"""Every SQL statement the project runs, built here: pure, no connection.

The repository and the set-up only execute what these functions return.
The hot statements read the ``(status, due_at)`` index by a status prefix;
"now" is always the database's ``UTC_TIMESTAMP(6)``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Delete,
    Insert,
    Select,
    TextClause,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)

from timer_controller.db.models import ERROR_MAX_CHARS, INT_MAX, Task
from timer_controller.domain.task import FINISHED_STATUSES, Status, Transition

# Named locks are server-wide: the database's name (hashed, as lock names
# are capped at 64 characters) keeps databases on one server apart.
RETENTION_LOCK = "CONCAT('timer_controller.retention.', MD5(DATABASE()))"
MIGRATION_LOCK = "CONCAT('timer_controller.migrate.', MD5(DATABASE()))"
# A lease that expires means its pod vanished mid-delivery. Such tasks go back
# to waiting; one that keeps losing its pods this many times beyond its
# attempts is taken to be what kills them, and fails instead of looping.
LEASE_LOSSES_BEFORE_FAILING = 3
UNSENT_LEASE_LOST = "lease expired before the due time: never sent; the attempt is not spent"

_CLAIMED = Status.CLAIMED.value
_WAITING = Status.WAITING.value
_FINISHED = [s.value for s in FINISHED_STATUSES]


def utc_now_sql() -> ColumnElement[datetime]:
    return func.utc_timestamp(6)


def plus_s(moment: ColumnElement[Any], seconds: float) -> ColumnElement[datetime]:
    # TIMESTAMPADD works on MySQL and MariaDB alike; MariaDB has no MILLISECOND unit.
    return func.timestampadd(literal_column("MICROSECOND"), int(seconds * 1e6), moment)


def per_row(values: Mapping[int, Any]) -> ColumnElement[Any]:
    """One value per task id in a single UPDATE; a constant when all agree.

    Strings (error texts, which may quote a receiver) are bound parameters.
    Numbers and times are rendered into the SQL: they are ours, cannot carry
    quotes, and building a bound parameter per row cost more than the UPDATE
    itself on the outcome writer's hot path (docs/benchmarks.md).
    """
    distinct = set(values.values())
    if len(distinct) == 1:
        return literal(next(iter(distinct)))
    if all(v is None or type(v) in (int, datetime) for v in distinct):
        whens = " ".join(
            f"WHEN {task_id:d} THEN {_sql_literal(v)}" for task_id, v in values.items()
        )
        return literal_column(f"CASE {Task.__tablename__}.id {whens} END")
    return case(dict(values), value=Task.id)


def _sql_literal(value: int | datetime | None) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return f"'{value:%Y-%m-%d %H:%M:%S.%f}'"
    return f"{value:d}"


# -- the claim loop's hot path ----------------------------------------------


#: The ``(status, due_at)`` index every claim reads (``db/models.py``).
DUE_INDEX = "ix_tasks_status_due_at"
#: Bound at run time by a claim that resumes (``claim_select(resume=True)``).
AFTER_DUE, AFTER_ID = "after_due", "after_id"


def claim_select(
    *,
    limit: int,
    lookahead_s: float,
    max_body_bytes: int,
    skip_prefixes: Collection[str] = (),
    resume: bool = False,
    ids_only: bool = False,
) -> Select[*tuple[Any, ...]]:
    """The claim's SELECT: due waiting rows, oldest first, skipping locked ones.

    It reads the ``(status, due_at)`` index in order and stops after
    ``limit`` rows, so finished rows are never walked. A body longer than
    ``max_body_bytes`` is never sent over the wire (it would be refused
    anyway, and 16 MB bodies in a batch cost gigabytes): ``body`` is NULL
    for it and ``body_bytes`` says how long it is. Rows whose URL starts
    with one of ``skip_prefixes`` (``scheme://authority`` of a destination at
    its limit) are left waiting for a later claim. With ``resume`` the scan
    starts after the row (``AFTER_DUE``, ``AFTER_ID``) where the last claim
    ended, in the same order (``db/prepared.py``, ``ClaimCursor``, says why).
    With ``ids_only`` it only reads, and answers ids and due times: the
    candidates ``claim_rows`` then locks (why: there).
    """
    now = utc_now_sql()
    columns = (Task.id, Task.due_at) if ids_only else _claimed_columns(max_body_bytes)
    query = (
        select(*columns)
        .where(Task.status == _WAITING, Task.due_at <= plus_s(now, lookahead_s))
        .order_by(Task.due_at, Task.id)
        .limit(limit)
    )
    if not ids_only:
        query = query.with_for_update(skip_locked=True)
    if skip_prefixes:
        # SUBSTRING_INDEX(url, '/', 3) is domain.destination.url_prefix in SQL.
        prefix = func.substring_index(Task.url, "/", 3)
        # One bound parameter per prefix, not an "expanding" list: the claim's
        # text is compiled once per set of prefixes (db/prepared.py) and run
        # as it is, so nothing may be left for execution time to render.
        query = query.where(prefix.not_in([literal(p) for p in sorted(skip_prefixes)]))
    if resume:
        # (due_at, id) > (after_due, after_id), spelled out: MariaDB reads a
        # row comparison as a range on due_at only, which walks every row of
        # that due_at again. Spelled out, and with the index named, it is a
        # range on (status, due_at, id), the primary key being the index's
        # last part; left to itself, MariaDB 10.11 chose a ref on status alone.
        due = bindparam(AFTER_DUE, None, type_=Task.due_at.type)
        after_id = bindparam(AFTER_ID, None, type_=Task.id.type)
        query = query.where(
            or_(Task.due_at > due, and_(Task.due_at == due, Task.id > after_id))
        ).with_hint(Task, f"FORCE INDEX ({DUE_INDEX})")
    return query


def _claimed_columns(max_body_bytes: int) -> tuple[Any, ...]:
    body_bytes = func.length(Task.body)
    return (
        Task.id,
        Task.url,
        Task.due_at,
        Task.attempts,
        Task.max_attempts,
        Task.method,
        Task.headers,
        case((body_bytes <= max_body_bytes, Task.body), else_=None).label("body"),
        body_bytes.label("body_bytes"),
        utc_now_sql().label("db_now"),
    )


def claim_rows(
    *, task_ids: Collection[int] | BindParameter[Any], lookahead_s: float, max_body_bytes: int
) -> Select[*tuple[Any, ...]]:
    """The claim of candidates ``claim_select(ids_only=True)`` found, by id.

    A claim that skips destinations may pass over every waiting row of a
    busy one. A locking scan locks (and reads whole, bodies included) each
    row it passes before the URL test drops it: 2,100 waiting rows with
    1-15 MiB bodies made each such claim take 0.8-7 s, against 7 ms for a
    plain read of their ids. So the scan only reads, and this locks the
    candidates, SKIP LOCKED, checking again that each is still waiting and
    due: another pod may have claimed one since.
    """
    now = utc_now_sql()
    return (
        select(*_claimed_columns(max_body_bytes))
        .where(
            Task.id.in_(task_ids),
            Task.status == _WAITING,
            Task.due_at <= plus_s(now, lookahead_s),
        )
        .order_by(Task.due_at, Task.id)
        .with_for_update(skip_locked=True)
    )


def claim_update(
    *, task_ids: Collection[int] | BindParameter[Any], owner: str, lease_s: float
) -> Update:
    """Mark selected rows claimed, the lease running from now.

    From now, not from ``due_at``: the holder renews it while it waits
    (``renew_update``), so a lease that ends before ``due_at`` proves the
    holder was gone before it could send (see ``sweep_update``).
    """
    return (
        update(Task)
        .where(Task.id.in_(task_ids))
        .values(
            status=_CLAIMED,
            owner=owner,
            lease_expires_at=plus_s(utc_now_sql(), lease_s),
            attempts=Task.attempts + 1,
        )
    )


def poison_update(*, reasons: Mapping[int, str]) -> Update:
    """Fail rows a claim found it cannot deliver, in the claim's transaction.

    The attempt counts, as for any row that fails its checks, except where
    adding 1 is the very thing that would fail.
    """
    return (
        update(Task)
        .where(Task.id.in_(list(reasons)), Task.status == _WAITING)
        .values(
            status=Status.FAILED.value,
            attempts=case((Task.attempts < INT_MAX, Task.attempts + 1), else_=Task.attempts),
            finished_at=utc_now_sql(),
            last_error=per_row({i: r[:ERROR_MAX_CHARS] for i, r in reasons.items()}),
            owner=None,
            lease_expires_at=None,
        )
    )


#: SQL text for the driver, with ``%s`` placeholders, and its parameters in order.
DriverSQL = tuple[str, tuple[Any, ...]]


def outcome_update(
    *, status: Status, transitions: Sequence[Transition], owner: str | None
) -> DriverSQL:
    """Write one kind of transition for many rows, and clear their claims.

    Each row is written only while it is still claimed for the attempt that
    was sent (and, given ``owner``, by this process): the outcome of an
    attempt superseded after a lost lease is dropped, never written over
    the newer attempt's.

    The text is written here rather than compiled by SQLAlchemy: its
    per-row values make every batch's SQL new, so each one was built and
    compiled afresh on the writer's thread, about 0.5 ms a batch, the larger
    part of a write of ten outcomes (docs/benchmarks.md). Numbers and
    times are ours and rendered in, as ``per_row`` does; strings (error
    texts, which may quote a receiver) and the owner are parameters.
    """
    params: list[Any] = [status.value]
    table = Task.__tablename__
    fired_at = _per_row_sql(table, {t.task_id: t.fired_at for t in transitions}, params)
    codes = _per_row_sql(table, {t.task_id: t.status_code for t in transitions}, params)
    errors = {t.task_id: (t.error or None) and t.error[:ERROR_MAX_CHARS] for t in transitions}
    sets = [
        "status=%s",
        "owner=NULL",
        "lease_expires_at=NULL",
        f"fired_at={fired_at}",
        f"last_status_code={codes}",
        f"last_error={_per_row_sql(table, errors, params)}",
    ]
    if status is Status.WAITING:
        next_due = {t.task_id: t.next_due_at for t in transitions}
        sets.append(f"due_at={_per_row_sql(table, next_due, params)}")
    else:
        sets.append("finished_at=UTC_TIMESTAMP(6)")
    ids = ",".join(f"{t.task_id:d}" for t in transitions)
    attempts = _per_row_sql(table, {t.task_id: t.attempt for t in transitions}, params)
    where = (
        f"{table}.id IN ({ids}) AND {table}.status = '{_CLAIMED}' AND {table}.attempts = {attempts}"
    )
    if owner is not None:
        where += f" AND {table}.owner = %s"
        params.append(owner)
    return f"UPDATE {table} SET {', '.join(sets)} WHERE {where}", tuple(params)


def _per_row_sql(table: str, values: Mapping[int, Any], params: list[Any]) -> str:
    """``per_row`` as SQL text: a constant when all agree, else a CASE on the id.

    Strings become ``%s`` placeholders, their values appended to ``params``.
    """
    distinct = set(values.values())
    if len(distinct) == 1:
        return _value_sql(next(iter(distinct)), params)
    whens = " ".join(
        f"WHEN {task_id:d} THEN {_value_sql(v, params)}" for task_id, v in values.items()
    )
    return f"CASE {table}.id {whens} END"


def _value_sql(value: Any, params: list[Any]) -> str:
    if value is None or type(value) in (int, datetime):
        return _sql_literal(value)
    params.append(value)
    return "%s"


def renew_update(*, owner: str, task_ids: Collection[int], lease_s: float) -> Update:
    """Extend this holder's leases on claims it still holds to now + ``lease_s``."""
    return (
        update(Task)
        .where(Task.id.in_(task_ids), Task.owner == owner, Task.status == _CLAIMED)
        .values(lease_expires_at=plus_s(utc_now_sql(), lease_s))
    )


def release_update(*, owner: str, task_ids: Collection[int]) -> Update:
    """Hand back claims never sent: waiting again, the attempt not spent."""
    return (
        update(Task)
        .where(Task.id.in_(task_ids), Task.owner == owner, Task.status == _CLAIMED)
        .values(
            status=_WAITING,
            owner=None,
            lease_expires_at=None,
            attempts=func.greatest(Task.attempts - 1, 0),
        )
    )


def sweep_update(*, default_max_attempts: int, limit: int) -> Update:
    """Expired leases back to ``waiting``; reads the claimed prefix of the index.

    A lease that ended before the task's due time was certainly never sent
    (nothing fires early, and a live holder renews its leases): it returns
    with its attempt given back. Any other may have been sent, so it counts,
    and the poison guard counts only those.
    """
    now = utc_now_sql()
    # A claim writes status and lease in one statement, so a claimed row with
    # no lease was written by hand; it would otherwise never be swept.
    no_lease = Task.lease_expires_at.is_(None)
    unsent = and_(~no_lease, Task.lease_expires_at < Task.due_at)
    hopeless = and_(
        ~unsent,
        Task.attempts
        >= func.coalesce(Task.max_attempts, default_max_attempts) + LEASE_LOSSES_BEFORE_FAILING,
    )
    # MySQL evaluates SET assignments left to right, each seeing the ones
    # before it: every CASE reads the lease and the attempts before they change.
    return (
        update(Task)
        .where(Task.status == _CLAIMED, or_(Task.lease_expires_at < now, no_lease))
        .ordered_values(
            (Task.status, case((hopeless, Status.FAILED.value), else_=_WAITING)),
            (Task.finished_at, case((hopeless, now), else_=None)),
            (
                Task.last_error,
                case(
                    (hopeless, "lease expired too often: the task may be crashing its pods"),
                    (no_lease, "claimed with no lease (written by hand?); retrying"),
                    (unsent, UNSENT_LEASE_LOST),
                    else_="lease expired: the pod holding it stopped; retrying",
                ),
            ),
            (
                Task.attempts,
                case((unsent, func.greatest(Task.attempts - 1, 0)), else_=Task.attempts),
            ),
            (Task.owner, None),
            (Task.lease_expires_at, None),
        )
        .with_dialect_options(mysql_limit=limit)
    )


# -- upkeep -------------------------------------------------------------------


def purgeable_ids(*, older_than_s: float, limit: int) -> Select[*tuple[Any, ...]]:
    return (
        select(Task.id)
        .where(Task.status.in_(_FINISHED), Task.finished_at < plus_s(utc_now_sql(), -older_than_s))
        .limit(limit)
    )


def purge_delete(*, task_ids: Collection[int]) -> Delete:
    # The status guard again: a row cannot leave a finished state, but say so.
    return delete(Task).where(Task.id.in_(task_ids), Task.status.in_(_FINISHED))


def backlog_count() -> Select[*tuple[Any, ...]]:
    """Due tasks nobody has claimed yet (a cheap index range count)."""
    return (
        select(func.count())
        .select_from(Task)
        .where(Task.status == _WAITING, Task.due_at <= utc_now_sql())
    )


def db_now_select() -> Select[*tuple[Any, ...]]:
    return select(utc_now_sql())


def ping() -> TextClause:
    return text("SELECT 1")


def get_lock(name_sql: str) -> TextClause:
    """``GET_LOCK`` of a name built by SQL (see ``RETENTION_LOCK``), waiting ``:wait`` s."""
    return text(f"SELECT GET_LOCK({name_sql}, :wait)")


def release_lock(name_sql: str) -> TextClause:
    return text(f"SELECT RELEASE_LOCK({name_sql})")


def create_database(name: str) -> TextClause:
    # The name is validated against [A-Za-z0-9_] by Settings, so quoting is safe.
    return text(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")


# -- the operator CLI -----------------------------------------------------------


def schedule_insert(
    *,
    url: str,
    due_at: datetime | None,
    delay_s: float,
    method: str | None,
    headers: str | None,
    body: str | None,
    max_attempts: int | None,
) -> Insert:
    """One task; ``due_at`` (naive UTC) or ``delay_s`` from the database's now."""
    when: Any = due_at if due_at is not None else plus_s(utc_now_sql(), delay_s)
    return insert(Task).values(
        url=url,
        due_at=when,
        method=method,
        headers=headers,
        body=body,
        max_attempts=max_attempts,
    )


def task_view(task_id: int) -> Select[*tuple[Any, ...]]:
    return select(
        Task.id,
        Task.url,
        Task.method,
        Task.status,
        Task.due_at,
        Task.attempts,
        Task.max_attempts,
        Task.last_status_code,
        Task.last_error,
        Task.created_at,
        Task.fired_at,
        Task.finished_at,
        Task.owner,
    ).where(Task.id == task_id)


def cancel_update(task_id: int) -> Update:
    return (
        update(Task)
        .where(Task.id == task_id, Task.status == _WAITING)
        .values(status=Status.CANCELLED.value, finished_at=utc_now_sql())
    )


def count_by_status() -> Select[*tuple[Any, ...]]:
    return select(Task.status, func.count()).group_by(Task.status)


def oldest_due_waiting() -> Select[*tuple[Any, ...]]:
    return select(func.min(Task.due_at)).where(Task.status == _WAITING)


def finished_since(since: datetime) -> Select[*tuple[Any, ...]]:
    return (
        select(func.count())
        .select_from(Task)
        .where(
            Task.status.in_([Status.DONE.value, Status.FAILED.value]),
            Task.finished_at >= since,
        )
    )
