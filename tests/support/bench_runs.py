"""Running a benchmark command at toy size from a test, so it never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")

#: A benchmark makes and drops its own scratch database on TEST_DATABASE_URL's server.
needs_database_server = [
    pytest.mark.db,
    pytest.mark.skipif(
        not DATABASE_URL,
        reason="TEST_DATABASE_URL is not set (e.g. mysql+mysqldb://root@127.0.0.1:3306/test); "
        "the benchmark creates and drops its own database on that server",
    ),
]


@dataclass(frozen=True)
class BenchRun:
    results: Any
    markdown: str


def run_bench(module: str, *args: str, out: Path, timeout_s: float) -> BenchRun:
    """``python -m module --db-url … args``; fails the test unless it exits 0."""
    command = [
        sys.executable, "-m", module,
        "--db-url", DATABASE_URL,
        *args,
        "--output", str(out / "bench.md"),
        "--json", str(out / "results.json"),
        "--work-dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return BenchRun(json.loads((out / "results.json").read_text()), (out / "bench.md").read_text())
