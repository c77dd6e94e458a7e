"""The service's settings: one dataclass, every field documented."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_TOKEN_ENV = "SONGPREF_ADMIN_TOKEN"


@dataclass
class ServiceSettings:
    """How one annotation server runs.

    Parameters:
        round_dir: The round whose candidates campaigns show (audio is served from its
            candidates/audio/ only).
        db_url: SQLAlchemy URL; default `sqlite:///<round>/rankings/annotations.db`.
        admin_token: Bearer token of the admin routes; default: $SONGPREF_ADMIN_TOKEN, else a
            random one (`admin_token_generated` is then True, so the caller can show it once).
        max_upload_bytes: Largest ranking file accepted (413 above it).
        max_body_bytes: Largest request body on every other route (413 above it).
        secure_cookies: Mark the session cookie Secure (serve over HTTPS when this is on).
        worker_threads: Threads running request handlers (database work) at once.
    """

    round_dir: Path
    db_url: str | None = None
    admin_token: str | None = None
    max_upload_bytes: int = 5 * 1024 * 1024
    max_body_bytes: int = 64 * 1024
    secure_cookies: bool = False
    worker_threads: int = 8
    admin_token_generated: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.round_dir = Path(self.round_dir).resolve()
        if not self.round_dir.is_dir():
            raise ValueError(f"round directory {self.round_dir} does not exist")
        if self.admin_token is None:
            self.admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None
        if self.admin_token is None:
            self.admin_token, self.admin_token_generated = secrets.token_urlsafe(32), True
        if len(self.admin_token) < 16:
            raise ValueError(f"the admin token (${ADMIN_TOKEN_ENV}) must be at least 16 characters")
        if self.db_url is None:
            from reward_model.service.db import default_url

            self.db_url = default_url(self.round_dir)

    def __repr__(self) -> str:  # never print the admin token
        return f"ServiceSettings(round_dir={str(self.round_dir)!r}, db_url={self.db_url!r}, admin_token=<hidden>)"
