"""A local Gemini API server, so the real google-genai client runs against it in tests.

Point the client at it::

    genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.url))

It serves ``POST /{v1|v1beta}/models/{model}:generateContent`` (plus ``:streamGenerateContent`` as SSE
and ``:countTokens``), requires an API key (``x-goog-api-key`` header or ``?key=``), records every
request as a ``GeminiRequest`` and answers in Google's shape with ``usageMetadata``,
``finishReason: STOP`` and ``modelVersion``.

What google-genai 3.6 sends for structured output (seen by running it):

- ``response_schema=PydanticModel`` (or ``list[Model]``, an Enum) becomes
  ``generationConfig.responseSchema`` in OpenAPI style: upper-case types (``OBJECT``, ``STRING``,
  ``INTEGER``, ``NUMBER``, ``ARRAY``, ``BOOLEAN``), nested models inlined (no ``$ref``),
  ``Optional[X]`` as ``"nullable": true``, ``X | Y`` as ``any_of``, enums/Literals as ``enum``, dates
  as ``"format": "date"`` / ``"date-time"``, and snake_case keywords: ``property_ordering``,
  ``min_items``/``max_items``, ``min_length``/``max_length``; ``minimum``/``maximum`` as floats.
- ``response_json_schema=Model.model_json_schema()`` becomes ``generationConfig.responseJsonSchema``
  verbatim: lower-case JSON-schema types, ``$defs`` + ``$ref``, ``anyOf`` with ``{"type": "null"}``,
  camelCase ``minItems``/``maxItems``.
- ``dict[str, X]`` fields are refused client-side in Gemini Developer API mode (additionalProperties).

Both forms (and camelCase/snake_case spellings of every keyword) are understood here. Without
instructions the fake answers a schema request with a valid instance of the schema, and a plain
request with ``"Coach: " + <echo of the last user text>``. ``queue``, ``responder``, ``fail_always``
and ``Fault`` script everything else.

A schema with ``phases`` (each with ``start_date``/``end_date``) and ``milestones`` (``target_date``) -- a
plan, as Rein asks for one -- gets dates that hold together, as a model following the prompt would write
them: the phases back to back from the request's "Today is YYYY-MM-DD" to its deadline (``deadline_date``
or "Deadline:" in the request; else 60 days on), each milestone on its phase's last day.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import LoopbackServer, serve_until_interrupted

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
DEFAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


@dataclass
class GeminiRequest:
    """One request the fake received."""

    model: str
    path: str
    body: dict[str, Any]
    system: str
    user_texts: list[str]  # every text part of every user turn, in order
    last_user_text: str  # the last text part of the last user turn
    schema: dict[str, Any] | None
    schema_field: str | None = None  # "responseSchema" or "responseJsonSchema"
    response_mime_type: str | None = None
    generation_config: dict[str, Any] = field(default_factory=dict)
    action: str = "generateContent"
    at: float = 0.0
    first_chunk_at: float = 0.0  # streamed: when the first chunk was written (time.time())

    @property
    def temperature(self) -> float | None:
        """generationConfig.temperature, if sent."""
        value = self.generation_config.get("temperature")
        return float(value) if value is not None else None


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour; build one with the class methods."""

    kind: str
    code: int = 0
    message: str = ""
    retry_delay: str | None = None
    seconds: float = 0.0
    length: int = 0

    @classmethod
    def status(cls, code: int, message: str | None = None, retry_delay: str | None = None) -> Fault:
        """An HTTP error in Google's shape (429 RESOURCE_EXHAUSTED carries RetryInfo, default "1s")."""
        if code == 429 and retry_delay is None:
            retry_delay = "1s"
        return cls(
            "status",
            code=code,
            message=message or DEFAULT_MESSAGES.get(code, "Error"),
            retry_delay=retry_delay,
        )

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Sleep ``seconds``, then answer normally (responder or default)."""
        return cls("hang", seconds=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """A 200 whose text is not JSON (a truncated object)."""
        return cls("malformed_json")

    @classmethod
    def schema_violation(cls) -> Fault:
        """A 200 with valid JSON that lacks the schema's required fields."""
        return cls("schema_violation")

    @classmethod
    def empty_candidates(cls) -> Fault:
        """A 200 with ``"candidates": []``."""
        return cls("empty_candidates")

    @classmethod
    def safety(cls) -> Fault:
        """A candidate blocked with ``finishReason: SAFETY`` and no content."""
        return cls("safety")

    @classmethod
    def long_text(cls, n: int = 5000) -> Fault:
        """A text reply of exactly ``n`` characters in paragraphs separated by blank lines."""
        return cls("long_text", length=n)


