"""Readers for rankings exported by annotation tools: Label Studio and Argilla.

Both give the rows of `upload_formats` (see there); the shapes accepted are documented in
`uploads`. Anything that is not a ranking the tools themselves consider final (a cancelled Label
Studio annotation, an Argilla draft or discarded response) is skipped, not refused.
"""

from __future__ import annotations

from reward_model.service.bounds import shown
from reward_model.service.upload_formats import FileUnreadable, _load_json


def _who(value) -> str | None:
    """Label Studio's `completed_by` is a user id or a user object; Argilla's a user id or name."""
    if isinstance(value, dict):
        value = value.get("email") or value.get("username") or value.get("id")
    return None if value is None else str(value)


def _scope(*sources: dict) -> dict:
    """task_id / prompt_id from the first source that names them."""
    for source in sources:
        if isinstance(source, dict) and (source.get("task_id") or source.get("prompt_id")):
            return {"task_id": source.get("task_id"), "prompt_id": source.get("prompt_id")}
    return {"task_id": None, "prompt_id": None}


def _ranker_order(value: dict) -> list[str]:
    """Label Studio Ranker: {"ranker": {"<bucket>": [ids...]}}; buckets in order, "_" (unsorted) left out."""
    buckets = value.get("ranker")
    if not isinstance(buckets, dict) or not all(isinstance(ids, list) for ids in buckets.values()):
        raise ValueError('ranker result must be {"ranker": {"<bucket>": [candidate ids]}}')
    return [str(c) for name, ids in buckets.items() if name != "_" for c in ids]


def _label_studio_row(data: dict, annotation: dict) -> dict:
    results = [r for r in annotation.get("result") or [] if r.get("type") in ("pairwise", "ranker")]
    if len(results) != 1:
        raise ValueError(f"expected exactly one pairwise or ranker result, found {len(results)}")
    result = results[0]
    row = {"annotator_id": _who(annotation.get("completed_by")), **_scope(data), "tied": None,
           "started_at": None, "submitted_at": annotation.get("updated_at") or annotation.get("created_at"),
           "duration_s": annotation.get("lead_time"), "chosen_id": None, "rejected_id": None}  # fmt: skip
    if result["type"] == "pairwise":
        left, right = data.get("left_id", data.get("left")), data.get("right_id", data.get("right"))
        selected = (result.get("value") or {}).get("selected")
        if not left or not right or selected not in ("left", "right"):
            raise ValueError('pairwise result needs data.left_id/right_id (or left/right) and value.selected "left" or "right"')
        chosen, rejected = (left, right) if selected == "left" else (right, left)
        return {**row, "candidate_ids": [str(chosen), str(rejected)], "ranks": [1, 2]}
    order = _ranker_order(result.get("value") or {})
    shown = [str(item.get("id")) if isinstance(item, dict) else str(item) for item in data.get("items") or data.get("candidate_ids") or []]
    unranked = [c for c in shown if c not in order]
    if unranked:
        raise ValueError(f"ranker leaves candidates unranked: {unranked}")
    return {**row, "candidate_ids": order, "ranks": list(range(1, len(order) + 1))}


def read_label_studio(data: bytes) -> tuple[list, list, int]:
    tasks = _load_json(data, "tasks")
    rows, problems, skipped, number = [], [], 0, 0
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            number += 1
            problems.append((number, "a Label Studio task must be an object with a 'data' object"))
            continue
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            number += 1
            problems.append((number, f"task {shown(task.get('id'))}: 'annotations' must be a list, got {type(annotations).__name__}"))
            continue
        for annotation in annotations:
            number += 1
            if not isinstance(annotation, dict):
                problems.append((number, f"task {shown(task.get('id'))}: an annotation must be an object, got {type(annotation).__name__}"))
                continue
            if annotation.get("was_cancelled"):
                skipped += 1
                continue
            try:
                rows.append((number, _label_studio_row(task["data"], annotation)))
            except (ValueError, AttributeError, TypeError) as exc:
                problems.append((number, f"task {shown(task.get('id'))}: {exc}"))
    return rows, problems, skipped


def _argilla_ranking(value) -> tuple[list[str], list[int]]:
    """[{"value": id, "rank": n}, ...] (ties share n), or a plain ranked list of ids."""
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    if not isinstance(value, list) or not value:
        raise ValueError("a ranking response must be a non-empty list")
    if all(isinstance(v, dict) for v in value):
        if any("value" not in v or "rank" not in v for v in value):
            raise ValueError('every ranking entry needs "value" and "rank"')
        return [str(v["value"]) for v in value], [v["rank"] for v in value]
    return [str(v) for v in value], list(range(1, len(value) + 1))


def _argilla_responses(record: dict) -> list[tuple[dict, object]]:
    """(response, ranking value) pairs from v1 (list with `values`) or v2 (dict by question) records."""
    responses = record.get("responses") or []
    if isinstance(responses, dict):  # v2: {"<question>": [{"value": ..., "user_id": ..., "status": ...}]}
        if not all(isinstance(answers, list) for answers in responses.values() if answers):
            raise ValueError('v2 responses must map each question to a list of responses')
        return [(r, r.get("value")) for answers in responses.values() for r in answers or [] if isinstance(r, dict)]
    if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
        raise ValueError("responses must be a list of objects (v1) or an object of lists by question (v2)")
    pairs = []
    for response in responses:  # v1: [{"user_id": ..., "status": ..., "values": {"<question>": {"value": ...}}}]
        values = [v for v in (response.get("values") or {}).values() if isinstance(v, dict) and isinstance(v.get("value"), list)]
        if len(values) != 1:
            raise ValueError(f"expected exactly one ranking question in the response, found {len(values)}")
        pairs.append((response, values[0]))
    return pairs


def read_argilla(data: bytes) -> tuple[list, list, int]:
    records = _load_json(data, "records")
    rows, problems, skipped, number = [], [], 0, 0
    for index, record in enumerate(records, 1):
        try:
            if not isinstance(record, dict):
                raise ValueError("an Argilla record must be an object")
            pairs = _argilla_responses(record)
        except (ValueError, AttributeError) as exc:
            number += 1
            problems.append((number, f"record {index}: {exc}"))
            continue
        scope = _scope(record.get("metadata"), record.get("fields"))
        if not (scope["task_id"] or scope["prompt_id"]):
            scope = {"task_id": record.get("external_id"), "prompt_id": None}
        for response, value in pairs:
            number += 1
            if response.get("status", "submitted") != "submitted":
                skipped += 1
                continue
            try:
                ids, ranks = _argilla_ranking(value)
            except ValueError as exc:
                problems.append((number, f"record {index}: {exc}"))
                continue
            rows.append((number, {"annotator_id": _who(response.get("username") or response.get("user_id")), **scope,
                                  "candidate_ids": ids, "ranks": ranks, "tied": None, "chosen_id": None, "rejected_id": None,
                                  "started_at": None, "submitted_at": response.get("updated_at") or response.get("inserted_at"),
                                  "duration_s": None}))  # fmt: skip
    return rows, problems, skipped


__all__ = ["FileUnreadable", "read_argilla", "read_label_studio"]
