"""Concurrent requests against a real server (uvicorn subprocess) on SQLite and PostgreSQL:
simultaneous /api/next calls hand out every free task, also after a restart, and the same
ranking sent twice at once is stored once, answered 201 twice."""

from __future__ import annotations

import http.client
import json
import threading

import httpx
import pytest
from sqlalchemy import create_engine, text

from annotate_helpers import ServerProcess, admin_headers, build_round, database_url

ANNOTATORS = 50


class Annotator:
    """One keep-alive connection with an annotator's token (http.client: cheap enough for 100 threads)."""

    def __init__(self, url: str, token: str):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.conn.connect()
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if response.headers.get("content-type", "").startswith("application/json") else data.decode()


def all_at_once(jobs: list) -> list:
    """Run every job in its own thread, released together by a barrier; their results in order."""
    barrier, results = threading.Barrier(len(jobs)), [None] * len(jobs)

    def run(i, job):
        barrier.wait()
        results[i] = job()

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    root = build_round(folder / "round", prompts=2, per_prompt=8, audio=False)
    generator = database_url(request.param, folder)
    db_url = next(generator)
    servers = [ServerProcess(root, db_url, folder / "server.log")]

    def restart() -> ServerProcess:
        servers[-1].stop()
        servers.append(ServerProcess(root, db_url, folder / f"server{len(servers)}.log"))
        return servers[-1]

    yield servers, restart, db_url
    servers[-1].stop()
    generator.close()


def make_campaign(url: str, name: str, prompt: str, overlap: int, annotators: int) -> list[str]:
    with httpx.Client(base_url=url, headers=admin_headers(), timeout=30) as admin:
        made = admin.post("/admin/campaigns", json={"name": name, "prompts": [prompt], "k": 2, "overlap": overlap})
        assert made.status_code == 201 and made.json()["tasks"] == 4, made.text
        people = admin.post(f"/admin/campaigns/{name}/annotators", json={"names": [f"a{i:02d}" for i in range(annotators)]}).json()
    return [a["token"] for a in people["annotators"]]


def test_fifty_simultaneous_next_calls_hand_out_every_free_task(live):
    servers, restart, db_url = live
    tokens = make_campaign(servers[-1].url, "burst", "prompt0", overlap=ANNOTATORS, annotators=ANNOTATORS)
    people = [Annotator(servers[-1].url, t) for t in tokens]
    first = all_at_once([lambda a=a: a.call("GET", "/api/next") for a in people])
    assert [status for status, _ in first] == [200] * ANNOTATORS
    assert sum(answer["task"] is None for _, answer in first) == 0, [answer["progress"] for _, answer in first if answer["task"] is None][:5]
    held = [answer["task"]["task_id"] for _, answer in first]

    server = restart()  # after a restart every annotator is handed the task they hold, then the rest
    people = [Annotator(server.url, t) for t in tokens]
    again = all_at_once([lambda a=a: a.call("GET", "/api/next") for a in people])
    assert [answer["task"]["task_id"] for _, answer in again] == held

    def rank_everything(person: Annotator) -> list:
        statuses, (status, answer) = [], person.call("GET", "/api/next")
        while status in (200, 201) and answer["task"] is not None:
            ids = [c["candidate_id"] for c in answer["task"]["candidates"]]
            status, answer = person.call("POST", "/api/submit?next=true", {"task_id": answer["task"]["task_id"], "candidate_ids": ids, "ranks": [1, 2]})
            statuses.append(status)
            answer = answer["next"] if status == 201 else answer
        return statuses + [answer.get("progress")]

    finished = all_at_once([lambda a=a: rank_everything(a) for a in people])
    assert all(result == [201] * 4 + [{"done": 4, "total": 4}] for result in finished), finished[:3]
    engine = create_engine(db_url)
    with engine.connect() as conn:
        counts = conn.execute(text("SELECT COUNT(*), COUNT(DISTINCT annotator_id) FROM submission s JOIN campaign c ON c.id = s.campaign_id WHERE c.name = 'burst'")).one()
    engine.dispose()
    assert tuple(counts) == (4 * ANNOTATORS, ANNOTATORS)


def test_the_same_ranking_sent_twice_at_once_is_stored_once(live):
    servers, _, db_url = live
    tokens = make_campaign(servers[-1].url, "twins", "prompt1", overlap=25, annotators=40)
    pairs = [(Annotator(servers[-1].url, t), Annotator(servers[-1].url, t)) for t in tokens]
    bodies = []
    for one, _ in pairs:
        task = one.call("GET", "/api/next")[1]["task"]
        bodies.append({"task_id": task["task_id"], "candidate_ids": [c["candidate_id"] for c in task["candidates"]], "ranks": [2, 1]})
    jobs = [lambda a=a, b=b: a.call("POST", "/api/submit", b) for pair, b in zip(pairs, bodies) for a in pair]
    answers = all_at_once(jobs)
    assert [status for status, _ in answers] == [201] * len(jobs), [a for a in answers if a[0] != 201][:3]
    assert all(answers[i][1]["id"] == answers[i + 1][1]["id"] for i in range(0, len(answers), 2))  # one row, answered twice
    engine = create_engine(db_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT COUNT(*) FROM submission s JOIN campaign c ON c.id = s.campaign_id WHERE c.name = 'twins'")).scalar()
    engine.dispose()
    assert stored == len(tokens)


def test_refused_requests_keep_the_connection_open(live):
    """4xx answers (bad JSON nesting, NUL ids, unknown campaign) leave the keep-alive connection usable."""
    servers, _, _ = live
    tokens = make_campaign(servers[-1].url, "alive", "prompt0", overlap=1, annotators=1)
    person = Annotator(servers[-1].url, tokens[0])
    socket_before = person.conn.sock
    bad = [("POST", "/api/submit", {"task_id": "alive:t0001\u0000", "candidate_ids": ["a", "b"], "ranks": [1, 2]}),
           ("POST", "/api/submit", {"task_id": [[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]}),
           ("GET", "/audio/p0c0%00/mix", None), ("GET", "/api/submissions/99999999999", None)]  # fmt: skip
    for method, path, body in bad:
        status, _ = person.call(method, path, body)
        assert 400 <= status < 500, (path, status)
    assert person.call("GET", "/api/next")[0] == 200
    assert person.conn.sock is socket_before  # http.client would have opened a new socket had the server closed it
