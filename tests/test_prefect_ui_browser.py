"""The Prefect UI in headless Chromium against a real server (`songpref server start`, PostgreSQL):
the round's flow run page lists its stage runs, and a stage run's page shows its summary artifact."""

import json
import shutil
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_server import REPO, songpref

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = REPO / "tests" / "artifacts" / "prefect_stage_run.png"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None, reason=f"{CHROMIUM} is missing")]  # fmt: skip


def test_the_ui_shows_the_rounds_stage_runs_and_their_artifacts(postgres_prefect_server, tmp_path):
    from playwright.sync_api import sync_playwright

    server = postgres_prefect_server
    config = tmp_path / "c.yaml"
    config.write_text("seed: 9\nlyrics: {count: 8, shard_size: 4}\n", encoding="utf-8")
    run = songpref("round", "run", "--config", str(config), "--out", str(tmp_path / "r"), "--until", "conditions", env=server.env())
    assert run.returncode == 0, run.stderr
    round_run = json.loads((tmp_path / "r" / "manifest.json").read_text())["flow_run"]["id"]
    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        stages = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[round_run])))
    lyrics_run = next(r for r in stages if r.name == "lyrics")
    ui = server.api_url.removesuffix("/api")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{ui}/runs/flow-run/{round_run}")
            page.wait_for_selector("text=Subflow Runs", timeout=60_000)
            assert "Completed" in page.inner_text("body")
            page.get_by_text("Subflow Runs", exact=True).first.click()
            page.wait_for_selector("text=conditions", timeout=30_000)
            shown = page.inner_text("body")
            assert "lyrics" in shown and "conditions" in shown

            page.goto(f"{ui}/runs/flow-run/{lyrics_run.id}")
            page.wait_for_selector("text=Artifacts", timeout=60_000)
            page.get_by_text("Artifacts", exact=True).first.click()
            page.wait_for_selector("text=lyrics-summary", timeout=30_000)
            assert "lyrics stage" in page.inner_text("body")  # the artifact's description
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
