"""The ranking page in headless Chromium against a real server: sign in, play a clip, rank by
keyboard and by drag and drop, submit, and find the ranking in the database."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from annotate_helpers import REPO, ServerProcess, admin_headers, build_round

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = REPO / "tests" / "artifacts" / "annotate_ranking.png"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None, reason=f"{CHROMIUM} is missing (apt-get install chromium)")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = build_round(tmp_path_factory.mktemp("round"), prompts=1, per_prompt=3, seconds=3.0)
    db_url = f"sqlite:///{root / 'browser.db'}"
    server = ServerProcess(root, db_url, root.parent / "server.log")
    with httpx.Client(base_url=server.url, headers=admin_headers(), timeout=20) as admin:
        assert admin.post("/admin/campaigns", json={"name": "web", "k": 3, "overlap": 1}).status_code == 201
        token = admin.post("/admin/campaigns/web/annotators", json={"names": ["ann"]}).json()["annotators"][0]["token"]
    yield server, token, db_url
    server.stop()


def order(page) -> list[str]:
    return page.eval_on_selector_all("#ranking .item", "items => items.map(i => i.dataset.candidateId)")


def test_sign_in_listen_rank_and_submit(live):
    from playwright.sync_api import sync_playwright

    server, token, db_url = live
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required"])  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/")
            page.fill("#token", token)
            page.click("#signin")
            page.wait_for_selector("#ranking")
            assert "0 / 1 done" in page.inner_text("#progress")

            # Play the first clip: the audio is fetched (Range requests) and decoded.
            state = page.evaluate("""async () => {
                const audio = document.querySelector('#ranking audio');
                audio.muted = true;
                await audio.play();
                await new Promise(r => setTimeout(r, 600));
                return {time: audio.currentTime, ready: audio.readyState, error: audio.error && audio.error.code};
            }""")
            assert state["error"] is None and state["ready"] >= 2 and state["time"] > 0, state

            # Keyboard: the third song to first place, then the (new) second one down.
            start = order(page)
            page.focus(f'li[data-candidate-id="{start[2]}"]')
            page.keyboard.press("1")
            assert order(page) == [start[2], start[0], start[1]]
            page.focus(f'li[data-candidate-id="{start[0]}"]')
            page.keyboard.press("ArrowDown")
            assert order(page) == [start[2], start[1], start[0]]
            # Drag and drop: the last song onto the top of the first.
            page.drag_and_drop(f'li[data-candidate-id="{start[0]}"] .label', f'li[data-candidate-id="{start[2]}"] .label',
                               target_position={"x": 5, "y": 2})  # fmt: skip
            final = order(page)
            assert final == [start[0], start[2], start[1]], final
            assert page.inner_text('li[data-candidate-id="%s"] .place' % start[0]) == "1"

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            print(f"screenshot of the ranking page: {SCREENSHOT}")

            page.click("#submit")
            page.wait_for_selector("text=All done")
            assert "1 / 1 done" in page.inner_text("#progress")
        finally:
            browser.close()
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT candidate_ids, ranks, tied, source, duration_s FROM submission")).all()
    engine.dispose()
    assert len(rows) == 1
    candidate_ids, ranks, tied, source, duration = rows[0]
    assert json.loads(candidate_ids) == final  # stored best first, as ranked on the page
    assert json.loads(ranks) == [1, 2, 3] and not tied and source == "web" and duration > 0
