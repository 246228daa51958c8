"""A loopback stand-in for the Opik REST server, for ``OPIK_URL_OVERRIDE=<stub.url>``.

What opik 2.2.122 called, seen by running the SDK against this stub (``@opik.track`` with a nested
span, ``update_current_trace(thread_id=..., feedback_scores=...)``, ``Opik().log_traces_feedback_scores``,
``log_spans_feedback_scores``, ``log_threads_feedback_scores``, ``flush()``):

- ``POST /v1/private/spans/batch`` and ``POST /v1/private/traces/batch`` -- every trace and span is sent
  twice, once when it starts (no ``end_time``) and once when it ends; bodies are ``{"traces": [...]}``
  / ``{"spans": [...]}``, gzip-compressed except for small ones (the stub sniffs the gzip magic, the
  ``Content-Encoding`` header is not always set);
- ``PUT /v1/private/traces/feedback-scores``, ``PUT /v1/private/spans/feedback-scores``,
  ``PUT /v1/private/traces/threads/feedback-scores`` -- ``{"scores": [...]}``;
- ``GET /is-alive/ping`` -- once, shortly after the first batch (connection check).
Nothing else: no project or workspace look-ups. ``PATCH /v1/private/traces/{id}`` (and spans) are
answered for completeness. Anything else answers 200 ``{}`` and is recorded.

``opik.record_traces_locally()``: trace feedback scores logged by id with
``Opik().log_traces_feedback_scores`` inside the block go to BOTH places -- the recorder attaches them
to the trace tree (``rec.trace_trees[0].feedback_scores``) and the SDK also PUTs them here. Thread
scores (``log_threads_feedback_scores``) only reach the stub; the recorder has no thread scores.
``Opik().flush()`` with this stub takes about 30 ms (against an unreachable server: about 11 s).

Run the stub in a background thread (``start_in_thread``) whenever the code under test flushes Opik
synchronously from the event loop's thread: a stub in that same loop could not answer and the flush
would stall until its timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import threading
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.server import LoopbackServer, serve_until_interrupted

PREFIX = "/v1/private"


class OpikStub(LoopbackServer):
    """Answers the Opik SDK on 127.0.0.1 and records what it sent."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, delay: float = 0.0, down: bool = False
    ) -> None:
        super().__init__(host=host, port=port)
        self.delay = delay
        self.down = down
        self.requests: list[tuple[str, str, Any]] = []
        self.traces: list[dict[str, Any]] = []
        self.spans: list[dict[str, Any]] = []
        self.feedback_scores: list[dict[str, Any]] = []
        self.span_feedback_scores: list[dict[str, Any]] = []
        self.thread_feedback_scores: list[dict[str, Any]] = []
        self.prompt_versions: dict[str, list[dict[str, Any]]] = {}  # prompt name -> versions, newest last
        self.trace_updates: list[tuple[str, dict[str, Any]]] = []
        self.span_updates: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def routes(self, app: web.Application) -> None:
        """Every path: recorded, then answered as Opik would."""
        app.router.add_route("*", "/{tail:.*}", self._handle)

    def describe(self) -> str:
        """The last requests, as ``METHOD /path``."""
        return f"saw {self.paths()[-20:]}"

    # ------------------------------------------------------------------ observation

    def reset(self) -> None:
        """Forget everything recorded (modes are kept)."""
        with self._lock:
            for bucket in (
                self.requests,
                self.traces,
                self.spans,
                self.feedback_scores,
                self.span_feedback_scores,
                self.thread_feedback_scores,
                self.trace_updates,
                self.span_updates,
            ):
                bucket.clear()

    def paths(self) -> list[str]:
        """``"METHOD /path"`` of every request, in order."""
        return [f"{method} {path}" for method, path, _ in list(self.requests)]

    def traces_by_id(self) -> dict[str, dict[str, Any]]:
        """Traces merged per id: later batches and PATCH updates overlay earlier fields."""
        return self._merge(self.traces, self.trace_updates)

    def spans_by_id(self) -> dict[str, dict[str, Any]]:
        """Spans merged per id (as ``traces_by_id``)."""
        return self._merge(self.spans, self.span_updates)

    @staticmethod
    def _merge(
        items: list[dict[str, Any]], updates: list[tuple[str, dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for item in list(items):
            out.setdefault(str(item.get("id")), {}).update(item)
        for item_id, patch in list(updates):
            out.setdefault(item_id, {"id": item_id}).update(patch)
        return out

    # ------------------------------------------------------------------ HTTP

    @staticmethod
    def _decode(raw: bytes) -> Any:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return {"_raw": raw[:2000].decode("utf-8", "replace")}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = self._decode(await request.read())
        method, path = request.method, request.path
        with self._lock:
            self.requests.append((method, path, body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return web.json_response({"errors": ["Service Unavailable (OpikStub is down)"]}, status=503)
        return self._route(method, path, body)

    def _route(self, method: str, path: str, body: Any) -> web.StreamResponse:
        data = body if isinstance(body, dict) else {}
        if path == "/is-alive/ping":
            return web.json_response({"healthy": True})
        if path == "/is-alive/ver":
            return web.json_response({"version": "opik-stub"})
        with self._lock:
            if method == "POST" and path == f"{PREFIX}/traces/batch":
                self.traces.extend(data.get("traces", []))
                return web.Response(status=204)
            if method == "POST" and path == f"{PREFIX}/spans/batch":
                self.spans.extend(data.get("spans", []))
                return web.Response(status=204)
            if method == "POST" and path == f"{PREFIX}/traces":
                self.traces.append(data)
                return web.Response(status=201)
            if method == "POST" and path == f"{PREFIX}/spans":
                self.spans.append(data)
                return web.Response(status=201)
            if method == "PUT" and path == f"{PREFIX}/traces/feedback-scores":
                self.feedback_scores.extend(data.get("scores", []))
                return web.json_response({})
            if method == "PUT" and path == f"{PREFIX}/spans/feedback-scores":
                self.span_feedback_scores.extend(data.get("scores", []))
                return web.json_response({})
            if method == "PUT" and path == f"{PREFIX}/traces/threads/feedback-scores":
                self.thread_feedback_scores.extend(data.get("scores", []))
                return web.json_response({})
            for kind, updates in (("traces", self.trace_updates), ("spans", self.span_updates)):
                head = f"{PREFIX}/{kind}/"
                item_id = path.removeprefix(head)
                if path.startswith(head) and "/" not in item_id:
                    if method == "PATCH":
                        updates.append((item_id, data))
                        return web.Response(status=204)
                    if method == "GET":
                        known = (self.traces_by_id() if kind == "traces" else self.spans_by_id()).get(item_id)
                        if known is None:
                            return web.json_response({"errors": [f"{kind[:-1]} not found"]}, status=404)
                        return web.json_response(known)
            if method == "POST" and path == f"{PREFIX}/prompts/versions/retrieve":
                versions = self.prompt_versions.get(str(data.get("name")))
                if versions is None:
                    return web.json_response({"errors": ["prompt not found"]}, status=404)
                return web.json_response(versions[-1])
            if method == "POST" and path == f"{PREFIX}/prompts/versions":
                name = str(data.get("name"))
                version = dict(data.get("version") or {})
                stored = {
                    **version,
                    "id": str(uuid.uuid4()),
                    "prompt_id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                    "commit": uuid.uuid4().hex[:8],
                    "type": version.get("type", "mustache"),
                    "template_structure": data.get("template_structure", "text"),
                }
                self.prompt_versions.setdefault(name, []).append(stored)
                return web.json_response(stored)
        if method == "GET" and path == f"{PREFIX}/projects":
            return web.json_response({"content": [], "page": 1, "size": 0, "total": 0})
        if method == "POST" and path == f"{PREFIX}/projects/retrieve":
            return web.json_response(
                {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, str(data.get("name")))), **data}
            )
        return web.json_response({})


def main(argv: list[str] | None = None) -> None:
    """Serve an OpikStub until interrupted: ``python -m tests.fakes.opik_stub --port 8083``."""
    parser = argparse.ArgumentParser(description="Opik REST stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--down", action="store_true", help="answer 503 to everything")
    args = parser.parse_args(argv)
    stub = OpikStub(host=args.host, port=args.port, delay=args.delay, down=args.down)
    serve_until_interrupted(stub, lambda server: f"OpikStub listening on {server.url}")


if __name__ == "__main__":
    main()
