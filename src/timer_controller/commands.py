"""What each ``timer-controller`` subcommand does, once settings are valid.

Exit codes: 0 success, 1 the database (or, with DISPATCH=amqp and for
``worker``, the broker) could not be reached or the operation could not be
done, 2 a start-up problem that is neither (the api or metrics port in use).
Errors end in one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime

from timer_controller.api.server import ListenError
from timer_controller.bootstrap import database_url, start_database
from timer_controller.db.repository import TaskRepository, TaskView
from timer_controller.db.setup import make_engine, wait_for_server
from timer_controller.domain.task import Status
from timer_controller.domain.text import preview
from timer_controller.errors import (
    BrokerError,
    DatabaseUnavailable,
    SchemaMissing,
    StartupError,
    StorageError,
)
from timer_controller.ops.logs import configure
from timer_controller.runtime.upkeep import CLEANUP_PAUSE_S
from timer_controller.settings import Settings, WorkerSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def execute(command: str, args: argparse.Namespace, settings: Settings) -> int:
    configure(level=settings.log_level, fmt=settings.log_format, pod=settings.pod_name)
    try:
        if command == "run":
            from timer_controller.bootstrap import run_controller

            return run_controller(settings)
        if command == "api":
            from timer_controller.bootstrap import run_api

            return run_api(settings)
        if command == "migrate":
            return _migrate(settings)
        return _operate(settings, args)
    except StartupError as exc:
        print(f"timer-controller: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DatabaseUnavailable, BrokerError) as exc:
        print(f"timer-controller: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ListenError as exc:
        print(f"timer-controller: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SchemaMissing:
        print(
            f"timer-controller: database {settings.db_name} has no tasks table; "
            "run `timer-controller migrate` first",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except StorageError as exc:
        print(f"timer-controller: database error: {exc.reason}", file=sys.stderr)
        return EXIT_FAILED


def execute_worker(settings: WorkerSettings) -> int:
    """``timer-controller worker``: exit 1 with one line if the broker stays unreachable."""
    configure(level=settings.log_level, fmt=settings.log_format, pod=settings.pod_name)
    from timer_controller.bootstrap_amqp import run_worker

    try:
        return run_worker(settings)
    except BrokerError as exc:  # unreachable at start-up, or a queue it cannot use
        print(f"timer-controller: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _migrate(settings: Settings) -> int:
    started = start_database(settings)
    if started is None:  # stopped by a signal; start_database said so
        return EXIT_OK
    started.engine.dispose()
    print(f"database {settings.db_name} is at the latest schema")
    return EXIT_OK


def _operate(settings: Settings, args: argparse.Namespace) -> int:
    engine = make_engine(
        database_url(settings, database=settings.db_name),
        pool_size=1,
        db_timeout_s=settings.db_timeout_s,
    )
    try:
        wait_for_server(
            engine,
            tries=settings.retry_number,
            wait_s=settings.reconnect_wait_s,
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
    """The status text; whatever another system wrote in the row, it cannot break it."""
    attempts = f"{task.attempts}" + (f" of {task.max_attempts}" if task.max_attempts else "")
    target = f"{preview(task.method or 'POST', 16)} {preview(task.url, 2048)}"
    lines = [f"task {task.id}: {task.status}", f"  url: {target}"]
    if task.due_at is None:
        # The driver reads a zero or invalid DATETIME back as None.
        lines.append("  due: not a valid time (a zero date such as 0000-00-00?)")
    elif task.status in (Status.WAITING, Status.CLAIMED):
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
        lines.append(f"  last error: {preview(task.last_error, 500)}")
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
    elif task.status == Status.CLAIMED:
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
    for status in Status:
        print(f"{status.value:>10}: {stats.by_status.get(status.value, 0)}")
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
