"""Request body limits for every route, enforced before the application reads the body.

A declared Content-Length above the limit is refused at once; a body without one (chunked) is
counted as it arrives and refused when it passes the limit. Either way the answer is 413 and
the route never runs, so nothing is stored. A JSON body nested deeper than
`bounds.MAX_JSON_DEPTH` is refused the same way (422): parsing it would exhaust the stack.
"""

from __future__ import annotations

import json

from reward_model.service.bounds import depth_problem

MULTIPART_ALLOWANCE = 64 * 1024  # form boundaries and headers around an uploaded file


class BodyLimitMiddleware:
    def __init__(self, app, max_body_bytes: int, max_upload_bytes: int):
        self.app, self.max_body, self.max_upload = app, max_body_bytes, max_upload_bytes

    def limit_for(self, path: str) -> int:
        if path == "/api/uploads" or (path.startswith("/admin/campaigns/") and path.endswith("/uploads")):
            return self.max_upload + MULTIPART_ALLOWANCE
        return self.max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(send, limit)
        messages, total = [], 0
        while True:  # buffer the body (bounded by the limit) so an oversized one is refused before the route runs
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            total += len(message.get("body", b""))
            if total > limit:
                return await _too_large(send, limit)
            messages.append(message)
            if not message.get("more_body", False):
                break
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if b"json" in content_type and (problem := depth_problem(b"".join(m.get("body", b"") for m in messages), "the JSON body")):
            return await _refuse(send, 422, problem, close=False)  # the body was read whole: the connection can go on

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


async def _too_large(send, limit: int) -> None:
    await _refuse(send, 413, f"request body is larger than the limit of {limit} bytes")


async def _refuse(send, status: int, detail: str, close: bool = True) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + [(b"connection", b"close")] * close})
    await send({"type": "http.response.body", "body": body})
