"""Property-based tests of the whole API on SQLite and PostgreSQL: requests generated from the
app's own OpenAPI schema (schemathesis; valid and invalid ones) and ranking files of every upload
format (Hypothesis). The properties: never a 5xx, every answer small, and after any 4xx the
database is exactly as before (nothing half-written).

$SONGPREF_PROPERTY_EXAMPLES sets the examples per test (default: a few seconds' worth);
$SONGPREF_PROPERTY_REPORT names a JSON file that gets the count of answers per route and status
(benchmarks/annotate_properties.py runs this file longer and reports them)."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from annotate_helpers import ADMIN_TOKEN, admin_headers, build_round, campaign_app, database_fingerprint
from annotate_strategies import known_ids, upload_file
from reward_model.service.app import create_app
from reward_model.service.settings import ServiceSettings

EXAMPLES = int(os.environ.get("SONGPREF_PROPERTY_EXAMPLES", "8"))
REPORT = os.environ.get("SONGPREF_PROPERTY_REPORT")
PROPERTY_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(HealthCheck))  # fmt: skip
MAX_ANSWER_BYTES = 64 * 1024  # an export of this small campaign is far below it; error reports must be too
ANNOTATORS = ["ann", "bob"]
seen: Counter = Counter()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory):
    """Campaign "prop" (2 prompts x 4 songs, k=2: 4 tasks) with annotators ann and bob, each holding a task."""
    root = build_round(tmp_path_factory.mktemp("round"), prompts=2, per_prompt=4, seconds=0.1)
    with campaign_app(root, request.param, {"name": "prop", "k": 2, "overlap": 2}, ANNOTATORS) as (client, app, tokens):
        held = client.get("/api/next", headers={"Authorization": f"Bearer {tokens['ann']}"}).json()["task"]
        client.get("/api/next", headers={"Authorization": f"Bearer {tokens['bob']}"})
        schema = schemathesis.openapi.from_dict(app.openapi())
        schema.app = app
        yield {"client": client, "app": app, "tokens": tokens, "schema": schema, "backend": request.param, "held": held}
    if REPORT:
        Path(REPORT).write_text(json.dumps({f"{k[0]} {k[1]} {k[2]}": n for k, n in sorted(seen.items())}, indent=1))


def assert_properties(service, label: str, send) -> None:
    engine = service["app"].state.db.engine
    before = database_fingerprint(engine)
    answer = send()
    seen[(service["backend"], label, answer.status_code)] += 1
    assert answer.status_code < 500, (label, answer.status_code, answer.text[:300])
    assert len(answer.content) <= MAX_ANSWER_BYTES, (label, len(answer.content))
    if 400 <= answer.status_code < 500:
        assert database_fingerprint(engine) == before, (label, answer.status_code, answer.text[:300])


def schema_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the app's OpenAPI schema (from a throwaway app)."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(ServiceSettings(folder, db_url=f"sqlite:///{folder}/schema.db", admin_token=ADMIN_TOKEN))
        schema = app.openapi()
        app.state.db.dispose()
    return [(method.upper(), path) for path, item in schema["paths"].items() for method in item]


def operation_cases(operation) -> st.SearchStrategy:
    """Valid and invalid cases of one operation; half of them name the real campaign and candidate in the path
    (not for closing: a closed campaign would refuse everything after it)."""
    real = {name: value for name, value in (("name", "prop"), ("candidate_id", "p0c0"), ("stem", "mix"), ("submission_id", 1))
            if "{" + name + "}" in operation.path and not operation.path.endswith("/close")}  # fmt: skip
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    return st.one_of([operation.as_strategy(mode) for mode in modes] + [operation.as_strategy(mode, path_parameters=real) for mode in modes if real])


@pytest.mark.parametrize("method, path", schema_operations())
@PROPERTY_SETTINGS
@given(data=st.data())
def test_generated_requests_never_fail_the_server(service, method, path, data):
    case = data.draw(operation_cases(service["schema"][path][method]), label="case")
    if path == "/api/submit" and isinstance(case.body, dict) and data.draw(st.booleans(), label="ann's own task"):
        held = service["held"]  # reaches the checks behind "not assigned to you", and sometimes stores a ranking
        case.body.update(task_id=held["task_id"], candidate_ids=[c["candidate_id"] for c in held["candidates"]])
        if data.draw(st.booleans(), label="plausible ranks"):
            case.body["ranks"] = data.draw(st.sampled_from([[1, 2], [2, 1], [1, 1], [1, 3]]), label="ranks")
    who = data.draw(st.sampled_from(["right", "annotator", "none"]), label="credentials")
    token = (ADMIN_TOKEN if case.path.startswith("/admin") else service["tokens"]["ann"]) if who == "right" else service["tokens"]["bob"]
    headers = {} if who == "none" else {"Authorization": f"Bearer {token}"}
    assert_properties(service, f"{method} {path}", lambda: case.call(headers=headers))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_generated_upload_files_never_fail_the_server(service, data):
    ids = known_ids("prop", tasks=4, prompts=2, per_prompt=4, annotators=ANNOTATORS)
    fmt, body = data.draw(upload_file(ids), label="file")
    as_admin = data.draw(st.booleans(), label="as admin")
    path = "/admin/campaigns/prop/uploads" if as_admin else "/api/uploads"
    headers = admin_headers() if as_admin else {"Authorization": f"Bearer {service['tokens']['ann']}"}
    client = service["client"]
    assert_properties(service, f"POST {path} ({fmt or 'no format'})",
                      lambda: client.post(path, files={"file": ("f", body)}, data={"format": fmt}, headers=headers))  # fmt: skip
