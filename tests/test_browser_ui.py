"""A real browser on the UIs: headless Chromium (Debian's, through Playwright) drives the Dagster UI of the
session's instance, which the tiny run materialized (``tiny_training_job``), and the API's /docs page.

Without Chromium the module skips (fails under CI) before any server starts. Screenshots go to
``$SRL_SCREENSHOT_DIR`` (else a temporary folder; the path is printed); each test also saves its last page
at teardown, so a failure can be looked at.
"""

from __future__ import annotations

import time

import pytest

from helpers.dagster_server import TINY_PARTITION
from srl_assets.definitions import defs

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402

# Listed first, the session fixture `chromium` is set up (or skips) before the servers' session fixtures.
pytestmark = pytest.mark.usefixtures("chromium")

UI_TIMEOUT_MS = 30_000  # a cold page on two busy cores (the graph's layout runs in a web worker)


@pytest.fixture
def page(browser, screenshot_dir, request):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    yield page
    page.screenshot(path=screenshot_dir / f"{request.node.name}-last.png", full_page=True)
    context.close()


def _shot(page, screenshot_dir, name: str) -> None:
    path = screenshot_dir / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")


def test_asset_graph_lists_every_asset(dagster_server, page, screenshot_dir):
    names = sorted(key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys())
    page.goto(f"{dagster_server.url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    expect(page.get_by_text("performance", exact=True).first).to_be_visible()  # the graph's groups are laid out
    # "Expand all groups" (the graph settings menu's shortcut ⌥E): every asset node instead of one box per group.
    page.locator("body").click(position={"x": 900, "y": 700})
    page.keyboard.press("Alt+KeyE")
    for name in names:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    _shot(page, screenshot_dir, "asset-graph")
    assert {"performance_report", "weaknesses", "model_selection", "rlvr_checkpoint"} <= set(names)


def test_performance_report_shows_its_table_and_pass_rate_plot(dagster_server, tiny_training_job, page,
                                                               screenshot_dir):
    page.goto(f"{dagster_server.url}/assets/performance_report?view=events&partition={TINY_PARTITION}")
    expect(page.get_by_text(f"materialized in run {tiny_training_job.id[:8]}")).to_be_visible()

    def metadata_row(label: str):
        return page.get_by_role("row").filter(has=page.get_by_role("cell", name=label, exact=True))

    # The Markdown table renders as a table: a row per candidate with its pass rate and 95% interval.
    table = metadata_row("table").locator("table").first
    expect(table).to_contain_text("pass rate (95% CI)")
    for candidate in ("base", "srl", "rlvr"):
        expect(table.get_by_role("cell", name=candidate, exact=True)).to_have_count(1)
    table.scroll_into_view_if_needed()  # the page scrolls inside a pane: a full-page shot would miss it
    _shot(page, screenshot_dir, "performance-report")

    # The plot is Markdown holding a PNG: the UI opens it in a dialog, where the image decodes.
    metadata_row("plot").get_by_text("Show Markdown").click()
    image = page.get_by_role("dialog").locator("img[src^='data:image/png']")
    expect(image).to_be_visible()
    width, height, alt = image.evaluate("img => [img.naturalWidth, img.naturalHeight, img.alt]")
    assert width > 100 and height > 100 and TINY_PARTITION in alt
    _shot(page, screenshot_dir, "performance-report-plot")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)

    # The gallery: what base, SRL and RLVR wrote for the first held-out tasks, rendered, with each verdict.
    metadata_row("gallery").get_by_text("Show Markdown").click()
    gallery = page.get_by_role("dialog")
    thumbnails = gallery.locator("img[src^='data:image/png']")
    expect(thumbnails.first).to_be_visible()
    assert thumbnails.count() >= 3, "one rendered output per candidate at least"
    assert all(w > 50 for w in thumbnails.evaluate_all("imgs => imgs.map(i => i.naturalWidth)"))
    for candidate in ("base", "srl", "rlvr"):
        expect(gallery.get_by_role("columnheader", name=candidate, exact=False).first).to_be_visible()
    page.wait_for_timeout(400)  # the dialog fades in: let the screenshot show it settled
    _shot(page, screenshot_dir, "performance-report-gallery")


_RUNS_OF_SENSOR = """{ runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: "weakness_sensor"}]}) {
  ... on Runs { results { runId status tags { key value } } } } }"""


def _sensor_runs(server) -> list[dict]:
    return server.graphql(_RUNS_OF_SENSOR)["runsOrError"]["results"]


FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def _wait_for_status(server, run_id: str, until: set[str], timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    while (status := next(r["status"] for r in _sensor_runs(server) if r["runId"] == run_id)) not in until:
        assert time.monotonic() < deadline, f"run {run_id} still {status} after {timeout_s:.0f}s (waiting for {until})"
        time.sleep(0.5)
    return status


def test_a_run_started_by_weakness_sensor_shows_with_its_tags(dagster_server, tiny_training_job, page,
                                                              screenshot_dir):
    """The daemon ticks the real sensor on the tiny run's weaknesses; its run carries the sensor's tags."""
    node = dagster_server.graphql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name location "
                                  "{ name } } } } }")["repositoriesOrError"]["nodes"][0]
    selector = {"repositoryLocationName": node["location"]["name"], "repositoryName": node["name"],
                "sensorName": "weakness_sensor"}
    started = dagster_server.graphql("""mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
        __typename ... on Sensor { sensorState { id } } ... on PythonError { message } } }""", {"s": selector})
    assert started["startSensor"]["__typename"] == "Sensor", started
    try:
        deadline = time.monotonic() + 60
        while not (runs := _sensor_runs(dagster_server)):
            assert time.monotonic() < deadline, f"weakness_sensor requested no run in 60s\n{dagster_server.logs()}"
            time.sleep(0.5)
    finally:
        # One tick is enough; other tests' weaknesses must not start more runs on the shared instance.
        dagster_server.graphql("mutation($id: String!) { stopSensor(id: $id) { __typename } }",
                               {"id": started["startSensor"]["sensorState"]["id"]})
    run = runs[0]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/partition"] == TINY_PARTITION and tags["srl/trigger"] == "weakness" and tags["srl/weak_skills"]
    # The retraining run itself is the full default pipeline: stop it, it only has to show. Once STARTED:
    # a run the queue is still handing to a worker cannot be terminated yet.
    _wait_for_status(dagster_server, run["runId"], {"STARTED", *FINISHED})
    terminated = dagster_server.graphql("mutation($id: String!) { terminateRun(runId: $id) { __typename "
                                        "... on TerminateRunFailure { message } } }", {"id": run["runId"]})
    assert terminated["terminateRun"]["__typename"] in ("TerminateRunSuccess", "TerminateRunFailure"), terminated
    # Usually CANCELED; a run that finished (or whose interrupted step failed) first ends otherwise.
    final = _wait_for_status(dagster_server, run["runId"], FINISHED)

    page.goto(f"{dagster_server.url}/runs")
    # The runs table is a grid of divs: the row is the nearest box holding the run's link and its launcher's.
    run_link = page.get_by_role("link", name=f"run {run['runId'][:8]}")
    expect(run_link).to_be_visible()
    row = run_link.locator("xpath=ancestor::*[.//a[normalize-space()='weakness_sensor']][1]")
    expect(row).to_contain_text("weakness_sensor")  # "Launched by": the sensor
    expect(row).to_contain_text(final.capitalize())  # the run's status, as the UI words it
    expect(row).to_contain_text(f"partition: {TINY_PARTITION}")
    expect(row).to_contain_text("srl/trigger: weakness")
    expect(row).to_contain_text(f"srl/weak_skills: {tags['srl/weak_skills']}"[:40])
    _shot(page, screenshot_dir, "runs-weakness-sensor")


def test_api_docs_render_in_the_browser(serving_api, page, screenshot_dir):
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(f"{serving_api.url}/docs")
    external = [src for src in page.locator("script[src], link[rel=stylesheet]").evaluate_all(
        "els => els.map(e => e.src || e.href)") if not src.startswith(serving_api.url)]
    # Nothing outside loopback is reachable here or in a studio's closed network: the page's assets are the app's.
    assert not external, f"/docs loads Swagger UI from outside the service: {external}"
    operations = page.locator(".swagger-ui .opblock")
    try:
        expect(operations.first).to_be_visible(timeout=15_000)
    except AssertionError as exc:
        raise AssertionError(f"Swagger UI did not render at {serving_api.url}/docs; requests that failed: "
                             f"{failed} (the docs page must not need a CDN: nothing outside loopback is "
                             "reachable here)") from exc
    expect(page.locator(".swagger-ui .title")).to_contain_text("SRL platform serving API")
    expect(page.locator(".swagger-ui")).to_contain_text("/v1/training-jobs")
    _shot(page, screenshot_dir, "api-docs")
