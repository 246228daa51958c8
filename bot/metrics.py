"""Prometheus metrics for `/metrics`: turns, LLM latency and errors, check-ins sent, ratings, queue depth.

Each `Metrics` has its own registry (several applications can live in one process, as in the tests).
The handlers call the small hooks here; Gemini calls are timed by wrapping the client, as tracing does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

R = TypeVar("R")
CONTENT_TYPE = CONTENT_TYPE_LATEST
_TURN_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
_LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


class Metrics:
    """Rein's counters, histograms and gauges in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.running = 0  # turns in flight, for the graceful stop
        r = self.registry
        self.turns = Counter("rein_turns", "Coach turns handled, by outcome", ["outcome"], registry=r)
        self.turn_seconds = Histogram("rein_turn_seconds", "Time from taking a user's lock to the last reply sent",
                                      buckets=_TURN_BUCKETS, registry=r)
        self.in_flight = Gauge("rein_turns_in_flight", "Turns being handled now", registry=r)
        self.llm_requests = Counter("rein_llm_requests", "Gemini requests (each attempt), by outcome", ["outcome"],
                                    registry=r)
        self.llm_seconds = Histogram("rein_llm_latency_seconds", "Latency of one Gemini request",
                                     buckets=_LLM_BUCKETS, registry=r)
        self.llm_errors = Counter("rein_llm_errors", "Failed Gemini requests, by error type", ["error"], registry=r)
        self.checkins_sent = Counter("rein_checkins_sent", "Check-in messages sent", registry=r)
        self.ratings = Counter("rein_ratings", "Ratings given, by stars", ["stars"], registry=r)
        self.updates = Counter("rein_updates_received", "Updates received from Telegram, by way", ["via"], registry=r)
        self.queue_depth = Gauge("rein_update_queue_depth", "Updates received but not yet being handled", registry=r)
        self.leader = Gauge("rein_scheduler_leader", "1 while this process runs the check-in scheduler", registry=r)
        for outcome in ("ok", "error"):
            self.turns.labels(outcome)
            self.llm_requests.labels(outcome)

    def track_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from `depth()` at every scrape."""
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    # ---------------------------------------------------------------- hooks

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Around one turn (its user's lock held): in flight, then counted as ok or error and timed."""
        self.in_flight.inc()
        self.running += 1
        started = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.in_flight.dec()
            self.running -= 1
            self.turns.labels("ok" if ok else "error").inc()
            self.turn_seconds.observe(time.perf_counter() - started)

    def rated(self, stars: int) -> None:
        """A user rated a coach message."""
        self.ratings.labels(str(stars)).inc()

    def checkin_sent(self) -> None:
        """A check-in message went out."""
        self.checkins_sent.inc()

    def counting_sends(self, send: Callable[..., Awaitable[bool]]) -> Callable[..., Awaitable[bool]]:
        """The check-in scheduler's send function, counting each check-in that went out."""

        async def counted(*args: Any, **kwargs: Any) -> bool:
            sent = await send(*args, **kwargs)
            if sent:
                self.checkin_sent()
            return sent

        return counted

    def instrument_genai(self, request: Callable[[list[Any], Any], Awaitable[R]]) -> Callable[[list[Any], Any],
                                                                                          Awaitable[R]]:
        """Time every Gemini request (the LLM adapter's request function; for a streamed answer, its opening up to
        the first chunk) and count failures by type."""

        async def timed(contents: list[Any], config: Any) -> R:
            started = time.perf_counter()
            try:
                response = await request(contents, config)
            except BaseException as exc:
                self.llm_requests.labels("error").inc()
                self.llm_errors.labels(_error_name(exc)).inc()
                raise
            finally:
                self.llm_seconds.observe(time.perf_counter() - started)
            self.llm_requests.labels("ok").inc()
            return response

        return timed


def _error_name(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return f"http_{code}" if isinstance(code, int) else type(exc).__name__
