"""A campaign's rankings as a table in the project's rankings schema, as CSV or Parquet.

Rows follow `reward_model.rankings.RANKINGS_SCHEMA`, the schema the reward_model stage trains on.
CSV cells that a spreadsheet would run as a formula (starting with = + - @ tab or CR) get a
leading apostrophe.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from reward_model.rankings import RANKINGS_SCHEMA, drop_failed_gold
from reward_model.service.models import Submission

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def rankings_table(session, campaign, min_gold_accuracy: float = 0.5) -> pa.Table:
    """Every submission of the campaign, oldest first; `excluded` marks annotators failing gold."""
    query = select(Submission).where(Submission.campaign_id == campaign.id).order_by(Submission.id)
    rows = []
    for s in session.scalars(query):
        rows.append({
            "annotator_id": s.annotator.name,
            "task_id": s.task.task_key if s.task else f"upload{s.upload_id}:row{s.upload_row}",
            "prompt_id": s.prompt_id,
            "candidate_ids": list(s.candidate_ids),
            "ranks": [int(r) for r in s.ranks],
            "tied": bool(s.tied),
            "is_gold": bool(s.task and s.task.is_gold),
            "gold_answer": s.task.gold_answer if s.task else None,
            "duration_s": s.duration_s,
            "simulated": False,
            "excluded": False,
        })  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=RANKINGS_SCHEMA)
    if rows:
        _, failed = drop_failed_gold(table.to_pandas(), min_gold_accuracy)
        excluded = pa.array([r["annotator_id"] in set(failed) for r in rows])
        table = table.set_column(table.schema.get_field_index("excluded"), "excluded", excluded)
    return table


def safe_cell(value) -> str:
    """A CSV cell that spreadsheets show as text, never evaluate."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def to_csv(table: pa.Table) -> bytes:
    """One row per ranking; list columns joined by ';' (the upload format reads them back)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        cells = [";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else str(v).lower() if isinstance(v, bool) else v)
                 for v in row.values()]  # fmt: skip
        writer.writerow([safe_cell(c) for c in cells])
    return out.getvalue().encode("utf-8")


def to_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    """A temporary sibling, then os.replace: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_snapshot(round_dir: str | Path, campaign_name: str, table: pa.Table) -> dict[str, str]:
    """`<round>/rankings/<campaign>.parquet` and `.csv`; returns the paths written."""
    folder = Path(round_dir) / "rankings"
    paths = {"parquet": folder / f"{campaign_name}.parquet", "csv": folder / f"{campaign_name}.csv"}
    write_atomically(paths["parquet"], to_parquet(table))
    write_atomically(paths["csv"], to_csv(table))
    return {kind: str(path) for kind, path in paths.items()}
