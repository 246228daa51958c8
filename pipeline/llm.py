"""The one adapter over google-genai, through its public client only: time-outs, retries, structured output,
streamed answers.

Retries: google-genai's own `HttpRetryOptions` retries 408 and 5xx answers and dropped connections with
exponential back-off. A 429 is left to Rein's loop here, because the SDK does not read the server's
`retryDelay` hint ("retry in 7 s") and would hammer a quota that has told it when to come back. Any failure
ends as an `LLMError` whose `kind` the user-facing text is chosen by; nothing else escapes.

A streamed answer (`stream`, google-genai's `generate_content_stream`) is retried the same way until its first
chunk arrives; after that, text has been shown, and a failure ends the answer as an `LLMError`. Its usage is the
last chunk's `usage_metadata` (complete only there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")
# One Gemini request: the contents and the config in, google-genai's response out (what metrics wrap).
Request = Callable[[list[types.Content], types.GenerateContentConfig], Awaitable[types.GenerateContentResponse]]
Chunks = AsyncIterator[types.GenerateContentResponse]
# A streamed request, opened: the chunks to come and the first one (None: the stream was empty).
Opened = tuple[Chunks, types.GenerateContentResponse | None]


class Wrap(Protocol):
    """What wraps each request (plain or the opening of a stream), as metrics time them."""

    def __call__(self, request: Callable[[list[types.Content], types.GenerateContentConfig], Awaitable[R]],
                 /) -> Callable[[list[types.Content], types.GenerateContentConfig], Awaitable[R]]: ...

RETRIED_BY_SDK = [408, 500, 502, 503, 504]  # 429 is Rein's: see the module docstring


class LLMError(Exception):
    """The LLM could not give a usable answer; `kind` says why (for the user-facing message)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind  # busy | unavailable | timeout | invalid | blocked | empty | internal


@dataclass(frozen=True)
class Usage:
    """Token counts of one call."""

    model: str
    prompt_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Answer:
    """One answer of the model: its text, token usage and finish reason, and the parsed object (schemas)."""

    text: str
    usage: Usage
    finish_reason: str
    parsed: Any = None
    first_chunk_s: float | None = None  # streamed: seconds from the request to its first chunk


def usage_of(response: Any, model: str) -> Usage:
    """The token counts google-genai reports on a response (thinking tokens count as output)."""
    meta = getattr(response, "usage_metadata", None)
    if meta is None:
        return Usage(model=model)
    output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
    return Usage(model=model, prompt_tokens=meta.prompt_token_count or 0, output_tokens=output)


_RETRY_DELAY = re.compile(r"retryDelay['\"]?:\s*['\"]?(\d+(?:\.\d+)?)s")


def retry_hint(error: errors.APIError) -> float | None:
    """The seconds a 429 asks the caller to wait (Gemini's `RetryInfo.retryDelay`), if it says."""
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
        wrap: Wrap | None = None,
    ) -> None:
        # Rein's own aiohttp session (google-genai's public `aiohttp_client` option): proxies named in the
        # environment are honoured, and it is closed with `aclose`.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=_proxied())
        retry = types.HttpRetryOptions(attempts=attempts, initial_delay=backoff_s, max_delay=max(backoff_s * 8, 0.1),
                                       jitter=backoff_s / 10, http_status_codes=RETRIED_BY_SDK)
        options = types.HttpOptions(base_url=base_url, timeout=int(timeout_s * 1000), aiohttp_client=self._session,
                                    retry_options=retry)
        self._client = genai.Client(api_key=api_key, http_options=options)
        self._request: Request = wrap(self._generate) if wrap else self._generate
        self._open: Callable[[list[types.Content], types.GenerateContentConfig], Awaitable[Opened]] = (
            wrap(self._open_stream) if wrap else self._open_stream)
        self.model = model
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s

    async def generate(self, contents: list[types.Content], config: types.GenerateContentConfig) -> Answer:
        """One request (retried as the module docstring says); every failure becomes an `LLMError`."""
        response = await self._retrying(lambda: self._request(contents, config))
        return _answer(response, self.model)

    async def stream(self, contents: list[types.Content], config: types.GenerateContentConfig,
                     on_text: Callable[[str], None]) -> Answer:
        """One streamed request: `on_text` gets each piece of text as it arrives, the whole answer comes back at
        the end (usage from the last chunk). Opening is retried as `generate` is; every failure is an `LLMError`."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        chunks, first = await self._retrying(lambda: self._open(contents, config))
        first_chunk_s = loop.time() - started
        received: list[types.GenerateContentResponse] = []
        try:
            async with asyncio.timeout(self.timeout_s + 1):
                chunk = first
                while chunk is not None:
                    received.append(chunk)
                    piece = _piece(chunk)
                    if piece:
                        on_text(piece)
                    chunk = await anext(chunks, None)
        except errors.APIError as exc:
            raise LLMError("busy" if exc.code == 429 else "unavailable", f"HTTP {exc.code} mid-stream") from exc
        except Exception as exc:
            raise _failure(exc) from exc
        return _streamed(received, self.model, first_chunk_s)

    async def _retrying(self, request: Callable[[], Awaitable[R]]) -> R:
        """`request()` with Rein's 429 loop; every failure becomes an `LLMError`."""
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                async with asyncio.timeout(self.timeout_s * self.attempts + 1):
                    return await request()
            except errors.APIError as exc:
                if exc.code != 429 or attempt == self.attempts:
                    kind = "busy" if exc.code == 429 else "unavailable"
                    raise LLMError(kind, f"HTTP {exc.code}") from exc
                wait = min(retry_hint(exc) or delay, 10 * self.backoff_s + 5)
            except Exception as exc:
                raise _failure(exc, self.timeout_s) from exc
            logger.info("llm.retry attempt=%d wait_s=%.2f", attempt, wait)
            await asyncio.sleep(wait * (1 + random.random() * 0.1))
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _generate(self, contents: list[types.Content],
                        config: types.GenerateContentConfig) -> types.GenerateContentResponse:
        return await self._client.aio.models.generate_content(model=self.model, contents=contents, config=config)

    async def _open_stream(self, contents: list[types.Content], config: types.GenerateContentConfig) -> Opened:
        """Start a streamed request and wait for its first chunk (the request is made on that first read)."""
        chunks = await self._client.aio.models.generate_content_stream(model=self.model, contents=contents,
                                                                       config=config)
        return chunks, await anext(chunks, None)

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


