"""docs/benchmarks.md: what each step of issue 12 bought, measured when it was made.

These numbers come from A/B runs made while the steps were written, on the
same 2-core machine while other work loaded it (load average 3-5), so only
comparisons within one run mean anything: every end-to-end pair below ran
in one ``python -m bench`` run beside raw, with the old and the new source
tree as two modes. Microbenchmarks time one function's CPU (thread time,
median or best of several rounds). The tables above this section are the
current run's.
"""

from __future__ import annotations

KEPT = [
    (
        "Claim: the SELECT … FOR UPDATE SKIP LOCKED and the UPDATE compiled once to SQL "
        "text and run on a connection the claims thread keeps (`db/prepared.py`): no "
        "statement building, cache-key generation, pool checkout or rollback on return",
        "CPU per 10-row claim 1.70–1.95 ms → 0.32 ms (hand-written SQL on a raw "
        "connection: 0.21 ms); wall p50 4.2–4.8 → 3.1 ms. Burst of 5,000, one run: "
        "defaults-info 547 → 825 done/s (0.28× → 0.42× raw), pod CPU 1.08 → 0.71 s / 1k",
    ),
    (
        "Logs: LogRecord fields neither format prints are no longer filled in (caller "
        "frame, thread, process; the Logging HOWTO's optimisation switches)",
        "one `task … done` line, text format: 17.4 → 13.7 µs; JSON: 28.4 → 22.8 µs",
    ),
    (
        "Delivery: the three caches issue 8 removed, re-added now that they are measured: "
        "the URL check, the parsed `httpx.URL`, the literal-IP verdict",
        "URL check 19.2 → 0.6 µs, `httpx.Request` 51.7 → 18.7 µs, literal-IP verdict "
        "3.7 → 0.3 µs per timer when endpoints repeat. With the log step, burst of 5,000, "
        "two pairs in one run: defaults-info 726 → 1,024 and 860 → 1,098 done/s, pod CPU "
        "0.83 → 0.59 and 0.61 → 0.53 s / 1k",
    ),
    (
        "Outcome writes: Core statements on the writer thread's kept connection instead "
        "of an ORM session per batch",
        "CPU per write of 60 outcomes 2.33 → 0.97 ms; of 10: 1.81 → 0.72 ms",
    ),
    (
        "Outcome writes keep the hand-rendered per-row CASE (`statements.per_row`), "
        "measured against plain bound parameters as issue 8 asked",
        "CPU per write, rendered vs bound: 500 rows 3.2 vs 10.0–10.4 ms (6.4 vs 20 µs a "
        "row), 60 rows 1.75–2.7 vs 1.9–2.6 ms (even), 20 rows 1.6 vs 1.2 ms. The writer "
        "batches up to 500 outcomes, where rendering is 3× cheaper: kept",
    ),
    (
        "Start-up: the HTTP connection pool is built before the loop starts",
        "building it (CA certificates) took 27.8 ms on the loop's thread at the first "
        "timer, the start-up lateness spike the issue saw",
    ),
    (
        "Claims resume after the last full claim's row (`ClaimCursor`, `db/prepared.py`): "
        "the SELECT no longer walks the delete-marked `(status, due_at)` entries of rows "
        "just claimed; one from the oldest row at least every 0.1 s and after any hand-back",
        "server CPU of the claiming connection per 10-row claim, draining 5,000 rows: "
        "SELECT 0.6–1.7 → 0.32–0.40 ms, whole claim ~2.0 → ~1.05 ms (UPDATE 0.5–0.7 ms "
        "and COMMIT 0.15–0.2 ms are what is left). In a pod at the defaults 85% of claims "
        "resumed, and the server CPU of the pod's own connections was about 8% lower "
        "(alternating pairs, load 3–8: within noise end to end)",
    ),
    (
        "A 0.5 ms interpreter switch interval in the controller process, as the api has: "
        "a claim's three driver calls no longer wait up to 5 ms each for the loop",
        "alternating pairs, bursts of 10,000, load 3–8: defaults-info 638 → 646, "
        "401 → 762, 567 → 716 done/s; sized 487 → 859, 828 → 928. One bench run, "
        "bursts of 20,000: defaults-info 550 → 777 and 398 → 405; sized 804 → 355 "
        "during a load spike (8.8). Pod CPU per timer unchanged within noise",
    ),
    (
        "A claim that skips destinations at their limit reads candidate ids without "
        "locking, then locks those by id (`statements.claim_rows`): a locking scan locked, "
        "and read whole, every waiting row of the busy destination it passed",
        "one claim past 2,100 waiting rows with 1–15 MiB bodies: 7.4 s (whole rows), "
        "0.76 s (ids, locked), 7 ms (ids, read). The hostile trial at the defaults: "
        "6 → 23 done/s, the per-destination limit's 25 slots against a 1 s receiver. "
        "Bursts to a fast receiver do not fill a destination: unchanged (800 / 802 and "
        "839 / 806 done/s, alternating in one run)",
    ),
    (
        "Webhooks without FOLLOW_REDIRECTS go straight through the aiohttp session "
        "(`GuardedAiohttpTransport.exchange`): no `httpx.Request` / `httpx.Response` per "
        "timer; the same bytes on the wire, policy checks, httpx exceptions, 64 KiB read "
        "limit and `Retry-After` (`tests/e2e/test_direct_exchange.py`)",
        "the httpx objects were ~13% of the pod's CPU at the defaults (py-spy). Burst of "
        "10,000, two alternating pairs against main's tree, load ~2: pod CPU / 1k "
        "defaults-info 0.71 → 0.63 and 0.77 → 0.58 s, sized 0.53 → 0.47 and 0.56 → 0.35 s",
    ),
    (
        "Outcome writes are SQL text built by `statements.outcome_update` (numbers and "
        "times rendered as before, strings as driver parameters) and run with "
        "`exec_driver_sql`: no SQLAlchemy build and compile per batch",
        "CPU per write (thread time, median of 40, alternating runs against main): 10 "
        "outcomes 2.34 / 1.88 → 0.25 / 0.30 ms, 25: 2.29 / 2.35 → 0.31 / 0.33 ms, 60: "
        "2.79 / 2.48 → 0.40 / 0.43 ms. In a pod at the defaults the writes thread fell from "
        "1.10 to 0.37 s of CPU per 20,000 timers",
    ),
    (
        "The claim loop, full, is woken once a claim's worth of slots is free (or a body "
        "goes), not at every freed slot; held body characters counted as slots come and "
        "go; the lease list built only when a renewal is due",
        "at BATCH_SIZE=10 a claim waits for 5 free slots: the 4 wake-ups before it did "
        "nothing (`test_a_full_loop_wakes_once_a_claims_worth_of_slots_is_free`). With "
        "the two steps above, burst of 10,000, two alternating pairs against main, load "
        "1.6–3: defaults-info 1,452 → 2,216 and 1,282 → 1,746 done/s (0.36× → 0.43× and "
        "0.32× → 0.43× raw), pod CPU / 1k 0.61 → 0.38 and 0.71 → 0.50 s",
    ),
    (
        "Per-timer small costs: `utc_now` counted from the epoch (not "
        "`datetime.now(UTC).replace(tzinfo=None)`), the text log format's date and time "
        "formatted once a second (`TextFormatter`), the default body formatted directly "
        "(not `json.dumps`)",
        "`utc_now` 1.3–1.8 → 0.83 µs, called three or four times a timer (py-spy: 3.1% "
        "of the pod's GIL time); `report()` with its INFO line 19.7 / 19.1 → 16.5 / "
        "16.8 µs; `default_body` 4.8 → 2.3 µs",
    ),
    (
        "One claim takes the due tasks and those within the look-ahead together, the "
        "ones ahead capped by the look-ahead room in the same statement (`ahead_limit`), "
        "instead of a claim of due tasks followed by one of tasks ahead",
        "whenever the room was under a batch (always at BATCH_SIZE = MAX_IN_FLIGHT) every "
        "claim was two SELECT … FOR UPDATE SKIP LOCKED and two COMMITs: an idle pod's "
        "poll now costs one of each. Steady 190 timers/s at the defaults, worst of 5 runs, "
        "one sitting: 3.5 ms against 3.4 ms before (no change in lateness)",
    ),
    (
        "The claims and writes lanes open their kept connections at start-up",
        "the first outcome write of a process connected, with its five session SET "
        "statements, in the middle of the first burst",
    ),
    (
        "The claim's statements run on the driver's cursor inside the held connection's "
        "transaction (`prepared.driver_cursor`), not through `exec_driver_sql`; DATETIME "
        "read with `datetime.fromisoformat` (`setup.datetime_or_none`), the driver's "
        "reader kept for what it does not take",
        "a 10-row claim alone 0.71 → 0.44 ms of CPU (the same SQL through bare MySQLdb: "
        "0.31 ms); a DATETIME 1.9 → 0.19 µs, two a row. In a pod at the defaults, burst of "
        "20,000, two pairs against the tree before: claims thread 0.095 / 0.093 → 0.062 / "
        "0.065 s per 1k timers, the pod 0.54 → 0.47 / 0.49 s, 1,387 → 1,522 / 1,494 done/s "
        "(a harness polling the table every 50 ms)",
    ),
    (
        "Every controller runs on uvloop, direct mode too (`bootstrap.run_on_uvloop`; until "
        "now only DISPATCH=amqp did); a task waits for its due time with `waits.not_before`, "
        "since uvloop's millisecond timers may wake up to a millisecond early",
        "burst of 20,000, five alternating pairs on two sittings against the tree before: "
        "defaults-info pod CPU 0.37 / 0.35 / 0.36 / 0.39 / 0.34 against 0.44 / 0.38 / 0.41 / "
        "0.36 / 0.45 s per 1k timers (mean 0.36 against 0.41), 2,085–2,414 against "
        "1,871–2,378 done/s; steady 190 timers/s, worst of 5 runs, one sitting: p99 4.4 ms "
        "against 4.7 ms",
    ),
]

