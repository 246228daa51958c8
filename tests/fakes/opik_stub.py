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

Datasets and experiments (what ``client.get_or_create_dataset(...)``, ``dataset.insert(...)`` and
``opik.evaluate(...)`` call, seen by running opik 2.2.122's evaluation against this stub) are kept in memory:
``POST /v1/private/datasets/retrieve`` (404 until created), ``POST /v1/private/datasets``,
``GET /v1/private/datasets/{id}``, ``PUT /v1/private/datasets/items`` (insert: new ids per item, items of equal
content deduplicated by the SDK), ``POST /v1/private/datasets/items/stream`` (newline-delimited JSON),
``GET /v1/private/datasets/{id}/versions``, ``POST /v1/private/experiments``,
``GET|PATCH /v1/private/experiments/{id}``, ``POST /v1/private/experiments/items``,
``POST /v1/private/experiments/finish``, and ``GET /v1/private/auth/workspace`` (the name behind the
"default" workspace, for the experiment's URL). ``datasets``,
``dataset_items``, ``experiments`` and ``experiment_items`` hold what arrived.

Erasing a user (what ``Opik().search_traces(filter_string=...)`` and ``rest_client.traces.delete_traces`` /
``delete_trace_threads`` call in opik 2.2.122, read from the SDK's ``rest_api/traces/raw_client.py`` and seen by
running it against this stub): ``POST /v1/private/traces/search`` (body ``{"project_name", "filters": [{"field",
"operator", "key", "value"}], "limit", "last_retrieved_id", "exclude", ...}``, answered as newline-delimited JSON,
newest id first, pages by ``id < last_retrieved_id``; the filters ``=``, ``!=``, ``contains``, ``starts_with`` on
``id``, ``name``, ``thread_id`` and ``metadata.<key>`` are understood), ``POST /v1/private/traces/delete``
(``{"ids": [...]}``) and ``POST /v1/private/traces/threads/delete`` (``{"project_name", "thread_ids": [...]}``).
Deleted traces leave ``traces`` (their spans and trace scores go with them, as in Opik); ``trace_deletes`` and
``thread_deletes`` hold every id asked for. ``erasure_down = True`` is an outage of those three routes alone
(503); ``down`` stops everything.

``strict=True`` answers a path the stub does not know with 404 and records it in ``unknown``: a test that
asserts ``stub.unknown == []`` fails on any endpoint the SDK calls that the stub (and so the test) does not
account for. The default keeps the old behaviour (200 ``{}``).

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


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class OpikStub(LoopbackServer):
    """Answers the Opik SDK on 127.0.0.1 and records what it sent."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, delay: float = 0.0, down: bool = False,
        strict: bool = False,
    ) -> None:
        super().__init__(host=host, port=port)
        self.delay = delay
        self.down = down
        self.strict = strict
        self.unknown: list[str] = []  # "METHOD /path" of requests a strict stub did not know
        self.datasets: dict[str, dict[str, Any]] = {}  # id -> dataset
        self.dataset_items: dict[str, list[dict[str, Any]]] = {}  # dataset id -> items
        self.experiments: dict[str, dict[str, Any]] = {}  # id -> experiment (PATCHes applied)
        self.experiment_items: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.traces: list[dict[str, Any]] = []
        self.spans: list[dict[str, Any]] = []
        self.feedback_scores: list[dict[str, Any]] = []
        self.span_feedback_scores: list[dict[str, Any]] = []
        self.thread_feedback_scores: list[dict[str, Any]] = []
        self.prompt_versions: dict[str, list[dict[str, Any]]] = {}  # prompt name -> versions, newest last
        self.trace_updates: list[tuple[str, dict[str, Any]]] = []
        self.trace_deletes: list[str] = []  # every trace id a delete asked for, in order
        self.thread_deletes: list[str] = []  # every thread id a thread delete asked for, in order
        self.searches: list[list[dict[str, Any]]] = []  # the filters of every trace search
        self.erasure_down = False
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
                self.unknown,
                self.experiment_items,
                self.trace_deletes,
                self.thread_deletes,
                self.searches,
            ):
                bucket.clear()
            for store in (self.datasets, self.dataset_items, self.experiments):
                store.clear()

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
        if path in ERASURE_PATHS and method == "POST":
            if self.erasure_down:
                return web.json_response({"errors": ["Service Unavailable (OpikStub erasure is down)"]}, status=503)
            with self._lock:
                return self._route_erasure(path, body if isinstance(body, dict) else {})
        if path.startswith((f"{PREFIX}/datasets", f"{PREFIX}/experiments")):
            with self._lock:
                known = self._route_evaluation(method, path, body)
            if known is not None:
                return known
        else:
            answer = self._route(method, path, body)
            if answer is not None:
                return answer
        if self.strict:
            with self._lock:
                self.unknown.append(f"{method} {path}")
            return web.json_response({"errors": [f"OpikStub does not know {method} {path}"]}, status=404)
        return web.json_response({})

    def _route(self, method: str, path: str, body: Any) -> web.StreamResponse | None:
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
        if method == "GET" and path == f"{PREFIX}/auth/workspace":  # the workspace behind "default" (URLs)
            return web.json_response({"workspace_name": "default"})
        if method == "GET" and path == f"{PREFIX}/projects":
            return web.json_response({"content": [], "page": 1, "size": 0, "total": 0})
        if method == "POST" and path == f"{PREFIX}/projects/retrieve":
            return web.json_response(
                {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, str(data.get("name")))), **data}
            )
        return None

    # ------------------------------------------------------------------ search and delete

    def _route_erasure(self, path: str, data: dict[str, Any]) -> web.StreamResponse:
        """Trace search, trace delete and thread delete (called under the lock)."""
        if path == f"{PREFIX}/traces/delete":
            ids = {str(i) for i in data.get("ids") or []}
            self.trace_deletes.extend(str(i) for i in data.get("ids") or [])
            self._forget_traces(ids)
            return web.Response(status=204)
        if path == f"{PREFIX}/traces/threads/delete":
            threads = {str(t) for t in data.get("thread_ids") or []}
            self.thread_deletes.extend(str(t) for t in data.get("thread_ids") or [])
            self._forget_traces({i for i, t in self.traces_by_id().items() if t.get("thread_id") in threads})
            self.thread_feedback_scores[:] = [s for s in self.thread_feedback_scores
                                              if s.get("thread_id") not in threads]
            return web.Response(status=204)
        filters = list(data.get("filters") or [])
        self.searches.append(filters)
        found = sorted((t for t in self.traces_by_id().values() if all(_matches(t, f) for f in filters)),
                       key=lambda t: str(t.get("id")), reverse=True)
        last = data.get("last_retrieved_id")
        if last:
            found = [t for t in found if str(t.get("id")) < str(last)]
        excluded = set(data.get("exclude") or [])
        limit = int(data.get("limit") or len(found) or 1)
        lines = "".join(json.dumps({k: v for k, v in {"start_time": _now(), **t}.items() if k not in excluded},
                                   default=str) + "\n" for t in found[:limit])
        return web.Response(body=lines.encode(), content_type="application/octet-stream")

    def _forget_traces(self, ids: set[str]) -> None:
        self.traces[:] = [t for t in self.traces if str(t.get("id")) not in ids]
        self.trace_updates[:] = [u for u in self.trace_updates if u[0] not in ids]
        self.spans[:] = [s for s in self.spans if str(s.get("trace_id")) not in ids]
        self.feedback_scores[:] = [s for s in self.feedback_scores if str(s.get("id")) not in ids]

    # ------------------------------------------------------------------ datasets and experiments

    def _dataset_named(self, name: str) -> dict[str, Any] | None:
        return next((d for d in self.datasets.values() if d["name"] == name), None)

    def _route_evaluation(self, method: str, path: str, body: Any) -> web.StreamResponse | None:
        """Datasets and experiments (called under the lock); None for a path this stub does not know."""
        data = body if isinstance(body, dict) else {}
        parts = path.removeprefix(PREFIX + "/").split("/")
        now = _now()
        if parts == ["datasets", "retrieve"] and method == "POST":
            found = self._dataset_named(str(data.get("dataset_name") or data.get("name")))
            if found is None:
                return web.json_response({"errors": ["Dataset not found"]}, status=404)
            return web.json_response(found)
        if parts == ["datasets"] and method == "POST":
            dataset_id = str(data.get("id") or uuid.uuid4())
            self.datasets[dataset_id] = {**data, "id": dataset_id, "created_at": now, "last_updated_at": now,
                                         "dataset_items_count": 0}
            self.dataset_items.setdefault(dataset_id, [])
            return web.Response(status=201)
        if len(parts) == 2 and parts[0] == "datasets" and method == "GET" and parts[1] in self.datasets:
            dataset = self.datasets[parts[1]]
            return web.json_response({**dataset, "dataset_items_count": len(self.dataset_items[parts[1]])})
        if parts == ["datasets", "items"] and method == "PUT":
            dataset = (self.datasets.get(str(data.get("dataset_id")))
                       or self._dataset_named(str(data.get("dataset_name"))))
            if dataset is None:
                return web.json_response({"errors": ["Dataset not found"]}, status=404)
            items = self.dataset_items[dataset["id"]]
            for item in data.get("items", []):
                stored = {**item, "id": str(item.get("id") or uuid.uuid4()), "dataset_id": dataset["id"],
                          "created_at": now, "last_updated_at": now}
                items[:] = [i for i in items if i["id"] != stored["id"]] + [stored]
            return web.Response(status=204)
        if parts == ["datasets", "items", "stream"] and method == "POST":
            dataset = self._dataset_named(str(data.get("dataset_name")))
            items = self.dataset_items.get(dataset["id"], []) if dataset else []
            limit = int(data.get("steam_limit") or data.get("stream_limit") or len(items) or 1)
            last = data.get("last_retrieved_id")
            if last:
                ids = [i["id"] for i in items]
                items = items[ids.index(last) + 1:] if last in ids else []
            lines = "".join(json.dumps(item) + "\n" for item in items[:limit])
            return web.Response(body=lines.encode(), content_type="application/octet-stream")
        if len(parts) == 3 and parts[0] == "datasets" and parts[2] == "versions" and method == "GET":
            return web.json_response({"content": [], "page": 1, "size": 0, "total": 0})
        if parts == ["experiments"] and method == "POST":
            experiment_id = str(data.get("id") or uuid.uuid4())
            self.experiments[experiment_id] = {**data, "id": experiment_id, "created_at": now}
            return web.Response(status=201)
        if len(parts) == 2 and parts[0] == "experiments" and parts[1] in self.experiments:
            if method == "GET":
                return web.json_response(self.experiments[parts[1]])
            if method == "PATCH":
                self.experiments[parts[1]].update(data)
                return web.Response(status=204)
        if parts == ["experiments", "finish"] and method == "POST":
            for experiment_id in data.get("ids", []):
                if experiment_id in self.experiments:
                    self.experiments[experiment_id]["status"] = "completed"
            return web.Response(status=204)
        if parts == ["experiments", "items"] and method == "POST":
            self.experiment_items.extend(data.get("experiment_items", []))
            return web.Response(status=204)
        return None


ERASURE_PATHS = (f"{PREFIX}/traces/search", f"{PREFIX}/traces/delete", f"{PREFIX}/traces/threads/delete")


def _matches(trace: dict[str, Any], flt: dict[str, Any]) -> bool:
    """Whether a trace passes one search filter (the operators Rein's searches use)."""
    field, key = str(flt.get("field")), flt.get("key")
    if field == "metadata":
        value = (trace.get("metadata") or {}).get(key) if key else trace.get("metadata")
    else:
        value = trace.get(field)
    have, want, op = "" if value is None else str(value), str(flt.get("value")), str(flt.get("operator"))
    if op == "=":
        return value is not None and have == want
    if op == "!=":
        return have != want
    if op == "contains":
        return want in have
    if op == "starts_with":
        return value is not None and have.startswith(want)
    raise ValueError(f"OpikStub does not know the operator {op!r}")


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
