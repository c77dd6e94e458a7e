"""The admin dashboard: server-rendered pages over the admin JSON (campaigns, progress per task
and annotator, alpha with its interval, agreement, gold accuracy, speed, flags, exports).

The admin signs in with the admin token once; it is kept in an HttpOnly, SameSite=Strict cookie
on /admin that the admin routes accept for reading only (see `auth.require_admin`).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from reward_model.service.auth import ADMIN_COOKIE, require_admin
from reward_model.service.campaigns import CAMPAIGN_NAME_PATTERN, campaign_by_name, hash_token, progress
from reward_model.service.models import Campaign

router = APIRouter(prefix="/admin")


def _signed_in(request: Request) -> bool:
    token = request.cookies.get(ADMIN_COOKIE)
    return bool(token) and hmac.compare_digest(hash_token(token), hash_token(request.app.state.settings.admin_token))


@router.get("/", response_class=HTMLResponse)
def admin_home(request: Request):
    if _signed_in(request):
        return RedirectResponse("/admin/dashboard", status_code=303)
    return request.app.state.templates.TemplateResponse(request, "admin_signin.html", {"error": None})


@router.post("/signin")
def admin_signin(request: Request, token: str = Form(max_length=200)):
    if not hmac.compare_digest(hash_token(token.strip()), hash_token(request.app.state.settings.admin_token)):
        return request.app.state.templates.TemplateResponse(request, "admin_signin.html", {"error": "That is not the admin token."}, status_code=401)
    response = RedirectResponse("/admin/dashboard", status_code=303)
    response.set_cookie(ADMIN_COOKIE, token.strip(), httponly=True, samesite="strict", secure=request.app.state.settings.secure_cookies, path="/admin")
    return response


@router.post("/signout")
def admin_signout() -> RedirectResponse:
    response = RedirectResponse("/admin/", status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/admin")
    return response


@router.get("/dashboard", response_class=HTMLResponse, dependencies=[Depends(require_admin)])
def dashboard(request: Request):
    with request.app.state.db.read() as session:
        campaigns = [progress(session, c) for c in session.scalars(select(Campaign).order_by(Campaign.id))]
    return request.app.state.templates.TemplateResponse(request, "admin_campaigns.html", {"campaigns": campaigns})


@router.get("/dashboard/{name}", response_class=HTMLResponse, dependencies=[Depends(require_admin)])
def campaign_page(name: Annotated[str, Path(pattern=CAMPAIGN_NAME_PATTERN, max_length=100)], request: Request):
    from reward_model.service.dashboard import campaign_overview  # pandas: only when asked

    with request.app.state.db.read() as session:
        try:
            overview = campaign_overview(session, campaign_by_name(session, name))
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
    return request.app.state.templates.TemplateResponse(request, "admin_campaign.html", {"c": overview})
