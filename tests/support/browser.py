"""A real browser for the dashboard's e2e tests: Playwright driving Debian's chromium.

Playwright cannot download its own browser here, so it drives the system's
(``scripts/install-browser`` installs it). Screenshots go to
``tests/artifacts/screenshots`` (gitignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from tests.support.processes import REPO

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "tests" / "artifacts" / "screenshots"


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
