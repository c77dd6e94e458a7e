"""Who is asking: the admin (bearer token) or an annotator (bearer token or session cookie).

Tokens travel only in the Authorization header, the sign-in form's body and an HttpOnly,
SameSite=Strict cookie; never in a URL, so access logs cannot record them. Only sha256 digests
are compared and stored.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from reward_model.service.campaigns import hash_token
from reward_model.service.models import Annotator

SESSION_COOKIE = "songpref_session"
ADMIN_COOKIE = "songpref_admin"  # the dashboard's sign-in; path /admin only


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def require_admin(request: Request) -> None:
    """FastAPI dependency: 401 without a bearer token, 403 with the wrong one. The dashboard's
    admin cookie counts only for reading (GET/HEAD): a cross-site form can never change anything
    (and SameSite=Strict keeps the cookie off cross-site requests anyway)."""
    token = bearer_token(request)
    if token is None and request.method in ("GET", "HEAD"):
        token = request.cookies.get(ADMIN_COOKIE) or None
    if token is None:
        raise HTTPException(401, "admin routes need 'Authorization: Bearer <admin token>'", headers={"WWW-Authenticate": "Bearer"})
    expected = hash_token(request.app.state.settings.admin_token)
    if not hmac.compare_digest(hash_token(token), expected):
        raise HTTPException(403, "the bearer token is not the admin token")


def find_annotator(request: Request) -> Annotator | None:
    """The annotator whose token is in the Authorization header, else in the session cookie."""
    token = bearer_token(request) or request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    with request.app.state.db.read() as session:
        query = select(Annotator).options(joinedload(Annotator.campaign)).where(Annotator.token_sha256 == hash_token(token))
        return session.scalar(query)


def require_annotator(request: Request) -> Annotator:
    """FastAPI dependency for the annotator API: 401 unless signed in."""
    annotator = find_annotator(request)
    if annotator is None:
        raise HTTPException(401, "sign in with your annotator token (bearer header or the sign-in page)")
    return annotator