Reply = str | dict[str, Any] | list[Any] | Fault


# --------------------------------------------------------------------------------------------------
# Schema -> instance


_KEY_ALIASES = {
    "anyOf": "any_of",
    "oneOf": "one_of",
    "allOf": "all_of",
    "minItems": "min_items",
    "maxItems": "max_items",
    "minLength": "min_length",
    "maxLength": "max_length",
    "propertyOrdering": "property_ordering",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
}


def _kw(schema: dict[str, Any], key: str) -> Any:
    """A schema keyword in either camelCase or snake_case spelling."""
    if key in schema:
        return schema[key]
    return schema.get(_KEY_ALIASES.get(key, key))


class SchemaInstanceBuilder:
    """Builds a valid instance of an OpenAPI-style or JSON-Schema-style Gemini response schema."""

    max_depth = 6

    def __init__(self, root: dict[str, Any], today: dt.date | None = None) -> None:
        self.root = root
        self.today = today or dt.date.today()
        self.dates = 0

    def build(self) -> Any:
        return self.value(self.root, "value", 0)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            node: Any = self.root
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**node, **extra}
            seen += 1
        return schema

    @staticmethod
    def _type(schema: dict[str, Any]) -> str | None:
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if str(k).lower() != "null"), None)
        if kind is None:
            if "properties" in schema:
                return "object"
            if "items" in schema:
                return "array"
            if "enum" in schema:
                return "string"
            return None
        return str(kind).lower()

    def value(self, schema: dict[str, Any], name: str, depth: int) -> Any:
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        for key in ("anyOf", "oneOf"):
            options = _kw(schema, key)
            if options:
                usable = [o for o in options if self._type(self._resolve(o)) not in ("null",)]
                chosen = usable[0] if usable else options[0]
                merged = {k: v for k, v in schema.items() if k not in (key, _KEY_ALIASES[key])}
                return self.value({**merged, **chosen}, name, depth)
        all_of = _kw(schema, "allOf")
        if all_of:
            merged = {k: v for k, v in schema.items() if k not in ("allOf", "all_of")}
            for part in all_of:
                merged.update(self._resolve(part))
            return self.value(merged, name, depth)
        if schema.get("enum"):
            return schema["enum"][0]
        kind = self._type(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        return self._string(schema, name)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties") or {}
        order = list(_kw(schema, "propertyOrdering") or []) + [
            k for k in props if k not in (_kw(schema, "propertyOrdering") or [])
        ]
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        for key in order:
            if key not in props:
                continue
            if depth >= self.max_depth and key not in required:
                continue
            out[key] = self.value(props[key], key, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        low = int(_kw(schema, "minItems") or 0)
        high = _kw(schema, "maxItems")
        count = low if depth >= self.max_depth else max(low, 2)
        if high is not None:
            count = min(count, int(high))
        items = schema.get("items") or {}
        singular = name[:-1] if name.endswith("s") and len(name) > 3 else name
        return [self.value(items, f"{singular} {i + 1}", depth + 1) for i in range(count)]

    @staticmethod
    def _bounds(schema: dict[str, Any], integer: bool) -> tuple[float | None, float | None]:
        low, high = schema.get("minimum"), schema.get("maximum")
        ex_low, ex_high = _kw(schema, "exclusiveMinimum"), _kw(schema, "exclusiveMaximum")
        step = 1 if integer else 0.5
        if isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool):
            low = math.floor(ex_low) + 1 if integer else ex_low + step
        elif ex_low is True and low is not None:
            low = low + step
        if isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool):
            high = math.ceil(ex_high) - 1 if integer else ex_high - step
        elif ex_high is True and high is not None:
            high = high - step
        return low, high

    def _integer(self, schema: dict[str, Any]) -> int:
        low, high = self._bounds(schema, integer=True)
        if low is not None and high is not None:
            return int(math.ceil(low) + (math.floor(high) - math.ceil(low)) // 2)
        if low is not None:
            return math.ceil(low)
        if high is not None:
            return int(min(1, math.floor(high)))
        return 1

    def _number(self, schema: dict[str, Any]) -> float:
        low, high = self._bounds(schema, integer=False)
        if low is not None and high is not None:
            return float(low + (high - low) / 2)
        if low is not None:
            return float(low)
        if high is not None:
            return float(min(1.0, high))
        return 1.5

    def _next_date(self) -> dt.date:
        self.dates += 1
        return self.today + dt.timedelta(days=30 * self.dates)

    def _string(self, schema: dict[str, Any], name: str) -> str:
        fmt = str(schema.get("format") or "").lower()
        if fmt == "date-time":
            day = self._next_date()
            return f"{day.isoformat()}T09:00:00Z"
        if fmt == "date" or (not fmt and _looks_like_date(name)):
            return self._next_date().isoformat()
        if fmt == "time":
            return "09:00:00"
        if fmt == "email":
            return "sample@example.com"
        if fmt in ("uri", "url"):
            return "https://example.com/sample"
        if fmt == "uuid":
            return str(uuid.UUID(int=self.dates + 1))
        text = f"Sample {name}"
        low = int(_kw(schema, "minLength") or 0)
        high = _kw(schema, "maxLength")
        while len(text) < low:
            text += " sample"
        if high is not None:
            text = text[: int(high)].rstrip() or text[: int(high)]
        return text


def _looks_like_date(name: str) -> bool:
    """True for field names such as ``due_date``, ``startDate``, ``dates`` or ``deadline``."""
    words = re.split(r"[_\W\d]+|(?<=[a-z])(?=[A-Z])", name)
    return any(word.lower() in ("date", "dates", "deadline") for word in words)


def instance_from_schema(schema: dict[str, Any], today: dt.date | None = None) -> Any:
    """A valid instance of a Gemini response schema (both the OpenAPI and the JSON-Schema form)."""
    return SchemaInstanceBuilder(schema, today).build()


_TODAY = re.compile(r"Today is (\d{4}-\d{2}-\d{2})")
_DEADLINE = re.compile(r"(?:\"deadline_date\":\s*\"|Deadline:\s*)(\d{4}-\d{2}-\d{2})")


def _coherent_plan(value: Any, req: GeminiRequest) -> Any:
    """A plan-shaped instance with its dates made coherent (see the module docstring); anything else as it is."""
    if not isinstance(value, dict) or not isinstance(value.get("phases"), list):
        return value
    phases = [p for p in value["phases"] if isinstance(p, dict) and "start_date" in p and "end_date" in p]
    if not phases:
        return value
    text = "\n".join(req.user_texts)
    found = _TODAY.search(text)
    today = dt.date.fromisoformat(found.group(1)) if found else dt.date.today()
    found = _DEADLINE.search(text)
    deadline = dt.date.fromisoformat(found.group(1)) if found else today + dt.timedelta(days=60)
    if deadline <= today:
        deadline = today + dt.timedelta(days=60)
    days = (deadline - today).days + 1
    start = today
    ends = []
    for index, phase in enumerate(phases):
        end = deadline if index == len(phases) - 1 else today + dt.timedelta(days=days * (index + 1) // len(phases) - 1)
        end = max(end, start)
        phase["start_date"], phase["end_date"] = start.isoformat(), end.isoformat()
        ends.append(end)
        start = end + dt.timedelta(days=1)
    for index, milestone in enumerate(m for m in value.get("milestones") or [] if isinstance(m, dict)):
        if "target_date" in milestone:
            milestone["target_date"] = ends[min(index, len(ends) - 1)].isoformat()
    return value


def _without_required(value: Any, schema: dict[str, Any]) -> Any:
    required = set(schema.get("required") or [])
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in required}
    if isinstance(value, list):
        return [{}]
    return {}


# --------------------------------------------------------------------------------------------------
# The server


class FakeGemini(LoopbackServer):
    """A Gemini API server on 127.0.0.1; see the module docstring."""

    client_max_size = 32 * 1024 * 1024

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        api_key: str | None = None,
        model_version: str | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.latency = latency
        self.chunk_chars = 40  # a streamed answer's text per chunk
        self.chunk_delay = 0.0  # seconds between two streamed chunks
        self.api_key = api_key
        self.model_version = model_version
        self.requests: list[GeminiRequest] = []
        self.request_bytes: list[int] = []  # size of each request body, for prompt-size measurements
        self.responder: Callable[[GeminiRequest], object | None] | None = None
        self.fail_always: Fault | None = None
        self.answered = 0
        self.usages: list[dict[str, int]] = []  # the usageMetadata of every answer sent, in order
        self._queue: deque[Reply] = deque()

    def routes(self, app: web.Application) -> None:
        """generateContent and friends under /v1 and /v1beta, the control endpoints, 404 for the rest."""
        app.router.add_route("POST", "/{version}/models/{model_action}", self._handle)
        app.router.add_route("*", "/_fake/{action}", self._handle_control)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    def describe(self) -> str:
        """The last requests: model, action and the last user text."""
        recent = [f"{r.model}:{r.action} {r.last_user_text[:60]!r}" for r in self.requests[-10:]]
        return f"recent requests: {recent}"

    # ------------------------------------------------------------------ scripting

    def queue(self, *items: Reply) -> None:
        """Script the next answers, in order: a str (reply text), a dict/list (sent as JSON) or a Fault."""
        self._queue.extend(items)

    @property
    def queued(self) -> int:
        """Scripted answers not used yet."""
        return len(self._queue)

    def reset(self) -> None:
        """Forget requests, the queue, the responder and any persistent fault."""
        self.requests.clear()
        self.request_bytes.clear()
        self.usages.clear()
        self._queue.clear()
        self.responder = None
        self.fail_always = None

    def requests_with_schema(self) -> list[GeminiRequest]:
        """Requests that asked for structured output."""
        return [r for r in self.requests if r.schema is not None]

    # ------------------------------------------------------------------ HTTP

    @staticmethod
    def _error(
        code: int, message: str, *, retry_delay: str | None = None, reason: str | None = None
    ) -> web.Response:
        error: dict[str, Any] = {
            "code": code,
            "message": message,
            "status": STATUS_NAMES.get(code, "UNKNOWN"),
        }
        details: list[dict[str, Any]] = []
        if reason:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                }
            )
        if code == 429:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        }
                    ],
                }
            )
        if retry_delay is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
        if details:
            error["details"] = details
        return web.json_response({"error": error}, status=code)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return self._error(404, f"Path {request.path} not found (fake Gemini).")

    def _check_key(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return self._error(403, DEFAULT_MESSAGES[403])
        if self.api_key is not None and key != self.api_key:
            return self._error(
                400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
            )
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        model, _, action = request.match_info["model_action"].partition(":")
        refused = self._check_key(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return self._error(400, "Invalid JSON payload received.")
        req = _parse_request(model, request.path, body, action)
        self.requests.append(req)
        self.request_bytes.append(len(await request.read()))
        if action == "countTokens":
            return web.json_response({"totalTokens": _tokens(_prompt_text(body))})
        if action not in ("generateContent", "streamGenerateContent"):
            return self._error(404, f"Method {action} not found (fake Gemini).")
        if self.latency:
            await asyncio.sleep(self.latency)
        payload, error = await self._answer(req)
        self.answered += 1
        if error is not None:
            return error
        if "usageMetadata" in payload:
            self.usages.append(payload["usageMetadata"])
        if action == "streamGenerateContent":
            return await self._stream(request, payload, req)
        return web.json_response(payload)

    async def _answer(self, req: GeminiRequest) -> tuple[dict[str, Any], web.Response | None]:
        item: object | None = self.fail_always
        if item is None and self._queue:
            item = self._queue.popleft()
        if item is None and self.responder is not None:
            item = self.responder(req)
        if isinstance(item, Fault):
            if item.kind == "status":
                return {}, self._error(item.code, item.message, retry_delay=item.retry_delay)
            if item.kind == "hang":
                await asyncio.sleep(item.seconds)
                follow = self.responder(req) if self.responder is not None else None
                item = None if isinstance(follow, Fault) else follow
            else:
                return self._fault_payload(item, req), None
        if item is None:
            return self._payload(req, self._default_text(req)), None
        if isinstance(item, str):
            return self._payload(req, item), None
        if isinstance(item, (dict, list)):
            return self._payload(req, json.dumps(item, ensure_ascii=False)), None
        raise TypeError(f"FakeGemini cannot answer with {type(item).__name__}: use str, dict, list or Fault")

    def _fault_payload(self, fault: Fault, req: GeminiRequest) -> dict[str, Any]:
        if fault.kind == "malformed_json":
            full = json.dumps(instance_from_schema(req.schema)) if req.schema else '{"reply": "Coach: ok"}'
            return self._payload(req, full[: max(2, len(full) // 2)] + " <<truncated")
        if fault.kind == "schema_violation":
            instance = instance_from_schema(req.schema) if req.schema else {}
            broken = _without_required(instance, req.schema or {})
            return self._payload(req, json.dumps(broken))
        if fault.kind == "empty_candidates":
            payload = self._payload(req, "")
            payload["candidates"] = []
            return payload
        if fault.kind == "safety":
            payload = self._payload(req, "")
            payload["candidates"] = [
                {
                    "finishReason": "SAFETY",
                    "index": 0,
                    "safetyRatings": [
                        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True},
                        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
                    ],
                }
            ]
            return payload
        if fault.kind == "long_text":
            return self._payload(req, long_text(fault.length))
        raise ValueError(f"unknown fault {fault.kind}")

    @staticmethod
    def _default_text(req: GeminiRequest) -> str:
        if req.response_mime_type == "text/x.enum" and req.schema and req.schema.get("enum"):
            return str(req.schema["enum"][0])
        if req.schema is not None:
            return json.dumps(_coherent_plan(instance_from_schema(req.schema), req), ensure_ascii=False)
        echo = " ".join(req.last_user_text.split())[:200]
        text = f"Coach: {echo}"
        if req.response_mime_type == "application/json":
            return json.dumps({"reply": text}, ensure_ascii=False)
        return text

    def _payload(self, req: GeminiRequest, text: str) -> dict[str, Any]:
        prompt = _tokens(_prompt_text(req.body))
        answer = _tokens(text)
        return {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": prompt,
                "candidatesTokenCount": answer,
                "totalTokenCount": prompt + answer,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
            },
            "modelVersion": self.model_version or req.model,
            "responseId": uuid.uuid4().hex[:22],
        }

    async def _stream(self, request: web.Request, payload: dict[str, Any], req: GeminiRequest) -> web.StreamResponse:
        """The answer as SSE chunks of ``chunk_chars`` characters, ``chunk_delay`` apart; usageMetadata and
        finishReason on the last chunk only, as Gemini sends them."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        candidates = payload.get("candidates") or []
        parts = (candidates[0].get("content") or {}).get("parts", []) if candidates else []
        text = parts[0]["text"] if parts else ""
        size = max(1, self.chunk_chars)
        pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
        for i, piece in enumerate(pieces):
            if i and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            chunk = json.loads(json.dumps(payload))
            if chunk.get("candidates") and parts:
                chunk["candidates"][0]["content"]["parts"] = [{"text": piece}]
            if i < len(pieces) - 1:
                chunk.pop("usageMetadata", None)
                if chunk.get("candidates"):
                    chunk["candidates"][0].pop("finishReason", None)
            await response.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
            if i == 0:
                req.first_chunk_at = time.time()
        await response.write_eof()
        return response

    async def _handle_control(self, request: web.Request) -> web.StreamResponse:
        """For a fake in another process: POST /_fake/queue [items], /_fake/config {latency, fail_always,
        chunk_chars, chunk_delay}, /_fake/reset; GET /_fake/stats, /_fake/streams (each streamed request's last
        user text, arrival and first chunk times). A Fault is {"fault": "<factory>", ...args}."""
        action = request.match_info["action"]
        body: Any = await request.json() if request.can_read_body else None
        if action == "queue":
            self.queue(*[_reply_from_json(item) for item in body])
        elif action == "config":
            if "latency" in body:
                self.latency = float(body["latency"])
            if "chunk_chars" in body:
                self.chunk_chars = int(body["chunk_chars"])
            if "chunk_delay" in body:
                self.chunk_delay = float(body["chunk_delay"])
            if "fail_always" in body:
                fault = _reply_from_json(body["fail_always"]) if body["fail_always"] else None
                self.fail_always = fault if isinstance(fault, Fault) else None
        elif action == "reset":
            self.reset()
        elif action == "streams":
            return web.json_response([{"text": r.last_user_text, "at": r.at, "first_chunk_at": r.first_chunk_at}
                                      for r in self.requests if r.action == "streamGenerateContent"])
        elif action != "stats":
            return web.json_response({"error": f"unknown action {action}"}, status=404)
        return web.json_response(
            {
                "requests": len(self.requests),
                "answered": self.answered,
                "queued": len(self._queue),
                "latency": self.latency,
                "max_request_bytes": max(self.request_bytes, default=0),
                "last_request_bytes": self.request_bytes[-1] if self.request_bytes else 0,
            }
        )


def _reply_from_json(item: Any) -> Reply:
    if isinstance(item, dict) and "fault" in item:
        args = {k: v for k, v in item.items() if k != "fault"}
        factory = getattr(Fault, item["fault"])
        fault: Fault = factory(**args)
        return fault
    reply: Reply = item
    return reply


def long_text(n: int) -> str:
    """Exactly ``n`` characters of coaching-like prose in paragraphs separated by blank lines."""
    sentence = "Keep going one small step at a time, and note what worked today. "
    paragraphs: list[str] = []
    size = 0
    index = 1
    while size < n:
        para = f"{index}. " + sentence * 5
        paragraphs.append(para.strip())
        size = len("\n\n".join(paragraphs))
        index += 1
    text = "\n\n".join(paragraphs)[:n]
    if n > 1 and text[-1].isspace():
        text = text[:-1] + "."
    return text


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, dict):
        return []
    return [
        p["text"] for p in content.get("parts", []) if isinstance(p, dict) and isinstance(p.get("text"), str)
    ]


def _prompt_text(body: dict[str, Any]) -> str:
    chunks = _texts(body.get("systemInstruction") or body.get("system_instruction"))
    for content in body.get("contents") or []:
        chunks.extend(_texts(content))
    return "\n".join(chunks)


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _parse_request(model: str, path: str, body: dict[str, Any], action: str) -> GeminiRequest:
    system = "\n".join(_texts(body.get("systemInstruction") or body.get("system_instruction")))
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    user_contents = [c for c in contents if not isinstance(c, dict) or c.get("role", "user") == "user"]
    user_texts = [text for c in user_contents for text in _texts(c)]
    last_texts = _texts(user_contents[-1]) if user_contents else []
    last_user_text = last_texts[-1] if last_texts else ""
    config = body.get("generationConfig") or body.get("generation_config") or {}
    schema, schema_field = None, None
    for key in ("responseSchema", "response_schema", "responseJsonSchema", "response_json_schema"):
        if config.get(key) is not None:
            schema, schema_field = (
                config[key],
                "responseJsonSchema" if "json" in key.lower() else "responseSchema",
            )
            break
    mime = config.get("responseMimeType") or config.get("response_mime_type")
    return GeminiRequest(
        model=model,
        path=path,
        body=body,
        system=system,
        user_texts=user_texts,
        last_user_text=last_user_text,
        schema=schema,
        schema_field=schema_field,
        response_mime_type=mime,
        generation_config=config,
        action=action,
        at=time.time(),
    )


def main(argv: list[str] | None = None) -> None:
    """Serve a FakeGemini until interrupted: ``python -m tests.fakes.gemini --port 8082``."""
    parser = argparse.ArgumentParser(description="Fake Gemini API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any key)")
    args = parser.parse_args(argv)
    fake = FakeGemini(host=args.host, port=args.port, latency=args.latency, api_key=args.api_key)
    serve_until_interrupted(fake, lambda server: f"FakeGemini listening on {server.url}")


if __name__ == "__main__":
    main()