def _failure(exc: BaseException, timeout_s: float | None = None) -> LLMError:
    """The `LLMError` for what the SDK or the connection raised (an `APIError` is the caller's)."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, TimeoutError):
        return LLMError("timeout", f"no answer in {timeout_s:.0f} s" if timeout_s else "the answer stopped")
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return LLMError("unavailable", type(exc).__name__)
    # anything else the SDK raises (a changed signature, a bad response)
    logger.warning("llm.sdk_error error=%s", type(exc).__name__, exc_info=exc)
    return LLMError("internal", type(exc).__name__)


def _piece(chunk: types.GenerateContentResponse) -> str:
    """The answer text a streamed chunk adds (thoughts left out)."""
    candidates = chunk.candidates or []
    if not candidates or not candidates[0].content or not candidates[0].content.parts:
        return ""
    return "".join(part.text or "" for part in candidates[0].content.parts if not part.thought)


def _streamed(chunks: list[types.GenerateContentResponse], model: str, first_chunk_s: float) -> Answer:
    """The answer of a whole stream: its text, the finish reason and usage of its last chunks."""
    if not chunks:
        raise LLMError("empty", "an empty stream")
    if not any(chunk.candidates for chunk in chunks):
        feedback = chunks[0].prompt_feedback
        if feedback is not None and feedback.block_reason:
            raise LLMError("blocked", str(feedback.block_reason))
        raise LLMError("empty", "no candidates")
    finish = next((str(c.candidates[0].finish_reason) for c in reversed(chunks)
                   if c.candidates and c.candidates[0].finish_reason), "")
    if "SAFETY" in finish or "PROHIBITED" in finish or "BLOCKLIST" in finish:
        raise LLMError("blocked", finish)
    text = "".join(_piece(chunk) for chunk in chunks)
    if not text:
        raise LLMError("empty", f"no content (finish {finish})")
    last = next((c for c in reversed(chunks) if c.usage_metadata is not None), chunks[-1])
    return Answer(text=text, usage=usage_of(last, model), finish_reason=finish, first_chunk_s=first_chunk_s)


def _answer(response: types.GenerateContentResponse, model: str) -> Answer:
    """The answer in a response, or the `LLMError` saying why there is none."""
    candidates = response.candidates or []
    if not candidates:
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            raise LLMError("blocked", str(feedback.block_reason))
        raise LLMError("empty", "no candidates")
    first = candidates[0]
    finish = str(first.finish_reason or "")
    if "SAFETY" in finish or "PROHIBITED" in finish or "BLOCKLIST" in finish:
        raise LLMError("blocked", finish)
    if not first.content or not first.content.parts:
        raise LLMError("empty", f"no content (finish {finish})")
    text = "".join(part.text or "" for part in first.content.parts if not part.thought)
    return Answer(text=text, usage=usage_of(response, model), finish_reason=finish, parsed=response.parsed)


def text_config(system: str, temperature: float) -> types.GenerateContentConfig:
    """The config of a free-text request."""
    return types.GenerateContentConfig(system_instruction=system, temperature=temperature)


def schema_config(schema: type[BaseModel], system: str, temperature: float) -> types.GenerateContentConfig:
    """The config of a request whose answer must be JSON in `schema`."""
    return types.GenerateContentConfig(system_instruction=system, temperature=temperature,
                                       response_mime_type="application/json", response_schema=schema)


def parse(schema: type[T], answer: Answer) -> T:
    """The answer as `schema` (google-genai's parse, else pydantic's); raises `ValidationError`."""
    if isinstance(answer.parsed, schema):
        return answer.parsed
    return schema.model_validate_json(answer.text)


def user_content(text: str) -> types.Content:
    """One user message as google-genai content."""
    return types.Content(role="user", parts=[types.Part(text=text)])


def model_content(text: str) -> types.Content:
    """One coach (model) message as google-genai content."""
    return types.Content(role="model", parts=[types.Part(text=text)])
