"""Storing a checked upload: one transaction per file, and the same file twice changes nothing."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from reward_model.service.db import Database
from reward_model.service.models import Annotator, Assignment, Campaign, Candidate, Submission, Task, Upload, utc_now
from reward_model.service.uploads import CampaignView, TaskView, UploadRejected, parse_rankings


def campaign_view(session, campaign: Campaign, uploader: str | None = None) -> CampaignView:
    """The campaign as plain data for `parse_rankings`."""
    tasks = {t.task_key: TaskView(t.prompt_id, frozenset(t.candidate_ids)) for t in session.scalars(select(Task).where(Task.campaign_id == campaign.id))}
    prompts: dict[str, set] = {}
    for prompt, candidate in session.execute(select(Candidate.prompt_id, Candidate.candidate_id).where(Candidate.campaign_id == campaign.id)):
        prompts.setdefault(prompt, set()).add(candidate)
    return CampaignView(
        name=campaign.name,
        tasks=tasks,
        prompt_candidates={p: frozenset(c) for p, c in prompts.items()},
        annotators=frozenset(session.scalars(select(Annotator.name).where(Annotator.campaign_id == campaign.id))),
        existing_keys=frozenset(session.scalars(select(Submission.dedupe_key).where(Submission.campaign_id == campaign.id))),
        uploader=uploader,
        assigned=frozenset() if uploader is None else frozenset(session.scalars(
            select(Task.task_key).join(Assignment, Assignment.task_id == Task.id).join(Annotator, Annotator.id == Assignment.annotator_id)
            .where(Task.campaign_id == campaign.id, Annotator.name == uploader))),
    )  # fmt: skip


def import_upload(db: Database, campaign_name: str, data: bytes, fmt: str, uploader: str | None = None) -> dict:
    """Check and store a ranking file for a campaign. `uploader`: the annotator's name, None for
    the admin. Raises UploadRejected (nothing stored) or LookupError (no such campaign)."""
    try:
        with db.write() as session:
            return store_upload(session, campaign_name, data, fmt, uploader)
    except IntegrityError:
        # A concurrent request stored the same file or the same judgement first; the whole file was rolled back.
        raise UploadRejected("the file conflicts with rankings stored at the same moment; nothing was stored, retry", status=409) from None


def store_upload(session, campaign_name: str, data: bytes, fmt: str, uploader: str | None = None) -> dict:
    """`import_upload`'s work inside the caller's transaction (so more can go in the same one):
    raises UploadRejected or LookupError, and the caller rolls back; IntegrityError is the caller's."""
    digest = hashlib.sha256(data).hexdigest()
    campaign = session.scalar(select(Campaign).where(Campaign.name == campaign_name))
    if campaign is None:
        raise LookupError(f"no campaign named {campaign_name!r}")
    if campaign.status != "open" or campaign.is_expired():
        raise UploadRejected(f"campaign {campaign_name!r} is closed or expired; uploads are refused", status=410)
    earlier = session.scalar(select(Upload).where(Upload.campaign_id == campaign.id, Upload.sha256 == digest))
    if earlier is not None:
        return {"status": "already imported", "upload_id": earlier.id, "rows": earlier.rows, "sha256": digest}
    parsed = parse_rankings(data, fmt, campaign_view(session, campaign, uploader))
    upload = Upload(campaign_id=campaign.id, sha256=digest, format=fmt, rows=len(parsed.rows),
                    uploaded_by="admin" if uploader is None else f"annotator:{uploader}", created_at=utc_now())  # fmt: skip
    session.add(upload)
    session.flush()
    annotators = dict(session.execute(select(Annotator.name, Annotator.id).where(Annotator.campaign_id == campaign.id)).all())
    task_ids = dict(session.execute(select(Task.task_key, Task.id).where(Task.campaign_id == campaign.id)).all())
    session.add_all(
        Submission(campaign_id=campaign.id, annotator_id=annotators[r.annotator_id], task_id=task_ids.get(r.task_id),
                   prompt_id=r.prompt_id, candidate_ids=r.candidate_ids, ranks=r.ranks, tied=r.tied,
                   started_at=r.started_at, submitted_at=r.submitted_at or utc_now(), duration_s=r.duration_s,
                   source="upload", upload_id=upload.id, upload_row=r.row, dedupe_key=r.dedupe_key)  # fmt: skip
        for r in parsed.rows
    )
    session.flush()
    return {"status": "imported", "upload_id": upload.id, "rows": len(parsed.rows), "skipped": parsed.skipped, "sha256": digest}
