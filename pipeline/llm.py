"""The one adapter over google-genai: timeouts, retries with backoff, structured output."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import httpx
from google import genai
from google.genai import _transformers as genai_transformers
from google.genai import errors, types
from google.genai import models as genai_models
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from pipeline.tracing import Tracer

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
# One Gemini request: the contents and the config in, google-genai's response out (what metrics wrap).
Request = Callable[[list[types.Content], types.GenerateContentConfig], Awaitable[types.GenerateContentResponse]]


class LLMError(Exception):
    """The LLM could not give a usable answer; `kind` says why (for the user-facing message)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # busy | unavailable | timeout | invalid | blocked | empty


@dataclass
class Usage:
    """Token counts of one call."""

    model: str
    prompt_tokens: int = 0
    output_tokens: int = 0


_USAGE: ContextVar[list[Usage] | None] = ContextVar("rein_llm_usage", default=None)


@contextmanager
def collect_usage() -> Iterator[list[Usage]]:
    """Collect the token usage of every LLM call made inside the block (in this task)."""
    bucket: list[Usage] = []
    token = _USAGE.set(bucket)
    try:
        yield bucket
    finally:
        _USAGE.reset(token)


def drain_usage() -> list[Usage]:
    """Take the usage collected so far in this block (so it is stored once)."""
    bucket = _USAGE.get()
    if not bucket:
        return []
    taken = list(bucket)
    bucket.clear()
    return taken


def estimate_cost(prompt_tokens: int, output_tokens: int, prices: tuple[Decimal, Decimal]) -> float:
    """USD for the tokens at (input, output) prices per million tokens."""
    total = Decimal(prompt_tokens) * prices[0] + Decimal(output_tokens) * prices[1]
    return float(total / Decimal(1_000_000))


def _usage_of(response: Any, model: str) -> Usage:
    meta = getattr(response, "usage_metadata", None)
    if meta is None:
        return Usage(model=model)
    output = (meta.candidates_token_count or 0) + (getattr(meta, "thoughts_token_count", None) or 0)
    return Usage(model=model, prompt_tokens=meta.prompt_token_count or 0, output_tokens=output)


def _record_usage(usage: Usage) -> None:
    bucket = _USAGE.get()
    if bucket is not None:
        bucket.append(usage)


def _span_input(contents: list[types.Content], config: types.GenerateContentConfig) -> dict[str, Any]:
    """What a traced call was asked, as plain strings: the system prompt, the messages, the settings."""
    schema = config.response_schema
    return {
        "system": config.system_instruction,
        "messages": [{"role": c.role, "text": "".join(p.text or "" for p in c.parts or [])} for c in contents],
        "temperature": config.temperature,
        "schema": getattr(schema, "__name__", None),
    }


def _answer_text(response: Any) -> str:
    try:
        return str(response.text or "")
    except Exception:  # an answer without text parts
        return ""


_RETRY_DELAY = re.compile(r"retryDelay['\"]?:\s*['\"]?(\d+(?:\.\d+)?)s")


def _retry_hint(error: errors.APIError) -> float | None:
    match = _RETRY_DELAY.search(str(error.details) if error.details else str(error))
    return float(match.group(1)) if match else None


