"""Admin routes (bearer admin token): campaigns, annotators, progress, exports, uploads."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from reward_model.service.auth import require_admin
from reward_model.service.campaigns import (
    CAMPAIGN_NAME_PATTERN, CampaignError, CampaignSpec, add_annotators, campaign_by_name, create_campaign, progress, task_progress,
)  # fmt: skip
from reward_model.service.models import Campaign
from reward_model.service.upload_io import handle_upload

log = logging.getLogger("songpref.annotate")
router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])
CampaignName = Annotated[str, Path(pattern=CAMPAIGN_NAME_PATTERN, max_length=100)]


class AnnotatorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    names: list[str] = Field(min_length=1, max_length=1000)


def _campaign(session, name: str) -> Campaign:
    try:
        return campaign_by_name(session, name)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/campaigns", status_code=201)
def create(spec: CampaignSpec, request: Request) -> dict:
    try:
        with request.app.state.db.write() as session:
            campaign = create_campaign(session, spec, request.app.state.settings.round_dir)
            tasks = len(campaign.tasks)
    except CampaignError as exc:
        raise HTTPException(422, str(exc)) from None
    log.info("campaign %s created with %d tasks", spec.name, tasks)
    return {"campaign": spec.name, "tasks": tasks}


@router.get("/campaigns")
def list_campaigns(request: Request) -> list[dict]:
    with request.app.state.db.read() as session:
        return [progress(session, c) for c in session.scalars(select(Campaign).order_by(Campaign.id))]


@router.post("/campaigns/{name}/annotators", status_code=201)
def annotators(name: CampaignName, body: AnnotatorRequest, request: Request) -> dict:
    """Plain tokens are in this answer only; the database keeps their sha256."""
    try:
        with request.app.state.db.write() as session:
            tokens = add_annotators(session, _campaign(session, name), body.names)
    except CampaignError as exc:
        raise HTTPException(422, str(exc)) from None
    log.info("campaign %s: %d annotator(s) added", name, len(tokens))
    return {"campaign": name, "annotators": [{"annotator_id": n, "token": t} for n, t in tokens.items()]}


@router.get("/campaigns/{name}/progress")
def campaign_progress(name: CampaignName, request: Request) -> dict:
    with request.app.state.db.read() as session:
        return progress(session, _campaign(session, name))


@router.get("/campaigns/{name}/tasks")
def campaign_tasks(name: CampaignName, request: Request) -> list[dict]:
    """Per task: handed out, judgements stored, judgements wanted."""
    with request.app.state.db.read() as session:
        return task_progress(session, _campaign(session, name))


@router.get("/campaigns/{name}/quality")
def campaign_quality_report(name: CampaignName, request: Request) -> dict:
    """Krippendorff's alpha with its interval; per annotator agreement, gold accuracy, speed, flags and reasons."""
    from reward_model.service.dashboard import campaign_quality  # pandas: only when asked

    with request.app.state.db.read() as session:
        return campaign_quality(session, _campaign(session, name))


@router.post("/campaigns/{name}/close")
def close(name: CampaignName, request: Request) -> dict:
    with request.app.state.db.write() as session:
        _campaign(session, name).status = "closed"
    return {"campaign": name, "status": "closed"}


@router.get("/campaigns/{name}/export")
def export(name: CampaignName, request: Request, format: str = "parquet", snapshot: bool = False) -> Response:
    """The rankings as Parquet or CSV; `snapshot=true` also writes them into <round>/rankings/."""
    if format not in ("parquet", "csv"):
        raise HTTPException(422, f"format must be 'parquet' or 'csv', got {format!r}")
    from reward_model.service.export import rankings_table, to_csv, to_parquet, write_snapshot  # pandas/pyarrow: only when exporting

    with request.app.state.db.read() as session:
        campaign = _campaign(session, name)
        table = rankings_table(session, campaign)
        round_dir = campaign.round_dir
    headers = {"content-disposition": f'attachment; filename="{name}.{format}"'}
    if snapshot:
        headers["x-snapshot"] = ";".join(write_snapshot(round_dir, name, table).values())
    if format == "csv":
        return Response(to_csv(table), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(to_parquet(table), media_type="application/vnd.apache.parquet", headers=headers)


@router.post("/campaigns/{name}/uploads")
async def upload(name: CampaignName, request: Request) -> JSONResponse:
    return await handle_upload(request, name, uploader=None)
