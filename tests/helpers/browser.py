"""Headless Chromium for UI tests: Debian's /usr/bin/chromium driven by Playwright.

Nothing here downloads a browser (never `playwright install`): Playwright drives the system Chromium
through ``executable_path``. Without it the tests skip with one line, except under CI (env ``CI`` set),
where they fail: `.ci/run` installs chromium with apt-get first.

Fixtures: ``chromium`` (the executable), ``browser`` (per module) and ``screenshot_dir``, the folder a test
saves its screenshots to: ``$SRL_SCREENSHOT_DIR`` when set, else a temporary folder; the path is printed
so a failure can be looked at.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("SRL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_chromium(config: pytest.Config | None = None) -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM}: install Debian's `chromium` (apt-get install chromium) to run the browser tests"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: .ci/run should have installed it)", pytrace=False)
    # `pytest -q` lists no skip reasons: say it once here (a module fixture's skip is not re-run per test).
    if config is not None:
        say(config, f"browser tests skipped: {message}")
    pytest.skip(message)


def say(config: pytest.Config, line: str) -> None:
    """One line on the terminal, past pytest's output capture (shown on passing runs too)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def chromium(request) -> Path:
    """The Chromium executable; skips (fails under CI) without one. A module that lists it first in
    ``pytest.mark.usefixtures`` skips before any of its session fixtures (servers) start."""
    return require_chromium(request.config)


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in the main thread while
# it is open, and every later test calling asyncio.run() would fail ("cannot be called from a running loop").
@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator["playwright.sync_api.Browser"]:  # noqa: F821
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshot_dir(request, tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SRL_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    say(request.config, f"browser screenshots: {folder}")
    return folder
