"""Lyrics from any OpenAI-compatible chat endpoint (vLLM, TGI, `transformers serve`, hosted APIs).

Plain httpx rather than the openai SDK: the retry policy (which statuses, how long to wait,
what the error says) is part of the round's behaviour and must be the same for every
server. Requests run in a small thread pool, which bounds concurrency without needing an
event loop the caller may already be running.
"""

from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.digest import derive_seed
from pipeline.lyrics.base import GeneratedLyric, LyricRequest
from pipeline.lyrics.llm_common import (
    LyricsBackendError,
    generate_with_retries,
    prompt_digest,
    render_prompt,
    sampling_seed,
)

log = logging.getLogger(__name__)
_MAX_BACKOFF_S = 60.0  # one wait never exceeds a minute, however many retries are allowed
_EXCERPT = 200  # characters of an error body worth showing


class OpenAIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai"] = Field(description="Selects this backend.")
    base_url: str = Field(description="The API root, e.g. http://127.0.0.1:8000/v1; /chat/completions is appended.",
                          json_schema_extra={"needs": "endpoint"})
    model: str = Field(description="The model name the server expects in the request.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key, read at run time; unset = no key sent."
    )
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60, gt=0, description="Seconds one HTTP request may take.")
    max_retries: int = Field(5, ge=0, description="Retries of one request on connection errors, timeouts, 429 and 5xx.")
    backoff_s: float = Field(1.0, ge=0, description="First retry wait; doubles each retry, with deterministic jitter.")
    temperature: float = Field(0.9, ge=0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(512, ge=1, description="Most tokens in one answer.")
    max_attempts: int = Field(3, ge=1, description="Answers asked per lyric before giving up on it.")
    seed_in_request: bool = Field(True, description="Send a per-attempt `seed` (vLLM and others honour it).")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")


def _transport_reason(exc: httpx.TransportError, timeout_s: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"


def _excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds; the HTTP-date form is rare from LLM servers and falls back to backoff."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class OpenAIGenerator:
    name = "openai"

    def __init__(self, options: OpenAIOptions, template_dir: Path | None = None, lyric_max_tokens: int = 300):
        self.options = options
        self.template_dir = template_dir
        self.lyric_max_tokens = lyric_max_tokens  # the round's limit (lyrics.max_tokens)

    def _headers(self) -> dict[str, str]:
        # Read at call time so a key rotated between rounds is picked up; never logged.
        key = os.environ.get(self.options.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _send(self, client: httpx.Client, method: str, path: str, body: dict | None, jitter: random.Random) -> httpx.Response:
        """One request with retries; the final response (2xx or 4xx), or LyricsBackendError naming the endpoint."""
        opts = self.options
        url = f"{opts.base_url}{path}"
        for retry in range(opts.max_retries + 1):
            wait = None
            try:
                response = client.request(method, url, json=body, headers=self._headers())
            except httpx.TransportError as exc:
                reason = _transport_reason(exc, opts.timeout_s)
                failure = f"cannot reach OpenAI-compatible endpoint at {opts.base_url}: {reason}"
            else:
                status = response.status_code
                if status != 429 and status < 500:
                    return response
                failure = f"OpenAI-compatible endpoint at {opts.base_url} answered HTTP {status}: {_excerpt(response)}"
                wait = _retry_after(response) if status == 429 else None
            if retry == opts.max_retries:
                break
            if wait is None:
                wait = min(_MAX_BACKOFF_S, opts.backoff_s * 2**retry * (0.5 + jitter.random()))
            log.warning("%s %s: %s; retry %d/%d in %.2f s", method, url, failure, retry + 1, opts.max_retries, wait)
            time.sleep(wait)
        raise LyricsBackendError(f"{failure} after {opts.max_retries} retries")

    def _complete(self, client: httpx.Client, request: LyricRequest, attempt: int) -> str | LyricsBackendError:
        """The answer's text; a request the server rejects is returned as an error, exhausted retries raise."""
        opts = self.options
        seed = sampling_seed(request.seed, attempt)
        body = {
            "model": opts.model,
            "messages": render_prompt(request, self.template_dir),
            "temperature": opts.temperature,
            "top_p": opts.top_p,
            "max_tokens": opts.max_tokens,
        }
        if opts.seed_in_request:
            body["seed"] = seed
        response = self._send(client, "POST", "/chat/completions", body, random.Random(derive_seed("backoff", seed)))
        if response.status_code >= 400:
            return LyricsBackendError(
                f"OpenAI-compatible endpoint at {opts.base_url} answered HTTP {response.status_code}: {_excerpt(response)}"
            )
        try:
            return response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            return LyricsBackendError(f"OpenAI-compatible endpoint at {opts.base_url} sent no chat completion: {_excerpt(response)}")

    def answers(self, requests: list[LyricRequest], attempt: int = 1) -> list[str | LyricsBackendError]:
        """Raw answers (or per-request failures) for one attempt, at most max_concurrency in flight."""
        opts = self.options
        # Once one request has used up its retries the server is down: the rest fail at once with
        # the same error instead of each waiting through its own backoff (a shard would take hours).
        gave_up: list[LyricsBackendError] = []

        def one(request: LyricRequest) -> str | LyricsBackendError:
            if gave_up:
                return gave_up[0]
            try:
                return self._complete(client, request, attempt)
            except LyricsBackendError as exc:
                gave_up.append(exc)
                return exc

        limits = httpx.Limits(max_connections=opts.max_concurrency)
        with httpx.Client(timeout=opts.timeout_s, limits=limits) as client:
            with ThreadPoolExecutor(max_workers=opts.max_concurrency) as pool:
                return list(pool.map(one, requests))

    def check_endpoint(self) -> None:
        """Fail before a round starts when the server is unreachable or refuses the key."""
        opts = self.options
        with httpx.Client(timeout=opts.timeout_s) as client:
            response = self._send(client, "GET", "/models", None, random.Random(derive_seed("backoff", "check")))
        if response.status_code in (401, 403):
            raise LyricsBackendError(
                f"OpenAI-compatible endpoint at {opts.base_url} refused the key from ${opts.api_key_env} "
                f"(HTTP {response.status_code}): {_excerpt(response)}"
            )

    def generate(self, requests: list[LyricRequest]) -> list[GeneratedLyric]:
        return generate_with_retries(requests, self.answers, self.options.max_attempts, self.lyric_max_tokens)

    def describe(self) -> dict:
        opts = self.options
        return {
            "backend": self.name,
            "base_url": opts.base_url,
            "model": opts.model,
            "prompt_digest": prompt_digest(self.template_dir),
            "sampling": {
                "temperature": opts.temperature,
                "top_p": opts.top_p,
                "max_tokens": opts.max_tokens,
                "max_attempts": opts.max_attempts,
                "seed_in_request": opts.seed_in_request,
            },
        }
