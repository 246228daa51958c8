"""The LLM adapter's direct request path: the same request as google-genai's model layer, less of its work."""

from __future__ import annotations

from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from google.genai import models as genai_models

from pipeline.llm import LLM, LLMError, model_content, plain_request_body, user_content
from tests.fakes.gemini import FakeGemini, Fault

HISTORY = [user_content("I want to run 10 km"), model_content("Good: start with 3 × 20 min"),
           user_content("Día 1 hecho ✅ — and \"quotes\", <tags> & emoji 🏃‍♀️")]


def sdk_body(contents: list[types.Content], config: types.GenerateContentConfig) -> dict[str, Any]:
    """The body google-genai's own model layer builds for these contents and config."""
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url="http://127.0.0.1:9"))
    params = types._GenerateContentParameters(model="gemini-2.5-flash", contents=contents, config=config)
    body = genai_models._GenerateContentParameters_to_mldev(client._api_client, params, None, params)
    return {k: v for k, v in body.items() if not k.startswith("_") and k != "config"}


@pytest.mark.parametrize("config", [
    types.GenerateContentConfig(system_instruction="You are a coach.", temperature=0.7),
    types.GenerateContentConfig(system_instruction="Only a system prompt"),
    types.GenerateContentConfig(temperature=0.0),
    types.GenerateContentConfig(),
])
def test_plain_body_is_the_one_the_sdk_builds(config: types.GenerateContentConfig) -> None:
    """For text parts, a system prompt and a temperature, the direct body equals the SDK's own conversion."""
    for contents in (HISTORY, HISTORY[:1], [types.Content(role="user", parts=[types.Part(text="a"),
                                                                                types.Part(text="b")])]):
        assert plain_request_body(contents, config) == sdk_body(contents, config)


@pytest.mark.parametrize(("contents", "config"), [
    (HISTORY, types.GenerateContentConfig(response_mime_type="application/json")),
    (HISTORY, types.GenerateContentConfig(system_instruction="s", max_output_tokens=10)),
    ([types.Content(role="user", parts=[types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png")])],
     types.GenerateContentConfig()),
    ([types.Content(role="user", parts=[])], types.GenerateContentConfig()),
    ([types.Content(parts=[types.Part(text="no role")])], types.GenerateContentConfig()),
    ([types.Content(role="user", parts=[types.Part(text="thinking", thought=True)])], types.GenerateContentConfig()),
])
def test_anything_but_a_plain_request_takes_the_sdk_path(contents: list[types.Content],
                                                        config: types.GenerateContentConfig) -> None:
    """Schemas, other settings, non-text or flagged parts and missing roles get no direct body."""
    assert plain_request_body(contents, config) is None


async def test_a_coaching_request_on_the_wire_matches_the_sdk_and_parses_the_same(gemini: FakeGemini) -> None:
    """LLM.text sends the path and body the SDK would, and reads the answer and usage the same way."""
    llm = LLM(api_key="test-key", model="gemini-2.5-flash", base_url=gemini.url)
    sdk = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=gemini.url))
    config = types.GenerateContentConfig(system_instruction="You are a coach.", temperature=0.7)
    try:
        text = await llm.text(system="You are a coach.", contents=HISTORY)
        direct = gemini.requests[-1]
        answer = await sdk.aio.models.generate_content(model="gemini-2.5-flash", contents=HISTORY, config=config)
        public = gemini.requests[-1]
    finally:
        await llm.aclose()
        await sdk.aio.aclose()
    assert (direct.path, direct.body) == (public.path, public.body)
    assert text == (answer.text or "").strip() and text.startswith("Coach: Día 1 hecho")


async def test_gemini_errors_on_the_direct_path_are_the_sdks_and_are_retried(gemini: FakeGemini) -> None:
    """A 503 then an answer: retried; a 400: the SDK's ClientError becomes an LLMError at once."""
    llm = LLM(api_key="test-key", model="gemini-2.5-flash", base_url=gemini.url, backoff_s=0.01)
    try:
        gemini.queue(Fault.status(503), "fine now")
        assert await llm.text(system="s", contents=HISTORY) == "fine now"
        gemini.queue(Fault.status(400))
        with pytest.raises(LLMError) as caught:
            await llm.text(system="s", contents=HISTORY)
        assert isinstance(caught.value.__cause__, errors.ClientError) and caught.value.kind == "unavailable"
    finally:
        await llm.aclose()


async def test_a_model_name_the_sdk_refuses_falls_back_to_its_public_path(gemini: FakeGemini) -> None:
    """No direct path for a name the SDK rejects: its own error surfaces, nothing is sent."""
    llm = LLM(api_key="test-key", model="bad..model", base_url=gemini.url)
    sent = len(gemini.requests)
    try:
        with pytest.raises(ValueError, match="invalid model"):
            await llm.text(system="s", contents=HISTORY)
    finally:
        await llm.aclose()
    assert len(gemini.requests) == sent