#: All the kept steps together, before (d2c54f0) against after, in one run.
ALL_TOGETHER = (
    "All of them, burst of 5,000, two pairs in one run: defaults-info 404 → 1,039 and "
    "670 → 1,151 done/s (0.23× → 0.60× and 0.39× → 0.67× the first raw row, 1,728 /s), "
    "pod CPU 1.30 → 0.67 and 1.01 → 0.61 s / 1k (raw 0.25–0.27)"
)

#: The pod branch's steps (direct send to utc_now) together against main (471e9a2).
POD_TOGETHER = (
    "The last four together, burst of 10,000, two alternating pairs against main's "
    "tree in one run (load 2.3): pod CPU / 1k defaults-info 0.75 → 0.56 and 0.81 → "
    "0.52 s, sized 0.55 → 0.37 and 0.61 → 0.35 s; defaults-info 994 → 1,238 and "
    "993 → 1,274 done/s, sized 1,276 → 2,312 and 1,423 → 2,187 done/s (raw 2,455–3,282)"
)

#: Found while merging main: steady lateness at the shipped defaults, one run.
MERGE_NOTE = (
    "Lateness after merging main's look-ahead cap (at most MAX_IN_FLIGHT / 2 slots for "
    "tasks claimed ahead of their time): steady at 143 timers/s, shipped defaults, two "
    "pairs in one run: p99 7.1 and 6.3 ms before the merge, 166.4 and 163.4 ms after. "
    "At 143/s a 0.6 s claim horizon needs ~86 tasks ahead of time, the cap allows 50, "
    "so the rest were claimed only once due, at the next claim. The cap now keeps only "
    "a tenth of the slots (at least half a batch) for due tasks; this page's steady "
    "runs are after that fix. That still left 90 slots for tasks ahead at the defaults, "
    "so above 90 / 0.5 s = 180 timers/s the window held more tasks than the room, and a "
    "claim cut short by the room was followed by the next only after POLL_INTERVAL: a "
    "full run at 197 timers/s showed p99 47.3-51.1 ms in all five runs (8.2-11.8 ms at "
    "181/s in the run before). Such a claim is now followed by the next once a claim's "
    "worth of tasks claimed ahead has started (test_a_window_fuller_than_the_look_ahead_"
    "room_is_claimed_as_room_frees)"
)

