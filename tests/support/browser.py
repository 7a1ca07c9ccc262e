"""A real browser for the dashboard's e2e tests: Playwright driving Debian's chromium.

Playwright cannot download its own browser here, so it drives the system's
(``scripts/install-browser`` installs it). Screenshots go to
``tests/artifacts/screenshots`` (gitignored).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from tests.support.processes import REPO, Controller
from tests.support.waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "tests" / "artifacts" / "screenshots"
API_READY_S = 60


@contextmanager
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: run scripts/install-browser (as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ApiServer(Controller):
    """``python -m timer_controller api`` on a free local port."""

    def __init__(self, env: dict[str, str], *, token: str) -> None:
        self.port = free_port()
        self.token = token
        self.base_url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            {**env, "API_TOKENS": token, "API_HOST": "127.0.0.1", "API_PORT": str(self.port)},
            "api",
        )

    def wait_ready(self) -> None:
        def answering() -> bool:
            if self.proc.poll() is not None:
                return True
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(answering, timeout_s=API_READY_S, what="the api to listen")
        assert self.proc.poll() is None, f"api exited early:\n{self.output.text()}"
