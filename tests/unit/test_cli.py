"""The operator CLI's argument parsing and status text (no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from timer_controller import __version__
from timer_controller.cli import build_parser
from timer_controller.commands import describe
from timer_controller.db.repository import TaskView

SUBCOMMANDS = ["run", "migrate", "api", "schedule", "status", "cancel", "stats", "purge"]


@pytest.mark.parametrize("argv", [["--help"], *[[sub, "--help"] for sub in SUBCOMMANDS]])
def test_help_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)

    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: timer-controller")
    if argv[0] != "--help":
        assert out.startswith(f"usage: timer-controller {argv[0]}")


def test_top_level_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])

    out = capsys.readouterr().out
    for sub in SUBCOMMANDS:
        assert f"    {sub} " in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--version"])

    assert caught.value.code == 0
    assert capsys.readouterr().out == f"timer-controller {__version__}\n"


URL = "http://hooks.example.com/x"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["schedule", URL], "one of the arguments --in --at is required"),
        (
            ["schedule", URL, "--in", "5s", "--at", "2026-12-01T10:00:00Z"],
            "not allowed with argument",
        ),
        (["schedule", URL, "--in", "abc"], "argument --in: 'abc' is not a duration"),
        (["schedule", URL, "--in=-5s"], "argument --in: '-5s' is not a duration"),
        (["schedule", URL, "--in", "-5s"], "argument --in: expected one argument"),
        (
            ["schedule", URL, "--at", "2026-12-01T10:00:00"],
            "'2026-12-01T10:00:00' needs a time zone",
        ),
        (["schedule", URL, "--at", "tomorrow"], "'tomorrow' is not an ISO 8601 time"),
        (
            ["schedule", URL, "--in", "5s", "--header", "novalue"],
            "'novalue' is not a header; use Name:value",
        ),
        (["schedule", URL, "--in", "5s", "--header", ":v"], "':v' is not a header; use Name:value"),
        (
            ["schedule", URL, "--in", "5s", "--method", "TRACE"],
            "argument --method: invalid choice: 'TRACE'",
        ),
        (
            ["schedule", URL, "--in", "5s", "--max-attempts", "many"],
            "argument --max-attempts: 'many' is not a whole number from 1 to 1000",
        ),
        (["schedule", "--in", "5s"], "the following arguments are required: url"),
        (["status", "notanumber"], "argument id: 'notanumber' is not a whole number from 1 to"),
        (["status"], "the following arguments are required: id"),
        (["cancel", "x"], "argument id: 'x' is not a whole number from 1 to"),
        (["purge"], "the following arguments are required: --older-than"),
        (["purge", "--older-than", "soon"], "argument --older-than: 'soon' is not a duration"),
        (["stats", "extra"], "unrecognized arguments: extra"),
        # Hostile input: each of these once ended in a traceback.
        (["schedule", URL, "--in", "9" * 400], "argument --in: '999"),
        (["purge", "--older-than", "9" * 400], "must be at most 36500d"),
        (["schedule", URL, "--in", "36501d"], "argument --in: '36501d' must be at most 36500d"),
        (
            ["schedule", URL, "--at", "0001-01-01T00:00:00+01:00"],
            "argument --at: '0001-01-01T00:00:00+01:00' is outside what the database stores",
        ),
        (["schedule", URL, "--at", "0999-12-31T23:59:59Z"], "is outside what the database stores"),
        (["schedule", URL, "--at", "9999-12-31T23:00:00-05:00"], "is outside what the database"),
        (
            ["schedule", URL, "--in", "5s", "--body", "caf\udcc3"],
            "argument --body: is not valid UTF-8 (byte 3 cannot be decoded)",
        ),
        (["schedule", URL, "--in", "5s", "--header", "X-A:\udcff"], "argument --header: is not"),
        (["schedule", URL + "\udcff", "--in", "5s"], "argument url: is not valid UTF-8"),
        (["schedule", URL, "--in", "5s", "--max-attempts", "9" * 400], "from 1 to 1000"),
        (["status", "9" * 5000], "is not a whole number from 1 to 9223372036854775807"),
        (["cancel", "9223372036854775808"], "is not a whole number from 1 to"),
        (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: timer-controller")
    assert error in err
    assert "Traceback" not in err
    assert len(err) < 1000, "a long argument is echoed cut"


def test_no_subcommand_means_run() -> None:
    assert build_parser().parse_args([]).command is None


def test_schedule_in() -> None:
    args = build_parser().parse_args(
        ["schedule", URL, "--in", "1.5m", "--method", "PUT", "--header", "X-A: 1",
         "--header", "X-B:a:b", "--body", "{}", "--max-attempts", "5"]
    )  # fmt: skip

    assert (args.command, args.url, args.delay, args.at) == ("schedule", URL, 90.0, None)
    assert args.method == "PUT"
    assert args.header == [("X-A", "1"), ("X-B", "a:b")]
    assert args.body == "{}"
    assert args.max_attempts == 5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, 0, 0)),
        ("2026-12-01T10:00:00.250Z", datetime(2026, 12, 1, 10, 0, 0, 250000)),
        ("2026-12-01T12:00:00+02:00", datetime(2026, 12, 1, 10, 0, 0)),
        ("2026-12-01T05:30:00-04:30", datetime(2026, 12, 1, 10, 0, 0)),
    ],
)
def test_schedule_at_is_converted_to_naive_utc(raw: str, expected: datetime) -> None:
    args = build_parser().parse_args(["schedule", URL, "--at", raw])

    assert args.at == expected
    assert args.at.tzinfo is None
    assert args.delay is None


@pytest.mark.parametrize(
    ("argv", "attr", "expected"),
    [
        (["status", "42"], "id", 42),
        (["cancel", "7"], "id", 7),
        (["purge", "--older-than", "7d"], "older_than", 604800.0),
        (["purge", "--older-than", "12h"], "older_than", 43200.0),
    ],
)
def test_subcommand_arguments(argv: list[str], attr: str, expected: object) -> None:
    args = build_parser().parse_args(argv)

    assert args.command == argv[0]
    assert getattr(args, attr) == expected


NOW = datetime(2025, 6, 1, 12, 0, 0)
CREATED = datetime(2025, 6, 1, 11, 0, 0)


WAITING = TaskView(
    id=7,
    url="http://h/x",
    method=None,
    status="waiting",
    due_at=NOW + timedelta(seconds=30),
    attempts=0,
    max_attempts=None,
    last_status_code=None,
    last_error=None,
    created_at=CREATED,
    fired_at=None,
    finished_at=None,
    owner=None,
)


def _view(**fields: Any) -> TaskView:
    return replace(WAITING, **fields)


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (
            _view(),
            "task 7: waiting\n"
            "  url: POST http://h/x\n"
            "  due: 2025-06-01T12:00:30.000000Z (in 30.0s)\n"
            "  attempts: 0",
        ),
        (
            _view(
                due_at=NOW - timedelta(seconds=2.5),
                attempts=1,
                last_status_code=503,
                last_error="HTTP 503",
                fired_at=NOW - timedelta(seconds=10),
            ),
            "task 7: waiting\n"
            "  url: POST http://h/x\n"
            "  due: 2025-06-01T11:59:57.500000Z (2.5s ago (firing now))\n"
            "  last fired: 2025-06-01T11:59:50.000000Z\n"
            "  attempts: 1\n"
            "  last HTTP status: 503\n"
            "  last error: HTTP 503",
        ),
        (
            _view(status="claimed", due_at=NOW + timedelta(seconds=0.25)),
            "task 7: claimed\n"
            "  url: POST http://h/x\n"
            "  due: 2025-06-01T12:00:00.250000Z (in 0.2s)\n"
            "  attempts: 0",
        ),
        (
            _view(
                status="done",
                method="PUT",
                due_at=NOW - timedelta(minutes=5),
                attempts=1,
                last_status_code=200,
                fired_at=NOW - timedelta(minutes=5) + timedelta(milliseconds=3),
                finished_at=NOW - timedelta(minutes=5) + timedelta(milliseconds=9),
            ),
            "task 7: done\n"
            "  url: PUT http://h/x\n"
            "  due: 2025-06-01T11:55:00.000000Z\n"
            "  last fired: 2025-06-01T11:55:00.003000Z\n"
            "  attempts: 1\n"
            "  last HTTP status: 200",
        ),
        (
            _view(
                status="failed",
                due_at=NOW - timedelta(hours=1),
                attempts=3,
                last_error="connection refused",
                fired_at=NOW - timedelta(minutes=1),
            ),
            "task 7: failed\n"
            "  url: POST http://h/x\n"
            "  due: 2025-06-01T11:00:00.000000Z\n"
            "  last fired: 2025-06-01T11:59:00.000000Z\n"
            "  attempts: 3\n"
            "  last error: connection refused",
        ),
        (
            _view(status="cancelled"),
            "task 7: cancelled\n"
            "  url: POST http://h/x\n"
            "  due: 2025-06-01T12:00:30.000000Z\n"
            "  attempts: 0",
        ),
    ],
    ids=["waiting-future", "waiting-retry-overdue", "claimed", "done", "failed", "cancelled"],
)
def test_describe(view: TaskView, expected: str) -> None:
    assert describe(view, NOW) == expected
