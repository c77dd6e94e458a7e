"""An accepted rankings upload announced as a Prefect event, so a deployment trigger can retrain.

Event `songpref.rankings.accepted` on resource `songpref.campaign.<name>` (labels: the round,
the service's database URL with its password hidden), payload: the campaign and the count of
rankings the upload stored. Sent only when PREFECT_API_URL names a server to receive it, as a
plain POST to the server's events route (this layer imports no Prefect); a failure to send is
logged and never fails the upload, which is already stored.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime, timezone

log = logging.getLogger("songpref.annotate")
EVENT = "songpref.rankings.accepted"


def campaign_resource(campaign: str) -> str:
    return f"songpref.campaign.{campaign}"


def announce_accepted_upload(settings, campaign: str, result: dict) -> None:
    """Emit the event for an upload that stored rankings (not for "already imported")."""
    if result.get("status") != "imported" or not os.environ.get("PREFECT_API_URL"):
        return
    try:
        import httpx
        from sqlalchemy.engine import make_url

        event = {
            "id": str(uuid.uuid4()), "occurred": datetime.now(timezone.utc).isoformat(), "event": EVENT,
            "resource": {"prefect.resource.id": campaign_resource(campaign), "songpref.round": str(settings.round_dir),
                         "songpref.db": make_url(settings.db_url).render_as_string(hide_password=True)},
            "payload": {"campaign": campaign, "count": int(result["rows"]), "upload_id": result.get("upload_id")},
        }  # fmt: skip
        httpx.post(f"{os.environ['PREFECT_API_URL'].rstrip('/')}/events", json=[event], timeout=10).raise_for_status()
    except Exception as exc:  # the upload stands; the retraining simply is not told
        log.warning("upload to %s stored, but the %s event was not sent: %s", campaign, EVENT, exc)
