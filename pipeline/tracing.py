"""Opik in one place: configured once, a no-op without settings, bounded flush at shutdown."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.settings import Settings

logger = logging.getLogger(__name__)

_OPAQUE_RE = re.compile(r"^[0-9a-f]{12,36}$")
# What a search for a user's traces does not need back: only ids and thread ids are read.
_SEARCH_EXCLUDE = ("input", "output", "metadata", "feedback_scores", "span_feedback_scores", "usage", "comments",
                   "guardrails_validations", "error_info", "tags")


@dataclass
class TurnTrace:
    """The trace of one turn: its id (None when tracing is off) and its output, set by the turn."""

    id: str | None = None
    _data: Any = field(default=None, repr=False)

    def set_output(self, output: dict[str, Any]) -> None:
        """Record what the coach answered."""
        if self._data is not None:
            self._data.update(output=output)

    def add_metadata(self, metadata: dict[str, Any]) -> None:
        """Add metadata to the trace."""
        if self._data is not None:
            self._data.update(metadata=metadata)

    def score(self, name: str, value: float, reason: str | None = None) -> None:
        """A feedback score on the trace, sent with it (one per name: a later one replaces it)."""
        if self._data is None:
            return
        scores = [s for s in (getattr(self._data, "feedback_scores", None) or []) if s.get("name") != name]
        self._data.update(feedback_scores=[*scores, {"name": name, "value": value, "reason": reason}])

    def flag(self, name: str, value: float, reason: str, tags: list[str]) -> None:
        """A feedback score on the trace and tags an operator can filter on."""
        self.score(name, value, reason)
        if self._data is not None:
            self._data.update(tags=tags)


@dataclass
class LLMCall:
    """One Gemini call's span (a no-op when tracing is off); `record` adds what the model answered."""

    _data: Any = field(default=None, repr=False)

    def record(self, text: str, *, prompt_tokens: int, output_tokens: int, cost_usd: float,
               metadata: dict[str, Any]) -> None:
        """The answer's text, its token usage, its estimated cost and what else is known of the call."""
        if self._data is None:
            return
        self._data.update(
            output={"text": text},
            usage={"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                   "total_tokens": prompt_tokens + output_tokens},
            total_cost=cost_usd,
            metadata=metadata,
        )


@dataclass(frozen=True)
class Feedback:
    """One feedback score for a trace (or, with `thread=True`, for an Opik thread)."""

    target_id: str
    name: str
    value: float
    reason: str | None = None
    thread: bool = False


class Tracer:
    """Opik tracing for Rein; every method is safe to call when tracing is off."""

    def __init__(self, settings: Settings, *, enabled: bool = True) -> None:
        self.enabled = enabled and settings.tracing_enabled
        self.project = settings.opik_project_name
        self.flush_timeout_s = settings.opik_flush_timeout_s
        self._opik: Any = None
        _export_environment(settings)
        if self.enabled:
            logger.info("tracing.on project=%s", self.project)
        else:
            logger.info("tracing.off reason=no Opik settings (OPIK_API_KEY or OPIK_URL_OVERRIDE)")

    @contextmanager
    def turn(
        self, name: str, *, thread_id: str | None, input: dict[str, Any], metadata: dict[str, Any], tags: list[str]
    ) -> Iterator[TurnTrace]:
        """A trace around one turn, or a span of the trace already open in this task (an evaluation's item);
        an exception escaping it is recorded."""
        if not self.enabled:
            yield TurnTrace()
            return
        import opik
        from opik import opik_context

        current = opik_context.get_current_trace_data()
        if current is not None:
            with opik.start_as_current_span(name, input=input, metadata=metadata, tags=tags,
                                            project_name=self.project) as span:
                yield TurnTrace(id=current.id, _data=span)
            return
        with opik.start_as_current_trace(
            name, input=input, metadata=metadata, tags=tags, thread_id=thread_id, project_name=self.project
        ) as data:
            yield TurnTrace(id=data.id, _data=data)

    @contextmanager
    def llm_call(self, *, model: str, input: dict[str, Any]) -> Iterator[LLMCall]:
        """An LLM span around one Gemini call, with the text, token usage and the estimated cost.

        The span carries plain strings (system prompt, messages, answer) rather than google-genai's
        request and response objects: Opik serialises every span several times in this process, and
        nested SDK models cost it an order of magnitude more than the same text as a dict.
        """
        if not self.enabled:
            yield LLMCall()
            return
        import opik

        failure: BaseException | None = None
        with opik.start_as_current_span("gemini.generate_content", type="llm", input=input, model=model,
                                        provider="google_ai", project_name=self.project) as data:
            call = LLMCall(_data=data)
            try:
                yield call
            except BaseException as exc:  # recorded on the span, then raised again below
                data.update(error_info={"exception_type": type(exc).__name__, "message": str(exc)[:500],
                                        "traceback": ""})
                failure = exc
        if failure is not None:
            raise failure

    def send_feedback(self, scores: list[Feedback], *, timeout_s: float = 5.0) -> bool:
        """Send scores straight to Opik's REST API (blocking; run it in a thread). True once Opik took them."""
        if not self.enabled or not scores:
            return False
        import opik
        from opik.rest_api.types.feedback_score_batch_item import FeedbackScoreBatchItem
        from opik.rest_api.types.feedback_score_batch_item_thread import FeedbackScoreBatchItemThread

        options: Any = {"timeout_in_seconds": int(max(1, timeout_s)), "max_retries": 0}
        try:
            rest = self._client(opik).rest_client
            trace_items = [
                FeedbackScoreBatchItem(id=s.target_id, name=s.name, value=s.value, reason=s.reason, source="sdk",
                                       project_name=self.project)
                for s in scores if not s.thread
            ]
            thread_items = [
                FeedbackScoreBatchItemThread(thread_id=s.target_id, name=s.name, value=s.value, reason=s.reason,
                                             source="sdk", project_name=self.project)
                for s in scores if s.thread
            ]
            if trace_items:
                rest.traces.score_batch_of_traces(scores=trace_items, request_options=options)
            if thread_items:
                rest.traces.score_batch_of_threads(scores=thread_items, request_options=options)
        except Exception as exc:
            logger.warning("tracing.feedback_failed count=%d error=%s", len(scores), type(exc).__name__)
            return False
        return True

    def user_traces(self, opaque_id: str, thread_ids: Iterable[str], *, limit: int = 100_000) -> dict[str, str | None]:
        """Every trace Opik holds of one user, as trace id -> thread id (blocking; run it in a thread): those whose
        metadata names the user's opaque id, and those in one of the user's threads. Raises when Opik fails."""
        if not self.enabled:
            return {}
        if not _OPAQUE_RE.match(opaque_id):
            raise ValueError("not an opaque id")
        import opik

        client = self._client(opik)
        threads = set(thread_ids)
        found: dict[str, str | None] = {}
        searches = ((f'metadata.user = "{opaque_id}"', False), (f'thread_id starts_with "{opaque_id[:12]}-"', True))
        for filter_string, of_known_threads in searches:
            for trace in client.search_traces(project_name=self.project, filter_string=filter_string,
                                              max_results=limit, truncate=True, exclude=list(_SEARCH_EXCLUDE)):
                if trace.id and (not of_known_threads or trace.thread_id in threads):
                    found[trace.id] = trace.thread_id
        return found

    def delete_traces(self, trace_ids: list[str], thread_ids: list[str], *, timeout_s: float = 30.0) -> None:
        """Delete traces (their spans and scores go with them) and threads in Opik (blocking; run it in a thread).
        Raises when Opik did not take a request (after the SDK's own retries of a 5xx: about 11 s)."""
        if not self.enabled:
            return
        import opik

        rest = self._client(opik).rest_client
        options: Any = {"timeout_in_seconds": int(max(1, timeout_s)), "max_retries": 0}
        for start in range(0, len(trace_ids), 1000):
            rest.traces.delete_traces(ids=trace_ids[start:start + 1000], request_options=options)
        for start in range(0, len(thread_ids), 100):
            rest.traces.delete_trace_threads(thread_ids=thread_ids[start:start + 100], project_name=self.project,
                                             request_options=options)

    def _client(self, opik: Any) -> Any:
        if self._opik is None:
            self._opik = opik.Opik(project_name=self.project)
        return self._opik

    def register_prompts(self, prompts: list[Any]) -> int:
        """Put each versioned prompt in Opik's prompt library (blocking; run it in a thread)."""
        if not self.enabled:
            return 0
        import opik

        registered = 0
        for prompt in prompts:
            try:
                self._client(opik).create_prompt(name=prompt.name, prompt=prompt.text,
                                                 metadata={"version": prompt.version}, project_name=self.project)
                registered += 1
            except Exception as exc:
                logger.warning("tracing.prompt_not_registered name=%s error=%s", prompt.name, type(exc).__name__)
        return registered

    def flush(self) -> bool:
        """Send pending traces, waiting at most the configured bound; True if it finished in time."""
        if not self.enabled:
            return True
        import opik

        done = threading.Event()

        def run() -> None:
            try:
                opik.flush_tracker(timeout=max(1, int(self.flush_timeout_s)))
            except Exception:
                logger.warning("tracing.flush_failed", exc_info=True)
            finally:
                done.set()

        threading.Thread(target=run, name="opik-flush", daemon=True).start()
        finished = done.wait(self.flush_timeout_s)
        if not finished:
            logger.warning("tracing.flush_timeout seconds=%.1f", self.flush_timeout_s)
        return finished


def _export_environment(settings: Settings) -> None:
    """Opik's SDK reads its own variables; pass on what came from `.env` and turn telemetry off."""
    os.environ.setdefault("OPIK_SENTRY_ENABLE", "false")
    os.environ.setdefault("OPIK_ANALYTICS_ENABLE", "false")
    # A turn lasts seconds: one message per trace and span at the end halves Opik's work per turn.
    os.environ.setdefault("OPIK_LOG_START_TRACE_SPAN", "false")
    # Opik's sending runs on threads inside the bot's process and competes with turns for the GIL: one
    # sender is plenty for batched traces, Rein's traces never embed files to extract, and the cheapest
    # zlib level still shrinks JSON several times (docs/PERFORMANCE.md has the figures).
    os.environ.setdefault("OPIK_BACKGROUND_WORKERS", "1")
    os.environ.setdefault("OPIK_IS_ATTACHMENT_EXTRACTION_ACTIVE", "false")
    os.environ.setdefault("OPIK_REQUEST_COMPRESSION_LEVEL", "1")
    if not settings.tracing_enabled:
        return
    os.environ["OPIK_PROJECT_NAME"] = settings.opik_project_name
    if settings.opik_url_override:
        os.environ["OPIK_URL_OVERRIDE"] = settings.opik_url_override
    if settings.opik_api_key:
        os.environ["OPIK_API_KEY"] = settings.opik_api_key.get_secret_value()
    if settings.opik_workspace:
        os.environ["OPIK_WORKSPACE"] = settings.opik_workspace
