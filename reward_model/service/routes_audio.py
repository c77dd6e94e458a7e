"""Audio of a campaign's candidates, by candidate id, with HTTP Range support (206).

The client names a candidate id and a stem, never a path: the file is the candidate's stored
URI for that stem, and `round_source.audio_path` refuses any that resolves outside the round's
candidates/audio/. An id that is not a candidate of the caller's campaign is a 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from reward_model.service.auth import find_annotator, require_admin
from reward_model.service.bounds import ID_PATTERN
from reward_model.service.campaigns import CAMPAIGN_NAME_PATTERN
from reward_model.service.models import Campaign, Candidate
from reward_model.service.round_source import audio_path

router = APIRouter()
STEMS = ("mix", "vocals")


@router.get("/audio/{candidate_id}/{stem}")
def audio(candidate_id: Annotated[str, Path(pattern=ID_PATTERN)], stem: str, request: Request,
          campaign: Annotated[str | None, Query(pattern=CAMPAIGN_NAME_PATTERN, max_length=100)] = None) -> FileResponse:  # fmt: skip
    """Annotators hear their campaign's candidates; the admin names the campaign (?campaign=)."""
    if stem not in STEMS:
        raise HTTPException(404, f"stem must be one of {STEMS}")
    annotator = find_annotator(request)
    with request.app.state.db.read() as session:
        if annotator is not None:
            campaign_id, round_dir = annotator.campaign_id, annotator.campaign.round_dir
        else:
            require_admin(request)
            found = session.scalar(select(Campaign).where(Campaign.name == (campaign or "")))
            if found is None:
                raise HTTPException(404, f"no campaign named {campaign!r}")
            campaign_id, round_dir = found.id, found.round_dir
        candidate = session.scalar(select(Candidate).where(Candidate.campaign_id == campaign_id, Candidate.candidate_id == candidate_id))
    uri = candidate and (candidate.mix_uri if stem == "mix" else candidate.vocals_uri)
    path = audio_path(round_dir, uri) if uri else None
    if path is None:
        raise HTTPException(404, f"no {stem} audio for candidate {candidate_id!r} in this campaign")
    media = "audio/flac" if path.suffix == ".flac" else "audio/wav" if path.suffix == ".wav" else "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"cache-control": "private, max-age=3600"})
