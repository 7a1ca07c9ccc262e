"""The ``timer-controller`` command: the controller, and operator subcommands.

Exit codes: 0 success, 1 the database could not be reached or the operation
could not be done, 2 a usage or configuration error. Errors a user can cause
end in one line naming what to fix, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from timer_controller import __version__
from timer_controller.delivery.policy import TargetPolicy, check_url
from timer_controller.domain.durations import parse_duration_s
from timer_controller.domain.text import quoted
from timer_controller.errors import ConfigError
from timer_controller.settings import load_settings, load_worker_settings, require_api_tokens

EXIT_USAGE = 2
MAX_ATTEMPTS = 1000  # as the MAX_ATTEMPTS setting
MAX_TASK_ID = 2**63 - 1  # BIGINT


# What MySQL's DATETIME can store.
EARLIEST = datetime(1000, 1, 1)
LATEST = datetime(9999, 12, 31, 23, 59, 59)


def _text(raw: str) -> str:
    """``raw`` if it is UTF-8; argv bytes that are not arrive as lone surrogates."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise argparse.ArgumentTypeError(
            f"is not valid UTF-8 (byte {exc.start} cannot be decoded)"
        ) from None
    return raw


def _duration(raw: str) -> float:
    try:
        return parse_duration_s(_text(raw))
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith("must"):
            reason = f"{quoted(raw)} {reason}"
        raise argparse.ArgumentTypeError(reason) from None


def _instant(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(_text(raw).replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{quoted(raw)} is not an ISO 8601 time such as 2026-12-01T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{quoted(raw)} needs a time zone, e.g. a trailing Z for UTC"
        )
    try:
        utc = moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # before year 1 or after 9999 once in UTC
        utc = datetime.min
    if not EARLIEST <= utc <= LATEST:
        raise argparse.ArgumentTypeError(
            f"{quoted(raw)} is outside what the database stores (years 1000 to 9999, UTC)"
        )
    return utc


def _whole_number(raw: str, most: int) -> int:
    # A 5,000-digit number is a ValueError from int() itself, not a big int.
    value = int(raw) if raw.strip().isdigit() and len(raw) < 30 else 0
    if not 1 <= value <= most:
        raise argparse.ArgumentTypeError(f"{quoted(raw)} is not a whole number from 1 to {most}")
    return value


def _attempts(raw: str) -> int:
    return _whole_number(raw, MAX_ATTEMPTS)


def _task_id(raw: str) -> int:
    return _whole_number(raw, MAX_TASK_ID)


def _target(raw: str) -> str:
    reason = check_url(_text(raw), TargetPolicy())
    if reason is not None:
        raise argparse.ArgumentTypeError(reason)
    return raw


def _header(raw: str) -> tuple[str, str]:
    name, sep, value = _text(raw).partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{quoted(raw)} is not a header; use Name:value")
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
    sub.add_parser(
        "worker",
        help="fire tasks handed out through RabbitMQ (DISPATCH=amqp); needs AMQP_URL, no DB_*",
    )
    sub.add_parser("migrate", help="create the database if needed, upgrade to head, exit")
    sub.add_parser(
        "api",
        help="serve the timer HTTP API on API_HOST:API_PORT until SIGTERM/SIGINT "
        "(needs API_TOKENS)",
    )
    schedule = sub.add_parser("schedule", help="insert a timer and print its id")
    schedule.add_argument("url", type=_target, help="the http(s) URL to call")
    when = schedule.add_mutually_exclusive_group(required=True)
    when.add_argument("--in", dest="delay", type=_duration, help="fire after this long: 30s, 5m")
    when.add_argument("--at", dest="at", type=_instant, help="fire at this ISO 8601 time")
    schedule.add_argument("--method", choices=["GET", "POST", "PUT", "PATCH", "DELETE"])
    schedule.add_argument(
        "--header", action="append", type=_header, default=[], help="Name:value (repeatable)"
    )
    schedule.add_argument(
        "--body", type=_text, help="request body (default: JSON with id and due_at)"
    )
    schedule.add_argument("--max-attempts", type=_attempts, help="overrides MAX_ATTEMPTS")
    status = sub.add_parser("status", help="show a task's state")
    status.add_argument("id", type=_task_id)
    cancel = sub.add_parser("cancel", help="cancel a waiting task so it never fires")
    cancel.add_argument("id", type=_task_id)
    sub.add_parser("stats", help="counts by status, oldest due task, recent throughput")
    purge = sub.add_parser("purge", help="delete finished tasks older than a duration, once")
    purge.add_argument("--older-than", type=_duration, required=True, help="e.g. 7d, 12h")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "worker":
            worker_settings = load_worker_settings()
        else:
            settings = load_settings()
            if args.command == "api":
                require_api_tokens(settings)
    except ConfigError as exc:
        print(f"timer-controller: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Imported only now: a configuration error answers before SQLAlchemy,
    # Alembic, aiohttp and aio-pika are even loaded.
    if args.command == "worker":
        from timer_controller.commands import execute_worker

        return execute_worker(worker_settings)
    from timer_controller.commands import execute

    return execute(args.command or "run", args, settings)