NOT_KEPT = [
    (
        "Prometheus children resolved once instead of `.labels(...)` per timer",
        "1.88 → 0.51 µs per timer, 0.2% of a timer's CPU: not measurable end to end",
    ),
    (
        "A QueueHandler/QueueListener taking formatting and writing off the loop thread",
        "loop thread 13.7 → 7.3 µs a line, but 14.8 µs in all: more CPU per timer, and "
        "the configuration the unit tests read synchronously would change",
    ),
    (
        "`sys.setswitchinterval(0.001)`, so the claims thread waits less for the GIL",
        "two pairs in one run: 509 and 861 vs 727 and 622 done/s at 5 ms: inconclusive "
        "(0.5 ms was measured again later and kept, above)",
    ),
    (
        "Log lines flushed by a thread every 50 ms instead of one write per line",
        "alternating pairs, bursts of 10,000, defaults-info: 514 → 601 and 499 → 487 "
        "done/s, pod CPU 1.04 → 1.00 and 0.97 → 1.10 s / 1k: not measurable under the "
        "load of the time, and a crash would lose up to 50 ms of lines",
    ),
    (
        "The claim after a full one sent to the claims lane as soon as that one's rows "
        "were back, before its tasks started (at the defaults the loop spent 6.6 ms "
        "between claims against 4.6 ms in one, 4 of its 100 slots held on average)",
        "the claims thread then ran claims back to back, but each took longer (4.1 → "
        "4.9 ms): burst of 20,000, defaults-info 1,599 and 1,554 done/s against "
        "1,640–1,656 before, pod CPU 0.57 against 0.52–0.55 s / 1k; and steady 190 "
        "timers/s, worst of 5 runs, 22.0 and 15.6 ms in two of three trials against "
        "3.1–3.5 ms without it. Reverted",
    ),
    (
        "Log lines of one event-loop turn written in one call at the turn's end",
        "`report()` with its INFO line 29.9 → 29.3 µs, the loop thread's CPU per timer "
        "in a pod 0.448 → 0.442 and 0.468 s / 1k: a line's cost is its record and its "
        "formatting (~23 µs), not the write",
    ),
    (
        "The claim's UPDATE and COMMIT sent in one call (`UPDATE …; COMMIT`, mysqlclient "
        "allows several statements a call by default), the driver's transaction ended by "
        "the repository instead of `conn.begin()`: a claim two round trips instead of three",
        "burst of 20,000, five alternating pairs on two sittings: defaults-info 0.42 / 0.41 / "
        "0.49 / 0.45 / 0.55× raw against 0.42 / 0.50 / 0.56 / 0.50 / 0.49×, pod CPU 0.43 / "
        "0.45 / 0.31 / 0.35 / 0.35 against 0.38 / 0.38 / 0.35 / 0.29 / 0.36 s per 1k: no "
        "gain the machine's noise lets through (raw alone 4,282–5,868 /s in these runs), "
        "for a transaction the code must end by hand. Not kept",
    ),
    (
        "The claim sent to the claims lane when the loop calls for it, not a turn later "
        "(`AsyncStorage.claim` a plain function returning the executor's future; the "
        "clock sample taken on the claims thread), and after a full claim the next sent "
        "without a `sleep(0)`: two turns of the loop from one claim's answer to the "
        "next claim instead of five (a unit test counted them)",
        "traced per claim, burst of 20,000, defaults-info, two alternating pairs on the "
        "Intel machine: the loop's gap between an answer and the next claim fell from "
        "1.84 to 0.25 ms (p50), and the claim's time on its thread rose from 2.67 to "
        "4.60 ms, by more: the claim now overlaps the loop's work on the tasks just "
        "claimed, and waits for the same two cores. One claim every 5.88 / 6.01 ms "
        "against 5.90 / 6.02 ms; pod CPU 0.55 against 0.50 s per 1k. Four more pairs: "
        "0.38 / 0.49 / 0.46 / 0.47× raw against 0.57 / 0.46 / 0.50 / 0.47×. Not kept",
    ),
    (
        "Two, three or four claims in flight at once, on as many claims threads, while "
        "claims come back full of due rows (the extra ones take due rows only, so the "
        "look-ahead room is unchanged)",
        "burst of 20,000, defaults-info, alternating in one sitting: two at once 0.51 / 0.55 / "
        "0.46 / 0.49 / 0.53× raw against 0.49 / 0.56 / 0.43 / 0.49 / 0.42× for one; three 0.42 / "
        "0.44×, four 0.33 / 0.34×, database CPU 0.30 and 0.40 s per 1k against 0.22: each claim "
        "added cost the database more per timer (claims skipping each other's locked rows, most "
        "likely; not traced). Two was within the noise, for a second claims connection and a "
        "shutdown that must wait for every claim in flight. Not kept",
    ),
    (
        "The claim on the loop's own thread, no thread hop: a prototype sending the "
        "claim's compiled SELECT, UPDATE and COMMIT with mysqlclient's non-blocking "
        "`send_query`, waiting for the socket with `loop.add_reader`, then "
        "`read_query_result` (the same statements and resume point; no poison rows, "
        "errors or deadlines, so never a candidate as it stood)",
        "burst of 20,000, defaults-info, three alternating pairs in one sitting: 0.45 / "
        "0.33 / 0.42× raw against 0.48 / 0.46 / 0.44× on the claims thread; pod CPU "
        "0.45 / 0.53 / 0.47 against 0.49 / 0.53 / 0.51 s per 1k. Each round trip now "
        "waits for a turn of the busy loop instead of for the thread's wake-up and the "
        "GIL: the same wait. Not built",
    ),
    (
        "`sys.setswitchinterval` at 0.1 or 0.2 ms instead of 0.5 ms",
        "traced per claim, two alternating pairs: a claim's wait for its thread 1.23 / "
        "0.83 ms at 0.5 against 1.09 / 1.11 ms at 0.1, its time on the thread 2.48 / "
        "3.82 against 2.50 / 2.78 ms: so the waits are not for the GIL "
        "(py-spy --gil: the GIL is held 48% of the time during a burst). Not kept",
    ),
]


