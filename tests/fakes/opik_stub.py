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
import contextlib
import gzip
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

PREFIX = "/v1/private"


class OpikStub:
    """Answers the Opik SDK on 127.0.0.1 and records what it sent."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, delay: float = 0.0, down: bool = False
    ) -> None:
        self.host = host
        self.port = port
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
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Root URL for ``OPIK_URL_OVERRIDE``, e.g. ``http://127.0.0.1:40125``."""
        if self._runner is None:
            raise RuntimeError("OpikStub is not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Start serving in the running loop; return ``url``."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self.url

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpikStub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Serve from a daemon thread with its own event loop; return ``url``."""
        if self._thread is not None:
            raise RuntimeError("OpikStub thread already running")
        ready = threading.Event()
        failures: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failures.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name="opik-stub", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("OpikStub thread did not start")
        if failures:
            self._thread = None
            raise failures[0]
        return self.url

    def stop_thread(self, timeout: float = 5.0) -> None:
        """Stop the server started by ``start_in_thread`` and join its thread."""
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._thread_loop = None

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

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block (thread mode) until ``predicate()`` is true; TimeoutError listing recorded paths."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"OpikStub: condition not met within {timeout}s; saw {self.paths()[-20:]}")
            time.sleep(0.01)

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,
    ) -> None:
        """Async variant of ``wait_until`` (for a stub in the test's loop)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"OpikStub: condition not met within {timeout}s; saw {self.paths()[-20:]}")
            await asyncio.sleep(0.01)

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
                known = self.prompt_versions.get(str(data.get("name")))
                if known is None:
                    return web.json_response({"errors": ["prompt not found"]}, status=404)
                return web.json_response(known[-1])
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

    async def serve() -> None:
        stub = OpikStub(host=args.host, port=args.port, delay=args.delay, down=args.down)
        await stub.start()
        print(f"OpikStub listening on {stub.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await stub.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