class LLM:
    """Gemini through google-genai's async client; one instance per process."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        attempts: int = 3,
        backoff_s: float = 1.0,
        wrap: Callable[[Request], Request] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        # Rein's own aiohttp session for Gemini (created in the running loop, closed by `aclose`): the SDK's
        # default one reads proxy variables and ~/.netrc in a worker thread on every request. Proxies set in
        # the environment when Rein starts are still honoured.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=_proxied())
        options = types.HttpOptions(base_url=base_url, timeout=int(timeout_s * 1000), aiohttp_client=self._session)
        self._client = genai.Client(api_key=api_key, http_options=options)
        # The SDK's API client (auth, base URL, time-outs, errors) for plain text requests: see `_generate`.
        self._api, self._path = _direct_api(self._client, model)
        self._request: Request = wrap(self._generate) if wrap else self._generate
        self._tracer = tracer if tracer is not None and tracer.enabled else None
        self.model = model
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s

    async def text(self, *, system: str, contents: list[types.Content], temperature: float = 0.7) -> str:
        """A free-text answer."""
        config = types.GenerateContentConfig(system_instruction=system, temperature=temperature)
        response = await self._call(contents, config)
        text = (response.text or "").strip()
        if not text:
            raise LLMError("empty", "no text in the answer")
        return text

    async def structured(
        self, schema: type[T], *, system: str, contents: list[types.Content], temperature: float = 0.4
    ) -> T:
        """An answer parsed into `schema`; output that fails validation is asked for once more."""
        config = types.GenerateContentConfig(
            system_instruction=system,
            temperature=temperature,
            response_mime_type="application/json",
            response_schema=schema,
        )
        last_error = ""
        for _ in range(2):
            response = await self._call(contents, config)
            try:
                if isinstance(response.parsed, schema):
                    return response.parsed
                return schema.model_validate_json(response.text or "")
            except ValidationError as exc:
                last_error = str(exc).splitlines()[0]
                logger.warning("llm.invalid_output schema=%s error=%s", schema.__name__, last_error)
        raise LLMError("invalid", last_error)

    async def _call(self, contents: list[types.Content], config: types.GenerateContentConfig) -> Any:
        delay = self.backoff_s
        tracer = self._tracer
        traced = _span_input(contents, config) if tracer else {}
        for attempt in range(1, self.attempts + 1):
            span: AbstractContextManager[Any] = (
                tracer.llm_call(model=self.model, input=traced) if tracer else nullcontext())
            try:
                async with asyncio.timeout(self.timeout_s + 1):
                    with span as call:
                        response = await self._request(contents, config)
                        usage = _usage_of(response, self.model)
                        if call is not None:
                            finish = response.candidates[0].finish_reason if response.candidates else None
                            call.record(_answer_text(response), prompt_tokens=usage.prompt_tokens,
                                        output_tokens=usage.output_tokens, finish_reason=str(finish or ""))
            except errors.APIError as exc:
                retryable = exc.code == 429 or (exc.code or 0) >= 500
                kind = "busy" if exc.code == 429 else "unavailable"
                if not retryable or attempt == self.attempts:
                    raise LLMError(kind, f"HTTP {exc.code}") from exc
                wait = min(_retry_hint(exc) or delay, 10 * self.backoff_s + 5)
            except (TimeoutError, httpx.TimeoutException) as exc:
                if attempt == self.attempts:
                    raise LLMError("timeout", f"no answer in {self.timeout_s:.0f} s") from exc
                wait = delay
            except (httpx.TransportError, aiohttp.ClientError, OSError) as exc:
                if attempt == self.attempts:
                    raise LLMError("unavailable", type(exc).__name__) from exc
                wait = delay
            else:
                _record_usage(usage)
                return _check_candidates(response)
            logger.info("llm.retry attempt=%d wait_s=%.2f", attempt, wait)
            await asyncio.sleep(wait * (1 + random.random() * 0.1))
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _generate(self, contents: list[types.Content],
                        config: types.GenerateContentConfig) -> types.GenerateContentResponse:
        """One request through google-genai. A plain text request (a system prompt, a temperature, text
        parts: every coaching turn) goes straight to the SDK's API client with the body its model layer
        would build: that layer re-validates and walks every part field by field, which cost ~1 ms per
        message of history (docs/PERFORMANCE.md). Anything else takes the SDK's public path."""
        body = plain_request_body(contents, config) if self._api is not None else None
        if body is None:
            return await self._client.aio.models.generate_content(model=self.model, contents=contents,
                                                                  config=config)
        assert self._api is not None
        http = await self._api.async_request("post", self._path, body, None)
        raw = json.loads(http.body) if http.body else {}
        response = types.GenerateContentResponse._from_response(
            response=genai_models._GenerateContentResponse_from_mldev(raw), kwargs={})
        response.sdk_http_response = types.HttpResponse(headers=http.headers)
        return response

    async def aclose(self) -> None:
        """Release the client's connections."""
        try:
            await self._client.aio.aclose()
        except Exception:  # the client may already be closed
            logger.debug("llm.close_failed", exc_info=True)
        finally:
            await self._session.close()


def _proxied() -> bool:
    """Whether the environment names an HTTP proxy (then aiohttp must read it, as the SDK's session would)."""
    return any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                                  "ALL_PROXY", "all_proxy"))


def _check_candidates(response: Any) -> Any:
    candidates = response.candidates or []
    if not candidates:
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and getattr(feedback, "block_reason", None):
            raise LLMError("blocked", str(feedback.block_reason))
        raise LLMError("empty", "no candidates")
    first = candidates[0]
    finish = str(first.finish_reason or "")
    if "SAFETY" in finish or "PROHIBITED" in finish or "BLOCKLIST" in finish:
        raise LLMError("blocked", finish)
    if not first.content or not first.content.parts:
        raise LLMError("empty", f"no content (finish {finish})")
    return response


_PLAIN_CONFIG = frozenset({"system_instruction", "temperature"})


def plain_request_body(contents: list[types.Content],
                       config: types.GenerateContentConfig) -> dict[str, Any] | None:
    """The Gemini API body for a request of text parts, a text system prompt and a temperature, as
    google-genai's model layer builds it (a test compares the two); None for any other request."""
    if not config.model_fields_set <= _PLAIN_CONFIG or not isinstance(config.system_instruction, (str, type(None))):
        return None
    messages = []
    for content in contents:
        parts = content.parts or []
        if not content.model_fields_set <= {"role", "parts"} or not parts or content.role not in ("user", "model"):
            return None
        if any(part.model_fields_set != {"text"} or part.text is None for part in parts):
            return None
        messages.append({"parts": [{"text": part.text} for part in parts], "role": content.role})
    body: dict[str, Any] = {"contents": messages}
    if config.system_instruction is not None:
        body["systemInstruction"] = {"parts": [{"text": config.system_instruction}], "role": "user"}
    body["generationConfig"] = {} if config.temperature is None else {"temperature": config.temperature}
    return body


def _direct_api(client: genai.Client, model: str) -> tuple[Any, str]:
    """The SDK's API client and the model's generateContent path, for plain requests; (None, "") when this
    SDK version or set-up (Vertex AI) does not offer them, and every request takes the public path."""
    api = getattr(client.aio, "_api_client", None)
    if (api is None or getattr(api, "vertexai", True) or not hasattr(api, "async_request")
            or not hasattr(genai_models, "_GenerateContentResponse_from_mldev")):
        return None, ""
    try:
        return api, f"{genai_transformers.t_model(api, model)}:generateContent"
    except (ValueError, AttributeError):  # a model name the SDK refuses: its public path says why
        return None, ""


def user_content(text: str) -> types.Content:
    """One user message as google-genai content."""
    return types.Content(role="user", parts=[types.Part(text=text)])


def model_content(text: str) -> types.Content:
    """One coach (model) message as google-genai content."""
    return types.Content(role="model", parts=[types.Part(text=text)])
