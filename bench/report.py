"""Markdown for docs/benchmarks.md: tables, ratios and the targets' verdicts."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.api_creates import ApiResult
from bench.claim_latency import BigTableResult
from bench.hostile import RSS_PROMISE_MB
from bench.metrics import TrialResult


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def _find(
    results: Sequence[TrialResult], scenario: str, mode: str, pods: int | None = None
) -> TrialResult | None:
    for r in results:
        if r.scenario == scenario and r.mode == mode and (pods is None or r.pods == pods):
            return r
    return None


def _header(spec: str) -> list[str]:
    """Header and alignment rows; '_' stands for a space inside a column name."""
    names = [n.replace("_", " ") for n in spec.split()]
    align = ["---" if n in ("mode", "notes") else "---:" for n in names]
    return ["| " + " | ".join(names) + " |", "|" + "|".join(align) + "|"]


def _ratio(value: float, base: TrialResult | None) -> str:
    if base is None or not math.isfinite(base.done_per_s) or base.done_per_s == 0:
        return "–"
    return f"{value / base.done_per_s:,.2f}×"


def _notes(r: TrialResult) -> str:
    notes = [r.note] if r.note else []
    if r.done < r.tasks and not r.bounded:
        notes.append(f"{r.tasks - r.done} not done")
    if r.unseen_done or r.seen_not_done:
        notes.append(
            f"{r.unseen_done} done but not received, {r.seen_not_done} received but not done"
        )
    if any(code != 0 for code in r.exit_codes):
        notes.append(f"exit codes {r.exit_codes}")
    return "; ".join(notes)


def throughput_table(
    results: Sequence[TrialResult], all_results: Sequence[TrialResult]
) -> list[str]:
    seed = _find(all_results, "burst", "seed")
    lines = _header(
        "mode pods tasks done done/s fired/s ×_seed ×_raw dups CPU_s_/_1k peak_RSS_MiB"
        " DB_CPU_s_/_1k receiver_CPU_% notes"
    )
    for r in results:
        raw = _find(all_results, r.scenario, "raw", r.pods) or _find(all_results, "burst", "raw")
        lines.append(
            f"| {r.mode} | {r.pods} | {r.tasks:,} | {r.done:,} | {_num(r.done_per_s)} "
            f"| {_num(r.fired_per_s)} | {_ratio(r.done_per_s, seed)} | {_ratio(r.done_per_s, raw)} "
            f"| {r.duplicates} | {_num(r.cpu_s_per_1k, 2)} | {_num(r.peak_rss_mb)} "
            f"| {_num(r.db_cpu_s_per_1k, 2)} | {_num(r.receiver_cpu_pct, 0)} | {_notes(r)} |"
        )
    return lines


def steady_table(results: Sequence[TrialResult]) -> list[str]:
    lines = _header(
        "mode pods rate/s tasks done lateness_p50_ms p99_ms max_ms min_ms dups CPU_s_/_1k notes"
    )
    for r in results:
        late = r.lateness_ms
        lines.append(
            f"| {r.mode} | {r.pods} | {_num(r.rate_per_s)} | {r.tasks:,} | {r.done:,} "
            f"| {_num(late.get('p50'))} | {_num(late.get('p99'))} | {_num(late.get('max'))} "
            f"| {_num(late.get('min'))} | {r.duplicates} | {_num(r.cpu_s_per_1k, 2)} "
            f"| {_notes(r)} |"
        )
    return lines


def big_table_lines(big: BigTableResult) -> list[str]:
    lines = [
        "| table | rows | claim by | p50 ms | p99 ms | mean ms | p50 × empty |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    empty = {t.method: t for t in big.timings if t.variant == "empty"}
    for t in big.timings:
        base = empty.get(t.method)
        ratio = t.stat("p50") / base.stat("p50") if base and base.ms else math.nan
        lines.append(
            f"| {t.variant} | {t.rows:,} | {t.method} | {_num(t.stat('p50'), 2)} "
            f"| {_num(t.stat('p99'), 2)} | {_num(t.stat('mean'), 2)} | {_num(ratio, 2)}× |"
        )
    if big.note:
        lines += ["", f"Note: {big.note}."]
    lines += ["", "EXPLAIN of the claim on the big table:", "", "```", big.explain, "```"]
    return lines


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("PASS" if ok else "FAIL")


Target = tuple[str, str, bool | None]


def _per_raw(r: TrialResult | None, raw: TrialResult | None, attr: str) -> float:
    if r is None or raw is None:
        return math.nan
    base = getattr(raw, attr)
    return float(getattr(r, attr) / base) if base else math.nan


def _throughput_targets(results: Sequence[TrialResult]) -> list[Target]:
    seed, raw = _find(results, "burst", "seed"), _find(results, "burst", "raw")
    shipped, sized = _find(results, "burst", "defaults-info"), _find(results, "burst", "controller")
    x_seed = _per_raw(shipped, seed, "done_per_s")
    x_raw = _per_raw(shipped, raw, "done_per_s")
    complete = shipped is not None and shipped.done == shipped.tasks
    sized_x = _per_raw(sized, raw, "done_per_s")
    return [
        (
            "1. shipped defaults, INFO logs (burst): ≥ 100× seed and ≥ 0.6× raw",
            f"{_num(x_seed, 0)}× seed, {_num(x_raw, 2)}× raw",
            None if math.isnan(x_seed + x_raw) else x_seed >= 100 and x_raw >= 0.6 and complete,
        ),
        (
            "2. sized configuration (burst): ≥ 0.8× raw",
            f"{_num(sized_x, 2)}× raw",
            None if math.isnan(sized_x) else sized_x >= 0.8,
        ),
    ]


def _cpu_targets(results: Sequence[TrialResult]) -> list[Target]:
    raw = _find(results, "burst", "raw")
    sized, shipped = _find(results, "burst", "controller"), _find(results, "burst", "defaults-info")
    rows: list[Target] = []
    for name, r, attr, limit in (
        ("3a. pod CPU per timer, sized: ≤ 1.25× raw's", sized, "cpu_s_per_1k", 1.25),
        ("3b. pod CPU per timer, shipped defaults: ≤ 1.6× raw's", shipped, "cpu_s_per_1k", 1.6),
        ("4. DB CPU per timer, shipped defaults: ≤ 2× raw's", shipped, "db_cpu_s_per_1k", 2.0),
    ):
        ratio = _per_raw(r, raw, attr)
        mine, base = getattr(r, attr, None), getattr(raw, attr, None)
        value = f"{_num(ratio, 2)}× ({_num(mine, 2)} vs {_num(base, 2)} s / 1k)"
        rows.append((name, value, None if math.isnan(ratio) else ratio <= limit))
    return rows


def _lateness_target(results: Sequence[TrialResult]) -> Target:
    runs = [r for r in results if r.scenario == "steady" and r.mode == "defaults-info"]
    p99s = [r.lateness_ms.get("p99", math.nan) for r in runs]
    name = "5. steady p99 lateness, shipped defaults: ≤ 10 ms, worst run"
    if not p99s or any(math.isnan(p) for p in p99s):
        return name, "–", None
    worst = max(p99s)
    listed = ", ".join(_num(p) for p in p99s)
    return name, f"{_num(worst)} ms (worst of {len(p99s)} runs: {listed})", worst <= 10


def _kept_targets(results: Sequence[TrialResult], big: BigTableResult | None) -> list[Target]:
    rows: list[Target] = []
    four, one = _find(results, "pods", "controller", 4), _find(results, "pods", "controller", 1)
    name = "6. 0 duplicates with 4 pods (all fired, all done)"
    if four:
        clean = four.duplicates == 0 and four.done == four.tasks == four.unique_fired
        rows.append((name, f"{four.duplicates} dups, {four.done:,}/{four.tasks:,} done", clean))
    else:
        rows.append((name, "–", None))
    if four and one:
        rows.append(
            (
                "6. 4 pods faster than 1",
                f"{_num(four.done_per_s)} vs {_num(one.done_per_s)} /s",
                four.done_per_s > one.done_per_s,
            )
        )
    else:
        rows.append(("6. 4 pods faster than 1", "–", None))
    rows.append(_big_target(big))
    rss = _find(results, "rss", "controller")
    rss_ok = None if rss is None or math.isnan(rss.peak_rss_mb) else rss.peak_rss_mb <= 150
    rows.append(
        (
            "6. peak RSS per pod at MAX_IN_FLIGHT=1000 ≤ 150 MB",
            f"{_num(rss.peak_rss_mb if rss else None)} MiB",
            rss_ok,
        )
    )
    rows.append(_hostile_target(_find(results, "rss-hostile", "defaults")))
    return rows


def targets(
    results: Sequence[TrialResult], big: BigTableResult | None, api: ApiResult | None = None
) -> list[str]:
    """Issue 12's targets, then the others kept, each with this run's number and verdict."""
    rows = _throughput_targets(results) + _cpu_targets(results)
    rows += [_lateness_target(results), *_kept_targets(results, big)]
    rows += _api_targets(api)
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {_verdict(ok)} |" for name, value, ok in rows]
    return lines


def _hostile_target(trial: TrialResult | None) -> Target:
    name = f"peak RSS at the defaults under hostile input ≤ {RSS_PROMISE_MB:g} MB, rows as expected"
    if trial is None or math.isnan(trial.peak_rss_mb):
        return name, "–", None
    ok = trial.peak_rss_mb <= RSS_PROMISE_MB and not trial.note
    return name, f"{_num(trial.peak_rss_mb)} MiB{'; ' + trial.note if trial.note else ''}", ok


API_SINGLE_TARGET = "api single creates ≥ 1,000/s at 50 clients, p99 ≤ 50 ms"
API_BATCH_TARGET = "api batch creates ≥ 20,000 timers/s and ≥ 0.5× raw multi-row INSERT"


def _api_targets(api: ApiResult | None) -> list[tuple[str, str, bool | None]]:
    single = api.find("api single") if api else None
    batch = api.find("api batch") if api else None
    raw = api.find("raw multi-row") if api else None
    rows: list[tuple[str, str, bool | None]] = []
    if single is None:
        rows.append((API_SINGLE_TARGET, "–", None))
    else:
        rate, p99 = single.timers_per_s, single.stat(99)
        ok = rate >= 1000 and p99 <= 50 and single.errors == 0
        rows.append((API_SINGLE_TARGET, f"{_num(rate, 0)}/s, p99 {_num(p99)} ms", ok))
    if batch is None or raw is None:
        rows.append((API_BATCH_TARGET, "–", None))
    else:
        ratio = batch.timers_per_s / raw.timers_per_s
        ok = batch.timers_per_s >= 20_000 and ratio >= 0.5 and batch.errors == 0
        rows.append((API_BATCH_TARGET, f"{_num(batch.timers_per_s, 0)}/s, {ratio:.2f}× raw", ok))
    return rows


def api_table(api: ApiResult) -> list[str]:
    lines = [
        "| mode | clients | timers | requests | timers/s | p50 ms | p99 ms | api CPU ms / request "
        "| client CPU ms / request | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in api.timings:
        cpu = None if t.api_cpu_s is None else t.api_cpu_s * 1000 / t.requests
        client = t.client_cpu_s * 1000 / t.requests
        lines.append(
            f"| {t.mode} | {t.clients} | {t.timers:,} | {t.requests:,} | {_num(t.timers_per_s, 0)} "
            f"| {_num(t.stat(50), 2)} | {_num(t.stat(99), 2)} | {_num(cpu, 2)} | {_num(client, 2)} "
            f"| {t.errors} |"
        )
    if api.note:
        lines += ["", f"Note: {api.note}."]
    return lines


def _big_target(big: BigTableResult | None) -> Target:
    name = "6. big-table claim p50 ≤ 1.5× empty (controller's claim)"
    if big is None:
        return name, "–", None
    by = {(t.variant, t.method): t for t in big.timings}
    method = "controller" if ("big", "controller") in by else "sql"
    if ("big", method) not in by or ("empty", method) not in by:
        return name, "–", None
    ratio = by["big", method].stat("p50") / by["empty", method].stat("p50")
    return name, f"{ratio:.2f}× ({method})", ratio <= 1.5
