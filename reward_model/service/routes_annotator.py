"""Annotator pages and API: sign in, the next task, submit, own submissions, progress, uploads.

The HTML pages use the session cookie; the JSON API takes the cookie or a bearer token. An
annotator only ever reads or changes their own rows: every query is filtered by their id.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from reward_model.service.assignments import (
    SubmissionRejected, annotator_progress, display_order, next_task, submission_view, submit_ranking,
)  # fmt: skip
from reward_model.service.auth import SESSION_COOKIE, find_annotator, require_annotator
from reward_model.service.bounds import MAX_CANDIDATES, MAX_ROW_ID, Identifier
from reward_model.service.campaigns import hash_token
from reward_model.service.models import Annotator, Submission
from reward_model.service.round_source import read_prompt_texts
from reward_model.service.upload_io import handle_upload

log = logging.getLogger("songpref.annotate")
router = APIRouter()


class RankingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: Identifier
    candidate_ids: list[Identifier] = Field(min_length=2, max_length=MAX_CANDIDATES)
    ranks: list[Annotated[int, Field(ge=1, le=MAX_CANDIDATES)]] = Field(min_length=2, max_length=MAX_CANDIDATES)
    tied: bool = False  # equal ranks need it, as in uploaded files


def _closed(annotator: Annotator) -> str | None:
    campaign = annotator.campaign
    if campaign.status != "open" or campaign.is_expired():
        return f"campaign {campaign.name!r} is closed or expired"
    return None


def _task_payload(session, annotator: Annotator) -> dict:
    """The annotator's current task (claimed if new) with progress; task None when all is done."""
    task = next_task(session, annotator)
    progress = annotator_progress(session, annotator, holds_task=task is not None)
    if task is None:
        return {"task": None, "progress": progress}
    ids = display_order(task, annotator, annotator.campaign.seed)
    candidates = [{"candidate_id": c, "label": chr(ord("A") + i), "audio": f"/audio/{c}/mix"} for i, c in enumerate(ids)]
    return {"task": {"task_id": task.task_key, "prompt_id": task.prompt_id, "k": len(ids), "candidates": candidates}, "progress": progress}


def _next_task(request: Request, annotator: Annotator) -> dict:
    return request.app.state.db.write_retrying(lambda session: _task_payload(session, annotator))  # annotator: loaded with its campaign


@router.get("/", response_class=HTMLResponse)
def home(request: Request):
    if find_annotator(request) is not None:
        return RedirectResponse("/task", status_code=303)
    return request.app.state.templates.TemplateResponse(request, "signin.html", {"error": None})


@router.post("/signin")
def signin(request: Request, token: str = Form(max_length=200)):
    """The page posts the token; the answer sets it as an HttpOnly cookie and sends them to /task."""
    annotator = _annotator_with_token(request, token)
    if annotator is None:
        return request.app.state.templates.TemplateResponse(request, "signin.html", {"error": "That token is not valid."}, status_code=401)
    log.info("annotator %s signed in", annotator.name)
    response = RedirectResponse("/task", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=request.app.state.settings.secure_cookies, path="/")
    return response


def _annotator_with_token(request: Request, token: str) -> Annotator | None:
    with request.app.state.db.read() as session:
        return session.scalar(select(Annotator).where(Annotator.token_sha256 == hash_token(token.strip())))


@router.post("/signout")
def signout() -> RedirectResponse:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/task", response_class=HTMLResponse)
def task_page(request: Request):
    annotator = find_annotator(request)
    if annotator is None:
        return RedirectResponse("/", status_code=303)
    templates = request.app.state.templates
    if (reason := _closed(annotator)) is not None:
        return templates.TemplateResponse(request, "message.html", {"title": "Campaign closed", "message": reason}, status_code=410)
    payload = _next_task(request, annotator)
    prompt_text = payload["task"] and read_prompt_texts(annotator.campaign.round_dir).get(payload["task"]["prompt_id"])
    context = {"annotator": annotator.name, "prompt_text": prompt_text, **payload}
    return templates.TemplateResponse(request, "task.html" if payload["task"] else "done.html", context)


@router.get("/api/next")
def api_next(request: Request, annotator: Annotator = Depends(require_annotator)) -> dict:
    if (reason := _closed(annotator)) is not None:
        raise HTTPException(410, reason)
    return _next_task(request, annotator)


@router.post("/api/submit", status_code=201)
def api_submit(body: RankingBody, request: Request, annotator: Annotator = Depends(require_annotator), next: bool = False) -> dict:
    """Store a ranking of a held task; with `?next=true` the answer also carries the next task
    (as /api/next gives it), saving a round trip."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise HTTPException(415, "send the ranking as application/json")  # also keeps cross-site forms out
    def work(session) -> dict:
        view = submission_view(submit_ranking(session, annotator, body.task_id, body.candidate_ids, body.ranks, body.tied))
        if next:  # same transaction: one trip through the write lock
            view["next"] = _task_payload(session, annotator)
        return view

    try:  # the same body sent twice at once: the second run finds the first's row and updates it
        return request.app.state.db.write_retrying(work)
    except SubmissionRejected as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/api/submissions")
def api_submissions(request: Request, annotator: Annotator = Depends(require_annotator)) -> list[dict]:
    with request.app.state.db.read() as session:
        mine = session.scalars(select(Submission).where(Submission.annotator_id == annotator.id).order_by(Submission.id))
        return [submission_view(s) for s in mine]


@router.get("/api/submissions/{submission_id}")
def api_submission(submission_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], request: Request, annotator: Annotator = Depends(require_annotator)) -> dict:
    with request.app.state.db.read() as session:
        found = session.get(Submission, submission_id)
        if found is None or found.annotator_id != annotator.id:  # another annotator's row looks like no row
            raise HTTPException(404, f"you have no submission {submission_id}")
        return submission_view(found)


@router.get("/api/progress")
def api_progress(request: Request, annotator: Annotator = Depends(require_annotator)) -> dict:
    with request.app.state.db.read() as session:
        return annotator_progress(session, annotator)


@router.post("/api/uploads")
async def api_upload(request: Request, annotator: Annotator = Depends(require_annotator)) -> JSONResponse:
    """An annotator's own ranking file (every row must be theirs)."""
    return await handle_upload(request, annotator.campaign.name, uploader=annotator.name)
