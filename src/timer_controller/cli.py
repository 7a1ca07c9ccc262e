"""The ``timer-controller`` command: the controller, and operator subcommands.

Exit codes: 0 success, 1 the database could not be reached or the operation
could not be done, 2 a usage or configuration error. Errors a user can cause
end in one line naming what to fix, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import DBAPIError, ProgrammingError

from timer_controller import __version__
from timer_controller.database import (
    DatabaseUnavailable,
    describe_error,
    make_engine,
    prepare,
    server_url,
    wait_for_server,
)
from timer_controller.durations import parse_duration_s
from timer_controller.guard import TargetPolicy, check_url
from timer_controller.logs import configure
from timer_controller.repository import TaskRepository, TaskView
from timer_controller.settings import ConfigError, Settings, load_settings
from timer_controller.upkeep import CLEANUP_PAUSE_S

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
NO_SUCH_TABLE = 1146  # MySQL/MariaDB ER_NO_SUCH_TABLE


def _duration(raw: str) -> float:
    try:
        return parse_duration_s(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _instant(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not an ISO 8601 time such as 2026-12-01T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{raw!r} needs a time zone, e.g. a trailing Z for UTC")
    return moment.astimezone(UTC).replace(tzinfo=None)


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number of at least 1")
    return value


def _target(raw: str) -> str:
    reason = check_url(raw, TargetPolicy())
    if reason is not None:
        raise argparse.ArgumentTypeError(reason)
    return raw


def _header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{raw!r} is not a header; use Name:value")
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timer-controller",
        description="Fire one-shot HTTP timers stored in MySQL. "
        "With no subcommand it runs the controller. Settings come from the "
        "environment (DB_HOST, DB_USER, DB_PASSWORD, …; see the README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the controller until SIGTERM/SIGINT (the default)")
    sub.add_parser("migrate", help="create the database if needed, upgrade to head, exit")
    schedule = sub.add_parser("schedule", help="insert a timer and print its id")
    schedule.add_argument("url", type=_target, help="the http(s) URL to call")
    when = schedule.add_mutually_exclusive_group(required=True)
    when.add_argument("--in", dest="delay", type=_duration, help="fire after this long: 30s, 5m")
    when.add_argument("--at", dest="at", type=_instant, help="fire at this ISO 8601 time")
    schedule.add_argument("--method", choices=["GET", "POST", "PUT", "PATCH", "DELETE"])
    schedule.add_argument(
        "--header", action="append", type=_header, default=[], help="Name:value (repeatable)"
    )
    schedule.add_argument("--body", help="request body (default: JSON with id and due_at)")
    schedule.add_argument("--max-attempts", type=_positive_int, help="overrides MAX_ATTEMPTS")
    status = sub.add_parser("status", help="show a task's state")
    status.add_argument("id", type=int)
    cancel = sub.add_parser("cancel", help="cancel a waiting task so it never fires")
    cancel.add_argument("id", type=int)
    sub.add_parser("stats", help="counts by status, oldest due task, recent throughput")
    purge = sub.add_parser("purge", help="delete finished tasks older than a duration, once")
    purge.add_argument("--older-than", type=_duration, required=True, help="e.g. 7d, 12h")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"timer-controller: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure(level=settings.log_level, fmt=settings.log_format, pod=settings.pod_name)
    try:
        if command == "run":
            from timer_controller.bootstrap import run_controller

            return run_controller(settings)
        if command == "migrate":
            prepare(settings).dispose()
            print(f"database {settings.db_name} is at the latest schema")
            return EXIT_OK
        return _operate(settings, args)
    except DatabaseUnavailable as exc:
        print(f"timer-controller: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ProgrammingError as exc:
        if _code(exc) == NO_SUCH_TABLE:
            print(
                f"timer-controller: database {settings.db_name} has no tasks table; "
                "run `timer-controller migrate` first",
                file=sys.stderr,
            )
        else:
            print(f"timer-controller: database error: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except DBAPIError as exc:
        print(f"timer-controller: database error: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED


def _code(exc: DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _operate(settings: Settings, args: argparse.Namespace) -> int:
    engine = make_engine(server_url(settings, database=settings.db_name), pool_size=1)
    try:
        wait_for_server(
            engine,
            tries=settings.retry_number,
            wait_s=settings.reconnect_wait_time,
            where=f"{settings.db_host}:{settings.db_port}/{settings.db_name}",
        )
        repo = TaskRepository(engine)
        handlers: dict[str, Callable[[], int]] = {
            "schedule": lambda: _schedule(repo, args),
            "status": lambda: _status(repo, args.id),
            "cancel": lambda: _cancel(repo, args.id),
            "stats": lambda: _stats(repo),
            "purge": lambda: _purge(repo, settings, args.older_than),
        }
        return handlers[args.command]()
    finally:
        engine.dispose()


def _schedule(repo: TaskRepository, args: argparse.Namespace) -> int:
    headers = json.dumps(dict(args.header)) if args.header else None
    task_id = repo.schedule(
        url=args.url,
        due_at=args.at,
        delay_s=args.delay or 0.0,
        method=args.method,
        headers=headers,
        body=args.body,
        max_attempts=args.max_attempts,
    )
    print(task_id)
    return EXIT_OK


def describe(task: TaskView, now: datetime) -> str:
    attempts = f"{task.attempts}" + (f" of {task.max_attempts}" if task.max_attempts else "")
    lines = [f"task {task.id}: {task.status}", f"  url: {task.method or 'POST'} {task.url}"]
    if task.status in ("waiting", "claimed"):
        left_s = (task.due_at - now).total_seconds()
        when = f"in {left_s:.1f}s" if left_s > 0 else f"{-left_s:.1f}s ago (firing now)"
        lines.append(f"  due: {task.due_at:%Y-%m-%dT%H:%M:%S.%f}Z ({when})")
    else:
        lines.append(f"  due: {task.due_at:%Y-%m-%dT%H:%M:%S.%f}Z")
    if task.fired_at is not None:
        lines.append(f"  last fired: {task.fired_at:%Y-%m-%dT%H:%M:%S.%f}Z")
    lines.append(f"  attempts: {attempts}")
    if task.last_status_code is not None:
        lines.append(f"  last HTTP status: {task.last_status_code}")
    if task.last_error:
        lines.append(f"  last error: {task.last_error}")
    return "\n".join(lines)


def _status(repo: TaskRepository, task_id: int) -> int:
    task = repo.get(task_id)
    if task is None:
        print(f"timer-controller: no task with id {task_id}", file=sys.stderr)
        return EXIT_FAILED
    print(describe(task, repo.db_now()))
    return EXIT_OK


def _cancel(repo: TaskRepository, task_id: int) -> int:
    if repo.cancel(task_id):
        print(f"task {task_id} cancelled")
        return EXIT_OK
    task = repo.get(task_id)
    if task is None:
        print(f"timer-controller: no task with id {task_id}", file=sys.stderr)
    elif task.status == "claimed":
        print(
            f"timer-controller: task {task_id} is firing now; too late to cancel", file=sys.stderr
        )
    else:
        print(
            f"timer-controller: task {task_id} is already {task.status}; nothing to cancel",
            file=sys.stderr,
        )
    return EXIT_FAILED


def _stats(repo: TaskRepository) -> int:
    stats = repo.stats()
    for status in ("waiting", "claimed", "done", "failed", "cancelled"):
        print(f"{status:>10}: {stats.by_status.get(status, 0)}")
    if stats.oldest_due_waiting is None:
        print("oldest waiting: none")
    else:
        late_s = (stats.db_now - stats.oldest_due_waiting).total_seconds()
        state = f"{late_s:.1f}s overdue" if late_s > 0 else f"due in {-late_s:.1f}s"
        print(f"oldest waiting: {stats.oldest_due_waiting:%Y-%m-%dT%H:%M:%S}Z ({state})")
    rate = stats.finished_last_minute / 60
    print(f"finished in the last minute: {stats.finished_last_minute} ({rate:.1f}/s)")
    return EXIT_OK


def _pause() -> bool:
    time.sleep(CLEANUP_PAUSE_S)
    return True


def _purge(repo: TaskRepository, settings: Settings, older_than_s: float) -> int:
    deleted = repo.purge_finished(
        older_than_s=older_than_s, batch_size=settings.cleanup_batch, pause=_pause
    )
    if deleted is None:
        print("timer-controller: another process is purging now; try again later", file=sys.stderr)
        return EXIT_FAILED
    print(f"deleted {deleted} finished tasks older than {older_than_s:g}s")
    return EXIT_OK
