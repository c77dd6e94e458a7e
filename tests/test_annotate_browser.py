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


DASHBOARD_SHOT = REPO / "tests" / "artifacts" / "annotate_dashboard.png"
TASK_SHOT = REPO / "tests" / "artifacts" / "annotate_task_with_lyrics.png"


def rank_all(url: str, token: str, order) -> None:
    """One annotator through the API: every task they are handed, ranked by `order(candidate ids)`."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=20) as client:
        while (task := client.get("/api/next").json()["task"]) is not None:
            ids = order([c["candidate_id"] for c in task["candidates"]])
            client.post("/api/submit", json={"task_id": task["task_id"], "candidate_ids": ids, "ranks": list(range(1, len(ids) + 1))}).raise_for_status()


@pytest.fixture(scope="module")
def campaign_live(tmp_path_factory):
    """3 prompts x 6 songs, k=3, overlap 3, a gold task per prompt; three careful annotators rank
    lower-numbered songs first, "spam" ranks them last (and so fails gold)."""
    root = build_round(tmp_path_factory.mktemp("round"), prompts=3, per_prompt=6, seconds=2.0, conditions=True)
    server = ServerProcess(root, f"sqlite:///{root / 'dashboard.db'}", root.parent / "server.log")
    with httpx.Client(base_url=server.url, headers=admin_headers(), timeout=20) as admin:
        gold = [{"prompt_id": f"prompt{p}", "answer": f"p{p}c0"} for p in range(3)]
        assert admin.post("/admin/campaigns", json={"name": "qc", "k": 3, "overlap": 3, "gold": gold}).status_code == 201
        made = admin.post("/admin/campaigns/qc/annotators", json={"names": ["ann", "bob", "cat", "spam", "zed"]}).json()["annotators"]
    tokens = {a["annotator_id"]: a["token"] for a in made}
    for name in ("ann", "bob", "cat", "spam"):
        rank_all(server.url, tokens[name], lambda ids, name=name: sorted(ids, reverse=name == "spam"))
    yield server, tokens
    server.stop()


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                                                      "--disable-component-update", "--no-first-run"])  # fmt: skip


def test_admin_dashboard_shows_progress_quality_flags_and_exports(campaign_live):
    from playwright.sync_api import sync_playwright

    server, _ = campaign_live
    with httpx.Client(base_url=server.url, headers=admin_headers(), timeout=20) as admin:
        quality = admin.get("/admin/campaigns/qc/quality").json()
        tasks = admin.get("/admin/campaigns/qc/tasks").json()
        overall = admin.get("/admin/campaigns/qc/progress").json()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            assert page.goto(f"{server.url}/admin/dashboard").status == 401  # no admin cookie, no page
            page.goto(f"{server.url}/admin/")
            page.fill("#token", "not-the-admin-token-at-all")
            page.click("#signin")
            assert "not the admin token" in page.inner_text(".error")
            page.fill("#token", admin_headers()["Authorization"].split()[1])
            page.click("#signin")
            row = page.wait_for_selector('#campaigns tr[data-campaign="qc"]')
            assert f"{overall['submissions']} / {overall['judgements_wanted']}" in row.inner_text()
            page.click("text=qc")
            page.wait_for_selector("#annotators")
            alpha = quality["alpha"]
            assert f"{alpha['alpha']:.3f}" in page.inner_text("#alpha")
            assert f"[{alpha['ci_low']:.3f}, {alpha['ci_high']:.3f}]" in page.inner_text("#alpha-interval")
            spam = page.inner_text('#annotators tr[data-annotator="spam"]')
            spam_row = next(a for a in quality["annotators"] if a["annotator_id"] == "spam")
            assert spam_row["flagged"] and "yes" in spam and f"{spam_row['gold_accuracy']:.2f}" in spam
            assert "gold accuracy" in page.inner_text("#flagged") and "spam" in page.inner_text("#flagged")
            assert "no" in page.inner_text('#annotators tr[data-annotator="ann"]')
            assert page.inner_text('#annotators tr[data-annotator="zed"]').split("\t")[1].strip() == "0"  # signed up, ranked nothing
            assert page.locator("#tasks tbody tr").count() == len(tasks) == overall["tasks"]
            first = tasks[0]
            assert f"{first['judgements']} / {first['wanted']}" in page.inner_text(f'#tasks tr[data-task="{first["task_id"]}"]')
            DASHBOARD_SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(DASHBOARD_SHOT), full_page=True)
            with page.expect_download() as download:
                page.click("#export-csv")
            csv_text = Path(download.value.path()).read_text()
            assert csv_text.splitlines()[0].startswith("annotator_id,task_id") and len(csv_text.splitlines()) == overall["submissions"] + 1
            assert page.request.post(f"{server.url}/admin/campaigns/qc/close").status == 401  # the cookie only reads
        finally:
            browser.close()


def test_task_page_shows_the_description_and_lyrics_beside_the_players(campaign_live):
    from playwright.sync_api import sync_playwright

    server, tokens = campaign_live
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{server.url}/")
            page.fill("#token", tokens["zed"])
            page.click("#signin")
            page.wait_for_selector("#ranking")
            prompt = page.get_attribute("#ranking", "data-task-id")
            description, lyrics = page.inner_text("#description"), page.inner_text("#lyrics")
            assert description.startswith("male, pop, happy, piano, the bpm is 10") and "[chorus]" in lyrics
            box, songs = page.locator("#prompt").bounding_box(), page.locator("#ranking").bounding_box()
            assert box["x"] + box["width"] <= songs["x"] and box["y"] < songs["y"] + songs["height"]  # beside, not above
            assert prompt.startswith("qc:")
            page.screenshot(path=str(TASK_SHOT), full_page=True)
        finally:
            browser.close()
