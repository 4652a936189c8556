"""Screenshot the performance report's gallery in the Dagster UI, as a user sees it after `make demo`.

    .venv/bin/python docs/ui_screenshot.py --partition plant --out docs/ui-gallery.png

Starts `dagster-webserver` on the instance in $DAGSTER_HOME (default .dagster_home) on a free loopback port,
opens the `performance_report` materialization of the partition in Debian's headless Chromium (Playwright,
never a downloaded browser), opens the `gallery` metadata entry and saves a PNG; then stops the webserver.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"dagster-webserver did not answer at {url} within {timeout_s:.0f} s")
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partition", default="plant")
    parser.add_argument("--out", default=str(REPO / "docs" / "ui-gallery.png"))
    parser.add_argument("--chromium", default=os.environ.get("SRL_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        raise SystemExit(f"no Chromium at {args.chromium}: apt-get install chromium (never `playwright install`)")
    os.environ.setdefault("DAGSTER_HOME", str(REPO / ".dagster_home"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(url)
        from playwright.sync_api import expect, sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{url}/assets/performance_report?view=events&partition={args.partition}")
            skip = page.get_by_role("button", name="Skip")  # a fresh instance greets with a newsletter dialog
            try:
                skip.click(timeout=5_000)
            except Exception:  # noqa: BLE001 - no greeting on this instance: nothing to dismiss
                pass
            row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="gallery", exact=True))
            row.get_by_text("Show Markdown").click()
            dialog = page.get_by_role("dialog").filter(has=page.locator("img[src^='data:image/png']"))
            expect(dialog.locator("img[src^='data:image/png']").first).to_be_visible(timeout=30_000)
            page.wait_for_timeout(500)  # the dialog fades in
            dialog.screenshot(path=args.out)
            browser.close()
        print(f"saved {args.out}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
