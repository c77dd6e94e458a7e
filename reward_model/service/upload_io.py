"""The HTTP side of uploads: read the file (multipart `file` + `format`, or a raw body with
`?format=`), enforce the size limit, and answer with the import result or the rejection report."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from reward_model.service.events import announce_accepted_upload
from reward_model.service.imports import import_upload
from reward_model.service.uploads import UploadRejected

log = logging.getLogger("songpref.annotate")


async def _read_file(request: Request) -> tuple[bytes, str | None]:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=5)
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise UploadRejected("multipart upload needs a 'file' part")
        data = await file.read()
        return data, form.get("format") or request.query_params.get("format")
    return await request.body(), request.query_params.get("format")


async def handle_upload(request: Request, campaign: str, uploader: str | None) -> JSONResponse:
    """200 imported / already imported; 4xx with a report otherwise (nothing stored)."""
    limit = request.app.state.settings.max_upload_bytes
    try:
        data, fmt = await _read_file(request)
        if len(data) > limit:
            raise UploadRejected(f"file is {len(data)} bytes, over the limit of {limit} bytes", status=413)
        if not fmt:
            raise UploadRejected("say the file's format: 'format' = csv, json, label-studio or argilla")
        result = await run_in_threadpool(import_upload, request.app.state.db, campaign, data, fmt, uploader)
    except UploadRejected as exc:
        log.info("upload to %s refused: %s", campaign, exc.message)
        return JSONResponse({"detail": exc.report()}, status_code=exc.status)
    except LookupError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    log.info("upload to %s: %s (%d rows)", campaign, result["status"], result["rows"])
    announce_accepted_upload(request.app.state.settings, campaign, result)
    return JSONResponse(result, status_code=200 if result["status"] == "already imported" else 201)
