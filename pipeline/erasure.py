"""/delete reaches Opik: a deleted user's traces and threads are erased there too, durably.

`/delete` records an erasure (the user's opaque id, their thread ids and the trace ids their rows knew) in the
transaction that removes their rows. A pass then flushes what this process still holds for Opik, searches Opik for
every trace of the user (by the opaque id every trace's metadata carries, and by their threads), and deletes those
traces and the threads. An erasure is done when a search made at least `settle_s` after the delete finds nothing: a
trace still on its way (a judge call that was in flight) is found and deleted by a later pass. A failed pass (Opik
down) is retried with backoff, by the periodic job and at start-up, until Opik confirms.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.tracing import Tracer
from storage import erasures
from storage.db import Database
from storage.models import Erasure

logger = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)  # how long one pass holds an erasure against other passes


@dataclass(frozen=True)
class Outcome:
    """What one pass over one erasure did."""

    deleted: int  # traces found and deleted
    done: bool  # Opik confirmed it holds nothing more of the user
    error: str | None = None


class Erasures:
    """Carries out recorded erasures against Opik; every method is safe to call when tracing is off."""

    def __init__(self, *, db: Database, tracer: Tracer, settle_s: float = 300.0, retry_s: float = 60.0,
                 max_backoff_s: float = 3600.0) -> None:
        self.db = db
        self.tracer = tracer
        self.settle = timedelta(seconds=settle_s)
        self.retry = timedelta(seconds=retry_s)
        self.max_backoff = timedelta(seconds=max_backoff_s)
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        """Whether anything reaches Opik (and so needs erasing there)."""
        return self.tracer.enabled

    async def run_due(self, now: datetime | None = None) -> int:
        """One pass over every due erasure; returns how many Opik confirmed."""
        if not self.enabled:
            return 0
        async with self._lock:  # one pass at a time in this process (the claim keeps replicas apart)
            now = now or datetime.now(UTC)
            async with self.db.session() as session:
                todo = [e for e in await erasures.due(session=session, now=now)
                        if await erasures.claim(session=session, erasure=e, until=now + LEASE)]
            if not todo:
                return 0
            await asyncio.to_thread(self.tracer.flush)  # what this process still holds for Opik goes first
            confirmed = 0
            for erasure in todo:
                outcome, threads = await self._erase(erasure, now)
                confirmed += outcome.done
                async with self.db.session() as session:
                    await erasures.attempted(session=session, erasure_id=erasure.id or 0,
                                             next_attempt_at=self._next(erasure, outcome, now), deleted=outcome.deleted,
                                             threads=threads, error=outcome.error,
                                             done_at=now if outcome.done else None)
                logger.info("erasure.pass erasure=%s deleted=%d done=%s error=%s", erasure.id, outcome.deleted,
                            outcome.done, outcome.error)
            return confirmed

    async def _erase(self, erasure: Erasure, now: datetime) -> tuple[Outcome, list[str]]:
        threads = list(erasure.thread_ids)
        try:
            found = await asyncio.to_thread(self.tracer.user_traces, erasure.opaque_id, threads)
            threads = sorted(set(threads) | {t for t in found.values() if t})
            ids = sorted(set(found) | set(erasure.trace_ids))  # deleting an id Opik no longer has is harmless
            await asyncio.to_thread(self.tracer.delete_traces, ids, threads)
        except Exception as exc:
            logger.warning("erasure.failed erasure=%s error=%s", erasure.id, type(exc).__name__)
            return Outcome(0, False, type(exc).__name__), threads
        settled = now - erasure.requested_at >= self.settle
        return Outcome(len(found), not found and settled), threads

    def _next(self, erasure: Erasure, outcome: Outcome, now: datetime) -> datetime:
        """When to look again: soon after traces were found, at the end of the settle time when nothing was found
        before it, with growing delays while Opik fails."""
        if outcome.error is not None:
            failures = min(erasure.attempts, 16)
            return now + min(self.retry * (2 ** failures), self.max_backoff)
        if outcome.deleted:
            return now + self.retry
        return max(now + self.retry / 4, erasure.requested_at + self.settle)

    async def pending(self) -> list[Erasure]:
        """Erasures Opik has not confirmed yet (for tests, /stats and operators)."""
        async with self.db.session() as session:
            return await erasures.pending(session=session)
