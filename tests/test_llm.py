"""The LLM adapter over google-genai's public client: what goes on the wire, retries, and failures as LLMError."""

from __future__ import annotations

import time

import pytest
from google import genai
from google.genai import errors, types

from pipeline.llm import LLM, LLMError, model_content, text_config, user_content
from tests.fakes.gemini import FakeGemini, Fault

HISTORY = [user_content("I want to run 10 km"), model_content("Good: start with 3 × 20 min"),
           user_content("Día 1 hecho ✅ — and \"quotes\", <tags> & emoji 🏃‍♀️")]


async def test_a_request_on_the_wire_is_the_sdks_own(gemini: FakeGemini) -> None:
    """LLM.generate sends exactly the path and body google-genai's public client sends, and reads the same answer."""
    llm = LLM(api_key="test-key", model="gemini-2.5-flash", base_url=gemini.url)
    sdk = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=gemini.url))
    config = text_config("You are a coach.", 0.7)
    try:
        answer = await llm.generate(HISTORY, config)
        ours = gemini.requests[-1]
        theirs = await sdk.aio.models.generate_content(model="gemini-2.5-flash", contents=HISTORY, config=config)
        public = gemini.requests[-1]
    finally:
        await llm.aclose()
        await sdk.aio.aclose()
    assert (ours.path, ours.body) == (public.path, public.body)
    assert answer.text == theirs.text and answer.text.startswith("Coach: Día 1 hecho")
    assert answer.usage.prompt_tokens > 0 and answer.usage.output_tokens > 0
    assert answer.usage.prompt_tokens == (theirs.usage_metadata.prompt_token_count if theirs.usage_metadata else -1)


async def test_5xx_answers_are_retried_by_the_sdk_and_a_400_fails_at_once(gemini: FakeGemini) -> None:
    """A 503 then an answer: retried (google-genai's HttpRetryOptions); a 400: one request, an LLMError."""
    llm = LLM(api_key="test-key", model="gemini-2.5-flash", base_url=gemini.url, backoff_s=0.01)
    try:
        gemini.queue(Fault.status(503), "fine now")
        before = len(gemini.requests)
        assert (await llm.generate(HISTORY, text_config("s", 0.7))).text == "fine now"
        assert len(gemini.requests) - before == 2
        gemini.queue(Fault.status(400))
        before = len(gemini.requests)
        with pytest.raises(LLMError) as caught:
            await llm.generate(HISTORY, text_config("s", 0.7))
        assert isinstance(caught.value.__cause__, errors.ClientError) and caught.value.kind == "unavailable"
        assert len(gemini.requests) - before == 1
    finally:
        await llm.aclose()


async def test_a_429_waits_as_long_as_the_server_asks_then_retries(gemini: FakeGemini) -> None:
    """A 429 with retryDelay 0.3s is retried by Rein after about that long (the SDK cannot read the hint)."""
    llm = LLM(api_key="test-key", model="gemini-2.5-flash", base_url=gemini.url, backoff_s=0.01)
    try:
        gemini.queue(Fault.status(429, retry_delay="0.3s"), "after the pause")
        started = time.monotonic()
        answer = await llm.generate(HISTORY, text_config("s", 0.7))
        waited = time.monotonic() - started
    finally:
        await llm.aclose()
    assert answer.text == "after the pause"
    assert waited >= 0.3, "the server's retryDelay is honoured"


async def test_a_429_that_persists_is_busy(gemini: FakeGemini) -> None:
    """Every attempt answered 429: the call ends as LLMError("busy") after the configured attempts."""
    llm = LLM(api_key="test-key", model="gemini-2.5-flash", base_url=gemini.url, backoff_s=0.01, attempts=2)
    gemini.fail_always = Fault.status(429)
    before = len(gemini.requests)
    try:
        with pytest.raises(LLMError) as caught:
            await llm.generate(HISTORY, text_config("s", 0.7))
    finally:
        gemini.fail_always = None
        await llm.aclose()
    assert caught.value.kind == "busy" and len(gemini.requests) - before == 2


async def test_a_model_name_the_sdk_refuses_is_an_llm_error_and_sends_nothing(gemini: FakeGemini) -> None:
    """A name google-genai rejects client-side ends as LLMError("internal"), never as a raw exception."""
    llm = LLM(api_key="test-key", model="bad..model", base_url=gemini.url)
    sent = len(gemini.requests)
    try:
        with pytest.raises(LLMError) as caught:
            await llm.generate(HISTORY, text_config("s", 0.7))
    finally:
        await llm.aclose()
    assert caught.value.kind == "internal" and len(gemini.requests) == sent


async def test_a_safety_block_is_blocked_and_an_empty_answer_is_empty(gemini: FakeGemini) -> None:
    """finishReason SAFETY becomes LLMError("blocked"); no candidates becomes LLMError("empty")."""
    llm = LLM(api_key="test-key", model="gemini-2.5-flash", base_url=gemini.url)
    try:
        gemini.queue(Fault.safety())
        with pytest.raises(LLMError) as blocked:
            await llm.generate(HISTORY, text_config("s", 0.7))
        gemini.queue(Fault.empty_candidates())
        with pytest.raises(LLMError) as empty:
            await llm.generate(HISTORY, text_config("s", 0.7))
    finally:
        await llm.aclose()
    assert (blocked.value.kind, empty.value.kind) == ("blocked", "empty")