#: Why targets 1 and 3b are still missed: where the defaults' time goes (issue 12's last stop).
WHERE_TIME_GOES = (
    "Where the time goes at the shipped defaults (burst of 20,000, INFO, CPU per thread from "
    "/proc, one pod, s per 1k timers): the loop's thread 0.39–0.41, the claims thread 0.06 (0.10 "
    "before the driver-cursor step above: 1.0 ms a claim of 10), the writes thread 0.015; sized "
    "(500/500) the loop thread takes 0.41, claims 0.03, writes 0.008. The loop thread (py-spy, "
    "GIL held): aiohttp's request 20%, request building and dispatch 8%, `report()` 10% (the INFO "
    "line 4.3%, Prometheus 5%), claim handling 10%, the rest spread thin. Throughput at the "
    "defaults is the serial claim chain, not the GIL: py-spy --gil finds it held 48% of a burst, "
    "and 4–7 of the 100 slots are held on average. Traced claim by claim (issue 12's last stop, "
    "Intel machine), one claim of 10 every 5.8–6.0 ms: 1.1–1.2 ms from the loop's call to the "
    "claims thread running (not a wait for the GIL, since the switch interval changes nothing: "
    "most likely for a core), 2.5–2.7 ms on the thread (three round trips; server time 1.85 ms: "
    "SELECT 0.60, UPDATE 0.63, COMMIT 0.62, the COMMIT's redo-log flush 0.6 ms of it on an idle "
    "server), 0.13 ms back to the loop, and 1.8 ms of loop turns before the next claim. Taking "
    "those turns away (above) moved the time into the claim, since the loop's work on the tasks "
    "just claimed and the claim then want the two cores at once; running claims side by side made "
    "the database's work per claim grow. Nor did a claim on the loop itself, without the thread "
    "hop (above). What is left is the cost of a 10-row claim's three round trips between "
    "processes on two busy cores, ten rows at a time where raw claims 500. Raw's whole pod "
    "(0.21–0.33 s per 1k with 500-row claims) costs less than our loop thread alone"
)


def lines() -> list[str]:
    out = [
        "## Issue 12, step by step",
        "",
        " ".join(__doc__.split("\n\n")[1].split()),
        "",
        "| kept | what it bought |",
        "|---|---|",
    ]
    out += [f"| {what} | {bought} |" for what, bought in KEPT]
    out += ["", ALL_TOGETHER + ".", "", POD_TOGETHER + ".", "", MERGE_NOTE + "."]
    out += ["", "| measured, not kept | why |", "|---|---|"]
    out += [f"| {what} | {why} |" for what, why in NOT_KEPT]
    out += ["", WHERE_TIME_GOES + "."]
    return out
