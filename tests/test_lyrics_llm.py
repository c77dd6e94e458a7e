"""The LLM lyrics backends, run for real: tiny local models, `transformers serve`, real HTTP servers."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time

import pytest
from pydantic import ValidationError

from llm_fixtures import (
    MEMORISED,
    REQUESTS,
    ScriptedServer,
    build_model,
    build_tokenizer,
    completion,
    free_port,
    memorise,
    save,
    transformers_serve,
)
from pipeline.lyrics.base import LyricRequest
from pipeline.lyrics.format import validate_lyrics
from pipeline.lyrics.llm_common import (
    PROMPTS_DIR,
    LyricsBackendError,
    answer_to_lyric,
    prompt_digest,
    render_prompt,
)
from pipeline.lyrics.openai_backend import OpenAIGenerator, OpenAIOptions
from pipeline.lyrics.transformers_backend import TransformersGenerator, TransformersOptions

NO_KEY_ENV = "SONGPREF_TEST_UNSET_KEY"
GARBAGE = "la la la no tags here"


def variants(n: int) -> list[LyricRequest]:
    """n requests with the prompts of REQUESTS (which the memorising model knows), distinct ids and seeds."""
    return [dataclasses.replace(REQUESTS[i % 2], lyric_id=f"lyr-{i:07d}", seed=100 + i) for i in range(n)]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def random_model_dir(tokenizer, tmp_path_factory):
    return save(build_model(tokenizer, seed=1), tokenizer, tmp_path_factory.mktemp("random-lm"))


@pytest.fixture(scope="session")
def memorised_model_dir(tokenizer, tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core box: more threads only contend
    try:
        model = build_model(tokenizer, seed=0)
        loss = memorise(model, tokenizer, steps=120)
    finally:
        torch.set_num_threads(threads)
    assert loss < 0.05, f"the tiny model did not memorise its lyrics (loss {loss:.3f})"
    return save(model, tokenizer, tmp_path_factory.mktemp("memorised-lm"))


@pytest.fixture(scope="session")
def serve_url(tmp_path_factory):
    with transformers_serve(tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


def openai_options(base_url: str, **kw) -> OpenAIOptions:
    defaults = {"backend": "openai", "base_url": base_url, "model": "m", "api_key_env": NO_KEY_ENV, "backoff_s": 0.01}
    return OpenAIOptions(**(defaults | kw))


# --- prompts and answers ------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "zh"])
def test_prompt_has_slots_filled_and_a_valid_example(language):
    request = LyricRequest("x", 1, language, "defiant", "a broken radio")
    messages = render_prompt(request)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "defiant" in messages[1]["content"] and "a broken radio" in messages[1]["content"]
    assert "{" not in messages[1]["content"]
    examples = [line for line in messages[1]["content"].splitlines() if line.startswith("[intro")]
    assert len(examples) == 1 and validate_lyrics(examples[0]) == []


def test_prompt_errors_and_digest(tmp_path):
    with pytest.raises(ValueError, match="'fr'.*have: en, zh"):
        render_prompt(LyricRequest("x", 1, "fr", "calm", "sea"))
    shutil.copytree(PROMPTS_DIR, tmp_path / "p")
    assert prompt_digest(tmp_path / "p") == prompt_digest()
    (tmp_path / "p" / "lyrics_en.txt").write_text("--- system ---\nS\n--- user ---\nWrite {emotion} about {theme}.\n")
    assert prompt_digest(tmp_path / "p") != prompt_digest()
    messages = render_prompt(LyricRequest("x", 1, "en", "calm", "sea"), tmp_path / "p")
    assert messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "Write calm about sea."}]
    (tmp_path / "p" / "lyrics_en.txt").write_text("no roles {emotion}")
    with pytest.raises(ValueError, match="--- system ---"):
        render_prompt(LyricRequest("x", 1, "en", "calm", "sea"), tmp_path / "p")


def test_answer_to_lyric_accepts_repairs_and_explains():
    assert answer_to_lyric(MEMORISED["en"]) == (MEMORISED["en"], "")
    yue = "Here are the lyrics:\n[Verse 1]\nCold wind on the hill\nI wait for you still\n\n[Chorus]\nCome back to me"
    lyric, reason = answer_to_lyric(yue)
    assert lyric == "[verse] Cold wind on the hill. I wait for you still. ; [chorus] Come back to me." and reason == ""
    lyric, reason = answer_to_lyric(GARBAGE)
    assert lyric is None and reason.startswith("missing_tag: ")


# --- transformers backend --------------------------------------------------------------------


def test_transformers_options_are_checked(tmp_path):
    with pytest.raises(ValidationError, match=f"model directory {tmp_path / 'nope'} does not exist"):
        TransformersOptions(backend="transformers", model_dir=tmp_path / "nope")
    with pytest.raises(ValidationError, match="extra"):
        TransformersOptions(backend="transformers", model_dir=tmp_path, temprature=1)
    for model in (TransformersOptions, OpenAIOptions):
        assert all(f.description for f in model.model_fields.values()), model


def test_transformers_garbage_is_batched_reproducible_and_rejected(random_model_dir):
    options = TransformersOptions(
        backend="transformers", model_dir=random_model_dir, batch_size=2, max_new_tokens=16, temperature=1.0
    )
    generator = TransformersGenerator(options)
    requests = variants(3)  # two batches: 2 + 1, English and Chinese prompts mixed
    first = generator.answers(requests, attempt=1)
    assert len(first) == 3 and all(isinstance(a, str) for a in first)
    assert TransformersGenerator(options).answers(requests, attempt=1) == first
    assert generator.answers(requests, attempt=2) != first
    results = generator.generate(requests)
    assert [r.lyric_id for r in results] == [r.lyric_id for r in requests]
    for r in results:
        assert r.text == "" and r.attempts == 3
        assert r.error.startswith("not valid lyrics after 3 attempts: ")
    described = generator.describe()
    assert described["backend"] == "transformers" and described["prompt_digest"] == prompt_digest()
    assert described["model_digest"] == TransformersGenerator(options).describe()["model_digest"]
    assert described["sampling"]["temperature"] == 1.0 and described["chat_template"] is True


def test_transformers_without_chat_template_uses_plain_text(random_model_dir, tmp_path):
    plain = shutil.copytree(random_model_dir, tmp_path / "plain")
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    generator = TransformersGenerator(TransformersOptions(backend="transformers", model_dir=plain, max_new_tokens=4))
    assert not generator.tokenizer.chat_template
    assert generator._prompt_text(REQUESTS[0]).startswith("System: You are a songwriter")
    assert len(generator.answers(REQUESTS)) == 2


def test_transformers_memorised_model_writes_valid_lyrics(memorised_model_dir):
    options = TransformersOptions(backend="transformers", model_dir=memorised_model_dir, temperature=0, max_new_tokens=80)
    results = TransformersGenerator(options).generate(variants(3))
    for request, result in zip(variants(3), results):
        assert result.error is None and result.attempts == 1
        assert result.text == MEMORISED[request.language] and validate_lyrics(result.text) == []


# --- openai backend against `transformers serve` ---------------------------------------------


def test_openai_backend_against_transformers_serve(serve_url, random_model_dir, memorised_model_dir):
    garbage = OpenAIGenerator(openai_options(serve_url, model=str(random_model_dir), max_tokens=12, temperature=1.0))
    garbage.check_endpoint()
    for result in garbage.generate(variants(2)):
        assert result.text == "" and result.attempts == 3
        assert result.error.startswith("not valid lyrics after 3 attempts: ")

    options = openai_options(serve_url, model=str(memorised_model_dir), temperature=0, max_tokens=80, max_concurrency=2)
    requests = variants(8)
    results = OpenAIGenerator(options).generate(requests)
    assert [r.lyric_id for r in results] == [r.lyric_id for r in requests]
    for request, result in zip(requests, results):
        assert (result.text, result.error, result.attempts) == (MEMORISED[request.language], None, 1)


# --- openai backend: retries, backoff, errors against scripted servers ---------------------------


def test_429_is_retried_honouring_retry_after():
    script = [(429, {"Retry-After": "0"}, {"error": "slow down"})] * 2 + [(200, {}, completion(MEMORISED["en"]))]
    with ScriptedServer(script) as server:
        started = time.monotonic()
        # backoff_s=30 would take a minute: only Retry-After: 0 keeps this fast
        [result] = OpenAIGenerator(openai_options(server.base_url, backoff_s=30)).generate(variants(1))
    assert time.monotonic() - started < 10
    assert (result.text, result.error) == (MEMORISED["en"], None)
    assert len(server.bodies) == 3 and all(b["seed"] == server.bodies[0]["seed"] for b in server.bodies)
    assert all("Authorization" not in h for h in server.headers)


def test_5xx_is_retried_and_the_key_is_sent_but_never_logged(monkeypatch, caplog):
    monkeypatch.setenv("SONGPREF_TEST_KEY", "sk-secret-123")
    script = [(500, {}, {"error": "boom"}), (200, {}, completion(MEMORISED["en"]))]
    with caplog.at_level(logging.DEBUG), ScriptedServer(script) as server:
        [result] = OpenAIGenerator(openai_options(server.base_url, api_key_env="SONGPREF_TEST_KEY")).generate(variants(1))
    assert result.text == MEMORISED["en"] and len(server.bodies) == 2
    assert {h["Authorization"] for h in server.headers} == {"Bearer sk-secret-123"}
    assert "HTTP 500" in caplog.text and "sk-secret-123" not in caplog.text


def test_4xx_is_not_retried_and_named():
    with ScriptedServer([(400, {}, {"error": {"message": "bad model name"}})]) as server:
        [result] = OpenAIGenerator(openai_options(server.base_url)).generate(variants(1))
    assert len(server.bodies) == 1 and result.text == "" and result.attempts == 1
    assert result.error.startswith(f"OpenAI-compatible endpoint at {server.base_url} answered HTTP 400: ")
    assert "bad model name" in result.error


def test_persistent_5xx_and_timeouts_give_up_after_max_retries():
    with ScriptedServer([(503, {}, {"error": "overloaded"})]) as server:
        [result] = OpenAIGenerator(openai_options(server.base_url, max_retries=2)).generate(variants(1))
    assert len(server.bodies) == 3
    assert result.error.startswith(f"OpenAI-compatible endpoint at {server.base_url} answered HTTP 503: ")
    assert result.error.endswith("after 2 retries")
    with ScriptedServer([(200, {}, completion(MEMORISED["en"]))], delay_s=1.0) as server:
        [result] = OpenAIGenerator(openai_options(server.base_url, max_retries=1, timeout_s=0.2)).generate(variants(1))
    assert result.error == f"cannot reach OpenAI-compatible endpoint at {server.base_url}: timed out after 0.2 s after 1 retries"


def test_a_server_that_stays_down_fails_the_rest_of_the_batch_at_once():
    with ScriptedServer([(503, {}, {"error": "overloaded"})]) as server:
        options = openai_options(server.base_url, max_retries=2, max_concurrency=1)
        results = OpenAIGenerator(options).generate(variants(4))
    assert len(server.bodies) == 3  # the first request's tries only
    assert len({r.error for r in results}) == 1 and results[0].error.endswith("after 2 retries")


def test_unreachable_endpoint_is_named():
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there any more
    generator = OpenAIGenerator(openai_options(base_url, max_retries=5))
    expected = f"cannot reach OpenAI-compatible endpoint at {base_url}: connection refused after 5 retries"
    with pytest.raises(LyricsBackendError) as raised:
        generator.check_endpoint()
    assert str(raised.value) == expected
    results = generator.generate(variants(2))
    assert [(r.text, r.error, r.attempts) for r in results] == [("", expected, 1)] * 2


def test_check_endpoint_reports_a_refused_key(monkeypatch):
    monkeypatch.setenv("SONGPREF_TEST_KEY", "sk-wrong")
    with ScriptedServer([(401, {}, {"error": "invalid api key"})]) as server:
        with pytest.raises(LyricsBackendError, match=r"refused the key from \$SONGPREF_TEST_KEY \(HTTP 401\)") as raised:
            OpenAIGenerator(openai_options(server.base_url, api_key_env="SONGPREF_TEST_KEY")).check_endpoint()
    assert "sk-wrong" not in str(raised.value)


def test_concurrency_is_bounded_and_not_lyrics_are_asked_again_with_new_seeds():
    with ScriptedServer([(200, {}, completion(MEMORISED["en"]))], delay_s=0.1) as server:
        results = OpenAIGenerator(openai_options(server.base_url, max_concurrency=2)).generate(variants(8))
    assert all(r.text == MEMORISED["en"] for r in results) and len(server.bodies) == 8
    assert server.max_in_flight == 2
    with ScriptedServer([(200, {}, completion(GARBAGE))]) as server:
        [result] = OpenAIGenerator(openai_options(server.base_url, max_attempts=3)).generate(variants(1))
    assert result.error.startswith("not valid lyrics after 3 attempts: missing_tag: ")
    assert len({b["seed"] for b in server.bodies}) == 3
    with ScriptedServer([(200, {}, completion(GARBAGE))]) as server:
        OpenAIGenerator(openai_options(server.base_url, max_attempts=1, seed_in_request=False)).generate(variants(1))
    assert "seed" not in server.bodies[0]
