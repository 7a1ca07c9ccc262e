"""Real processes for the e2e tier: controllers and the local receiver."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
RECEIVER = REPO / "bench" / "receiver.py"


class OutputReader:
    """Collects a process's stdout lines on a thread, so waits never block on a pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self, timeout_s: float = 5) -> None:
        self._thread.join(timeout_s)


class Receiver:
    """``bench/receiver.py`` in its own process, on a free port."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(RECEIVER), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = OutputReader(self.proc)
        first = wait_until(
            lambda: self.output.lines[:1] or self.proc.poll() is not None,
            timeout_s=15,
            what="the receiver to listen",
        )
        if first is True:
            raise RuntimeError(f"receiver exited: {self.output.text()}")
        self.base_url = self.output.lines[0].removeprefix("listening on ").strip()
        self._http = httpx.Client(base_url=self.base_url, timeout=10)

    def url(self, path: str = "/ok") -> str:
        return self.base_url + path

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self._http.get("/_stats").json()
        return result

    def records(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._http.get("/_records").json()
        return result

    def stop(self) -> None:
        self._http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Controller:
    """``python -m timer_controller`` with the given environment."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "TEST_"))}
        full_env.update({"LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
        full_env.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "timer_controller", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            cwd=REPO,
        )
        self.output = OutputReader(self.proc)

    def wait_started(self, timeout_s: float = 30) -> None:
        wait_until(
            lambda: "started:" in self.output.text() or self.proc.poll() is not None,
            timeout_s=timeout_s,
            what="the controller to start",
        )
        assert self.proc.poll() is None, f"controller exited early:\n{self.output.text()}"

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout_s: float = 30) -> int:
        code = self.proc.wait(timeout_s)
        self.output.join()
        return code

    def stop(self) -> None:
        self.terminate()
        try:
            self.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait(10)

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.lines if line.startswith("{")]


_LISTENING = re.compile(r"api listening on http://[^:]+:(\d+)")


class Api(Controller):
    """``python -m timer_controller api`` on a free port (API_PORT=0 unless given).

    ``wait_started`` reads the port it got from its start-up line.
    """

    def __init__(self, env: dict[str, str], *args: str) -> None:
        super().__init__({"API_HOST": "127.0.0.1", "API_PORT": "0", **env}, "api", *args)
        self.base_url = ""

    def wait_started(self, timeout_s: float = 30) -> None:
        found = wait_until(
            lambda: _LISTENING.search(self.output.text()) or self.proc.poll() is not None,
            timeout_s=timeout_s,
            what="the api to listen",
        )
        assert isinstance(found, re.Match), f"api exited early:\n{self.output.text()}"
        self.base_url = f"http://127.0.0.1:{found.group(1)}"

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for this api, sending ``token`` as the bearer token if given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
