"""The FastAPI application: `create_app(settings)` wires the database, limits, pages and routes."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from sqlalchemy.exc import IntegrityError

from reward_model.service import routes_admin, routes_annotator, routes_audio, routes_dashboard
from reward_model.service.bounds import capped
from reward_model.service.db import Database
from reward_model.service.limits import BodyLimitMiddleware
from reward_model.service.settings import ServiceSettings

HERE = Path(__file__).parent
log = logging.getLogger("songpref.annotate")


def configure_logging(level: int = logging.INFO) -> None:
    """Send the service's own log lines (sign-ins, uploads; never tokens) to stderr."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(level)


def create_app(settings: ServiceSettings, database: Database | None = None) -> FastAPI:
    """The annotation service for `settings`; the database is migrated to the newest revision."""
    db = database or Database(settings.db_url)

    @asynccontextmanager
    async def lifespan(_app):
        # Fewer worker threads than anyio's 40: with SQLite's single writer, more threads only queue on the lock.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        yield
        if database is None:
            db.dispose()

    app = FastAPI(title="songpref annotation service", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.db = settings, db
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(routes_admin.router)
    app.include_router(routes_dashboard.router)
    app.include_router(routes_annotator.router)
    app.include_router(routes_audio.router)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each bad field, without echoing the values (a field may hold a token)."""
        problems = [{"field": ".".join(map(str, e["loc"])), "reason": e["msg"]} for e in exc.errors()]
        listed, more = capped(problems)
        return JSONResponse({"detail": listed, "more_problems": more}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def conflict(_request: Request, _exc: IntegrityError) -> JSONResponse:
        """A concurrent request stored the same unique row first (its transaction was rolled back whole)."""
        return JSONResponse({"detail": "this conflicts with a change stored at the same moment; nothing was stored, retry"}, status_code=409)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    return app


def create_app_from_env() -> FastAPI:
    """For `uvicorn --factory reward_model.service.app:create_app_from_env` (e.g. several workers):
    the round from $SONGPREF_ROUND, the database from $SONGPREF_DB_URL, the admin token from
    $SONGPREF_ADMIN_TOKEN (required here: generated tokens would differ between workers)."""
    import os

    from reward_model.service.settings import ADMIN_TOKEN_ENV

    missing = [name for name in ("SONGPREF_ROUND", ADMIN_TOKEN_ENV) if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"set {', '.join(missing)} to start the annotation service from the environment")
    settings = ServiceSettings(Path(os.environ["SONGPREF_ROUND"]), db_url=os.environ.get("SONGPREF_DB_URL") or None)
    configure_logging()
    return create_app(settings)
