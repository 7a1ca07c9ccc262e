"""The ``timer-controller`` command as a real process, run to completion."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from tests.support.processes import REPO
from timer_controller.settings import FILE_SUFFIX, Settings, WorkerSettings, env_name

# Every variable the settings read: none may leak in from the developer's shell.
_SETTING_VARS = frozenset(
    env_name(name, field) + suffix
    for model in (Settings, WorkerSettings)
    for name, field in model.model_fields.items()
    for suffix in ("", FILE_SUFFIX)
) | {"HOSTNAME"}


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(env: Mapping[str, str], *args: str, timeout_s: float = 60) -> CliResult:
    """``python -m timer_controller *args`` with exactly ``env`` as its settings."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in _SETTING_VARS and not k.startswith(("DB_", "TEST_"))
    }
    full_env.update({"PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"})
    full_env.update(env)
    done = subprocess.run(
        [sys.executable, "-m", "timer_controller", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=timeout_s,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
