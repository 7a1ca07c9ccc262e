"""The benchmark on a tiny workload, so it never rots: correctness, not speed.

Runs the one documented command (``python -m bench``) with every mode and
scenario at toy sizes against the server in TEST_DATABASE_URL, then checks
that every task was delivered exactly once and recorded done.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.bench_runs import needs_database_server, run_bench

RUN_TIMEOUT_S = 240
TASKS = 200

pytestmark = needs_database_server

Result = dict[str, Any]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    run = run_bench(
        "bench",
        "--scenarios", "burst,steady,rss,big-table",
        "--modes", "seed,raw,controller",
        "-n", str(TASKS),
        "--burst-pods", "2",
        # Long enough for the seed (10 tasks per 0.5 s) to finish some on a loaded machine.
        "--seed-seconds", "3",
        "--steady-seconds", "1",
        "--steady-rate", "10",
        "--rss-tasks", "30",
        "--big-finished", "2000",
        "--big-waiting", "300",
        "--claims", "10",
        "--timeout", "60",
        out=out,
        timeout_s=RUN_TIMEOUT_S,
    )  # fmt: skip
    data: dict[str, Any] = run.results
    data["markdown"] = run.markdown
    return data


def _results(bench: dict[str, Any]) -> list[Result]:
    results: list[Result] = bench["results"]
    return results


def test_every_mode_ran_every_trial_scenario(bench: dict[str, Any]) -> None:
    ran = {(r["scenario"], r["mode"]) for r in _results(bench)}
    expected = {(s, m) for s in ("burst", "steady") for m in ("seed", "raw", "controller")}
    expected |= {("rss", "raw"), ("rss", "controller")}
    assert ran == expected
    assert all(not r["note"].startswith("ERROR") for r in _results(bench))


def test_no_task_is_delivered_twice(bench: dict[str, Any]) -> None:
    assert {(r["scenario"], r["mode"]): r["duplicates"] for r in _results(bench)} == {
        (r["scenario"], r["mode"]): 0 for r in _results(bench)
    }


def test_unbounded_trials_deliver_and_finish_every_task(bench: dict[str, Any]) -> None:
    complete = [r for r in _results(bench) if not r["bounded"]]
    assert len(complete) == 7  # everything except the time-bounded seed burst
    for r in complete:
        label = f"{r['scenario']}/{r['mode']}"
        assert r["tasks"] > 0, label
        assert (r["done"], r["failed"], r["unique_fired"]) == (r["tasks"], 0, r["tasks"]), label
        assert (r["unseen_done"], r["seen_not_done"]) == (0, 0), label


def test_bounded_seed_burst_records_exactly_what_it_fired(bench: dict[str, Any]) -> None:
    (seed,) = [r for r in _results(bench) if r["scenario"] == "burst" and r["mode"] == "seed"]
    assert seed["bounded"]
    assert 0 < seed["done"] < TASKS
    # Stopped mid-burst, yet no request is lost between the wire and the table.
    assert seed["unique_fired"] == seed["done"]
    assert (seed["unseen_done"], seed["seen_not_done"]) == (0, 0)


def test_every_pod_stops_cleanly_on_sigterm(bench: dict[str, Any]) -> None:
    codes = {(r["scenario"], r["mode"]): r["exit_codes"] for r in _results(bench)}
    assert all(c and set(c) == {0} for c in codes.values()), codes


def test_measurements_are_filled_in(bench: dict[str, Any]) -> None:
    for r in _results(bench):
        label = f"{r['scenario']}/{r['mode']}"
        assert r["done_per_s"] > 0, label
        assert r["cpu_s_per_1k"] > 0, label
        assert r["peak_rss_mb"] > 0, label
    steady = [r for r in _results(bench) if r["scenario"] == "steady"]
    assert all(set(r["lateness_ms"]) == {"p50", "p99", "max", "min"} for r in steady)


def test_big_table_times_both_claims(bench: dict[str, Any]) -> None:
    timings = bench["big_table"]["timings"]
    assert {(t["variant"], t["method"]) for t in timings} == {
        (v, m) for v in ("empty", "big") for m in ("sql", "controller")
    }
    assert "ix_tasks_status_due_at" in bench["big_table"]["explain"]


def test_report_has_targets_and_every_mode(bench: dict[str, Any]) -> None:
    markdown: str = bench["markdown"]
    assert "## Targets" in markdown
    for mode in ("seed", "raw", "controller"):
        assert f"| {mode} |" in markdown
