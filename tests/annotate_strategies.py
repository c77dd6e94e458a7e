"""Hypothesis strategies for the annotation service's inputs: requests generated from the app's
own OpenAPI schema (schemathesis), and ranking files in every upload format (csv, json,
label-studio, argilla) built from the formats' shapes with real and hostile values mixed in."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import strategies as st

FORMATS = ("csv", "json", "label-studio", "argilla")
HOSTILE_TEXT = st.sampled_from(["", " ", "\x00", "a\x00b", "../../etc/passwd", "=1+2", "x" * 300, "\ud7ff", "%00", "null",
                                "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2024-02-30T00:00:00"])  # fmt: skip
TIMES = st.one_of(st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()), HOSTILE_TEXT)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=20), HOSTILE_TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def known_ids(campaign: str, tasks: int, prompts: int, per_prompt: int, annotators: list[str]) -> dict:
    """The ids a campaign really has, so generated files reach the checks past "unknown id"."""
    return {
        "annotator_id": annotators,
        "task_id": [f"{campaign}:t{n:04d}" for n in range(1, tasks + 1)],
        "prompt_id": [f"prompt{p}" for p in range(prompts)],
        "candidate": [f"p{p}c{c}" for p in range(prompts) for c in range(per_prompt)],
    }


def ranking_fields(ids: dict) -> st.SearchStrategy[dict]:
    """One ranking row as a dict: mostly plausible values, sometimes hostile ones, sometimes any JSON."""
    def pick(name):
        return st.one_of(st.sampled_from(ids[name]), HOSTILE_TEXT, JSON_VALUES) if name in ids else JSON_VALUES

    candidates = st.lists(st.sampled_from(ids["candidate"]), min_size=0, max_size=5, unique=True)
    ranks = st.one_of(st.lists(st.integers(-2, 6), max_size=5), st.lists(st.integers(-(2**40), 2**40), max_size=3), JSON_VALUES)
    fields = {
        "annotator_id": pick("annotator_id"), "task_id": pick("task_id"), "prompt_id": pick("prompt_id"),
        "candidate_ids": st.one_of(candidates, JSON_VALUES), "ranks": ranks, "tied": st.one_of(st.booleans(), JSON_VALUES),
        "started_at": st.one_of(TIMES, JSON_VALUES), "submitted_at": TIMES, "duration_s": st.one_of(st.floats(), JSON_VALUES),
        "chosen_id": st.sampled_from(ids["candidate"]), "rejected_id": st.sampled_from(ids["candidate"]),
    }  # fmt: skip
    return st.one_of(st.fixed_dictionaries({}, optional=fields), valid_prompt_row(ids))


def valid_prompt_row(ids: dict) -> st.SearchStrategy[dict]:
    """A well-formed ranking of 2-4 candidates of one prompt (it may still repeat a stored judgement)."""
    def row(annotator, prompt, order, tie):
        ranks = list(range(1, len(order) + 1))
        ranks[-1] = ranks[-2] if tie else ranks[-1]
        return {"annotator_id": annotator, "prompt_id": f"prompt{prompt}", "candidate_ids": order, "ranks": ranks, "tied": tie}

    def candidates(prompt):
        return st.lists(st.sampled_from([c for c in ids["candidate"] if c.startswith(f"p{prompt}c")]), min_size=2, max_size=4, unique=True)

    prompt = st.integers(0, len(ids["prompt_id"]) - 1)
    return prompt.flatmap(lambda p: st.builds(row, st.sampled_from(ids["annotator_id"]), st.just(p), candidates(p), st.booleans()))


def csv_file(ids: dict) -> st.SearchStrategy[bytes]:
    def render(rows, extra_column):
        columns = sorted({k for row in rows for k in row} | ({"bogus"} if extra_column else set())) or ["annotator_id"]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else str(v)) for v in (row.get(c) for c in columns)])
        return out.getvalue().encode()

    return st.builds(render, st.lists(ranking_fields(ids), max_size=4), st.booleans())


def json_file(ids: dict) -> st.SearchStrategy[bytes]:
    rows = st.lists(st.one_of(ranking_fields(ids), JSON_VALUES), max_size=4)
    return st.one_of(rows, st.builds(lambda r: {"rankings": r}, rows)).map(_dump)


def label_studio_file(ids: dict) -> st.SearchStrategy[bytes]:
    candidate = st.sampled_from(ids["candidate"])
    result = st.one_of(
        st.fixed_dictionaries({"type": st.just("pairwise"), "value": st.fixed_dictionaries({"selected": st.sampled_from(["left", "right", "up"])})}),
        st.fixed_dictionaries({"type": st.just("ranker"), "value": st.fixed_dictionaries({"ranker": st.dictionaries(st.sampled_from(["best", "_", "rest"]), st.lists(candidate, max_size=4) | JSON_VALUES, max_size=2)})}),
        JSON_VALUES,
    )  # fmt: skip
    annotation = st.one_of(st.fixed_dictionaries({"completed_by": st.one_of(st.sampled_from(ids["annotator_id"]), JSON_VALUES),
                                                  "result": st.lists(result, max_size=2) | JSON_VALUES},
                                                 optional={"lead_time": JSON_VALUES, "updated_at": TIMES, "was_cancelled": st.booleans()}),
                           JSON_VALUES)  # fmt: skip
    data = st.fixed_dictionaries({}, optional={"task_id": st.one_of(st.sampled_from(ids["task_id"]), JSON_VALUES), "prompt_id": st.sampled_from(ids["prompt_id"]),
                                               "left_id": candidate, "right_id": candidate, "items": st.lists(st.fixed_dictionaries({"id": candidate}), max_size=4),
                                               "candidate_ids": st.lists(candidate, max_size=4)})  # fmt: skip
    task = st.one_of(st.fixed_dictionaries({"id": st.integers(0, 9), "data": data | JSON_VALUES, "annotations": st.lists(annotation, max_size=3) | JSON_VALUES}), JSON_VALUES)
    return st.lists(task, max_size=3).map(_dump)


def argilla_file(ids: dict) -> st.SearchStrategy[bytes]:
    candidate = st.sampled_from(ids["candidate"])
    ranking = st.one_of(st.lists(st.fixed_dictionaries({"value": candidate | JSON_VALUES, "rank": st.integers(0, 5) | JSON_VALUES}), max_size=4),
                        st.lists(candidate, max_size=4), JSON_VALUES)  # fmt: skip
    who = st.one_of(st.sampled_from(ids["annotator_id"]), JSON_VALUES)
    status = st.sampled_from(["submitted", "draft", "discarded"])
    v1 = st.lists(st.fixed_dictionaries({"user_id": who, "status": status, "values": st.fixed_dictionaries({"ranking": st.fixed_dictionaries({"value": ranking})}) | JSON_VALUES}), max_size=2)
    v2 = st.dictionaries(st.sampled_from(["ranking", "rank"]), st.lists(st.fixed_dictionaries({"user_id": who, "status": status, "value": ranking}), max_size=2) | JSON_VALUES, max_size=2)
    record = st.fixed_dictionaries({"responses": st.one_of(v1, v2, JSON_VALUES)},
                                   optional={"external_id": st.sampled_from(ids["task_id"]) | JSON_VALUES,
                                             "metadata": st.fixed_dictionaries({"task_id": st.sampled_from(ids["task_id"]) | JSON_VALUES})})  # fmt: skip
    return st.one_of(st.lists(record | JSON_VALUES, max_size=3), st.builds(lambda r: {"records": r}, st.lists(record, max_size=3))).map(_dump)


def _dump(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def upload_file(ids: dict) -> st.SearchStrategy[tuple[str, bytes]]:
    """(format, file bytes): usually the format's own shape, sometimes another format's or raw bytes."""
    builders = {"csv": csv_file, "json": json_file, "label-studio": label_studio_file, "argilla": argilla_file}
    own = st.one_of(*(builders[f](ids).map(lambda data, f=f: (f, data)) for f in FORMATS))
    foreign = st.tuples(st.sampled_from([*FORMATS, "xlsx", ""]), st.one_of(*(b(ids) for b in builders.values()), st.binary(max_size=200)))
    return st.one_of(own, own, own, foreign)

