"""The check-in timer: one APScheduler (3.x) date job armed for the earliest due instant in Rein's own
`checkin_schedules` table (re-armed after every pass, whenever a schedule moves earlier in this process, and at
least every `poll_s`, so changes made by another process are seen): the same cost for ten users as for a
hundred thousand.

A pass claims what is due in batches that start small and double, so the first check-ins leave at once, and
each batch is written while the one before it is being sent. Every item is handled on its own: whatever
happens to one (see `pipeline.checkins.dispatch`) is recorded for that item, and a batch already sending is
never cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.checkins.dispatch import Claimed, Dispatch, RunStats
from pipeline.replies import Reply

logger = logging.getLogger(__name__)


class RecipientBlocked(Exception):
    """The user blocked the bot (Telegram answered 403 Forbidden)."""


class DeliveryUncertain(Exception):
    """The connection failed mid-send: Telegram may or may not have delivered the message."""


# Delivers replies to (chat_id, telegram_id) in order with the user's turns: it first calls `begin()` under the
# user's lock and sends nothing when that says False; it raises RecipientBlocked or DeliveryUncertain.
Begin = Callable[[], Awaitable[bool]]
Sender = Callable[[int, int, list[Reply], Begin], Awaitable[bool]]


class CheckinScheduler:
    """Sends due check-ins. `start()`/`shutdown()` are independent of the bot, so one replica can own it."""

    JOB_ID = "rein-checkin-wake"

    def __init__(self, *, dispatch: Dispatch, send: Sender, poll_s: float = 60.0, batch: int = 200,
                 concurrency: int = 32) -> None:
        self.dispatch = dispatch
        self.send = send
        self.poll = timedelta(seconds=poll_s)
        self.batch = batch
        self.concurrency = concurrency
        self._scheduler: Any = None
        self._lock = asyncio.Lock()
        self._armed: datetime | None = None
        self._running: set[asyncio.Task[None]] = set()  # passes the timer started (they queue on the lock)
        self.passes = 0  # passes finished (a positive signal that a pass has run, for tests and metrics)

    @property
    def running(self) -> bool:
        """Whether the scheduler is started."""
        return self._scheduler is not None

    @property
    def armed(self) -> datetime | None:
        """When the timer fires next (None while a pass runs or before the start)."""
        return self._armed

    async def start(self) -> None:
        """Start the timer and arm it (what fell due while the bot was down is handled at once)."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._scheduler.start()
        self.dispatch.core.on_change = self.poke
        await self._rearm()
        logger.info("checkin.scheduler_started armed=%s", self._armed)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the timer and wait (bounded) for a pass in progress."""
        if self._scheduler is None:
            return
        self.dispatch.core.on_change = None
        self._scheduler.shutdown(wait=False)
        self._scheduler = None
        try:
            async with asyncio.timeout(timeout_s), self._lock:
                pass
        except TimeoutError:
            logger.warning("checkin.shutdown_timeout seconds=%.1f", timeout_s)
        logger.info("checkin.scheduler_stopped")

    def poke(self, when: datetime) -> None:
        """A schedule now falls due at `when`: wake up then if that is earlier than planned."""
        if self._scheduler is not None and (self._armed is None or when < self._armed):
            self._arm(when)

    def _arm(self, when: datetime | None) -> None:
        from apscheduler.triggers.date import DateTrigger

        if self._scheduler is None:
            return
        cap = self.dispatch.core.clock() + self.poll
        when = cap if when is None else min(when, cap)
        self._scheduler.add_job(self._wake, trigger=DateTrigger(run_date=when, timezone=UTC), id=self.JOB_ID,
                                replace_existing=True)
        self._armed = when

    async def _rearm(self) -> None:
        self._arm(await self.dispatch.earliest_due())

    async def _wake(self) -> None:
        """The timer's job: start a pass and return at once. A job that ran the pass itself would still be running
        when its pass re-armed the timer for something already due; APScheduler skips a job while an instance of
        it runs (max_instances=1), and that skipped wake-up was the last one: what it was for waited for good."""
        task = asyncio.create_task(self._pass(), name="checkin-pass")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _pass(self) -> None:
        if self._scheduler is None:  # stopped meanwhile
            return
        self._armed = None
        try:
            await self.run_due()
        except Exception:
            logger.exception("checkin.pass_failed")
        finally:
            try:
                await self._rearm()
            except Exception:
                logger.exception("checkin.rearm_failed")
                self._arm(None)

    async def run_due(self, now: datetime | None = None) -> RunStats:
        """Deliver what an earlier pass left unfinished, then claim and deliver everything due at `now`."""
        total = RunStats()
        async with self._lock:
            now = now or self.dispatch.core.clock()
            drafting = asyncio.Semaphore(self.concurrency)
            sending = asyncio.Semaphore(self.concurrency)
            batches: list[asyncio.Task[list[str]]] = []
            try:
                recovered = await self.dispatch.recover(now, self.batch)
                total.recovered = len(recovered)
                if recovered:
                    batches.append(await self._start_batch(recovered, drafting, sending))
                size = min(self.batch, self.concurrency)
                while True:
                    items, stats = await self.dispatch.claim_due(now, size)
                    size = min(self.batch, size * 2)
                    total.add(stats)
                    if stats.seen == 0:
                        break
                    if not items:
                        continue
                    batches.append(await self._start_batch(items, drafting, sending))
                    if len(batches) > 1:  # at most two batches in flight: the one sending and the one written
                        for status in await batches.pop(0):
                            total.count(status)
            finally:
                # A pass that is stopped (or fails) still lets what is sending finish: it is never cancelled.
                for batch in batches:
                    for status in await batch:
                        total.count(status)
        self.passes += 1
        if total.seen or total.recovered:
            logger.info("checkin.pass %s", " ".join(f"{f.name}={getattr(total, f.name)}" for f in fields(total)))
        return total

    async def _start_batch(self, items: list[Claimed], drafting: asyncio.Semaphore,
                           sending: asyncio.Semaphore) -> asyncio.Task[list[str]]:
        """Write every item of a batch (returns once they are all stored), then send them in a task."""
        prepared = await asyncio.gather(*(self._prepare(item, drafting) for item in items))
        return asyncio.create_task(self._send_all(items, prepared, sending))

    async def _send_all(self, items: list[Claimed], prepared: list[Reply | str | None],
                        sending: asyncio.Semaphore) -> list[str]:
        return list(await asyncio.gather(*(self._deliver(item, message, sending)
                                           for item, message in zip(items, prepared, strict=True))))

    async def _prepare(self, item: Claimed, gate: asyncio.Semaphore) -> Reply | str | None:
        """The item's message; None when its user is gone; its failure reason when writing or storing failed."""
        async with gate:
            try:
                return await self.dispatch.prepare(item)
            except Exception as exc:
                logger.exception("checkin.prepare_failed send=%s", item.send_id)
                return await self._end(item, "failed", f"prepare: {type(exc).__name__}")

    async def _deliver(self, item: Claimed, message: Reply | str | None, gate: asyncio.Semaphore) -> str:
        """Send one prepared item and record how it ended (None: its user is gone; a string: how preparing it
        ended, recorded already)."""
        if message is None:
            return "gone"
        if isinstance(message, str):
            return message
        async with gate:
            try:
                sent = await self.send(item.chat_id, item.telegram_id, [message],
                                       lambda: self.dispatch.start_sending(item.send_id))
            except RecipientBlocked:
                await self._guarded(self.dispatch.blocked(item.user_id))
                return await self._end(item, "blocked", "the user blocked the bot")
            except DeliveryUncertain as exc:
                logger.warning("checkin.delivery_uncertain send=%s", item.send_id)
                return await self._end(item, "uncertain", str(exc))
            except Exception as exc:
                logger.exception("checkin.send_failed send=%s", item.send_id)
                return await self._end(item, "failed", f"send: {type(exc).__name__}")
        if not sent:
            return "gone"  # deleted meanwhile, or another pass had it: nothing was sent
        return await self._end(item, "sent")

    async def _end(self, item: Claimed, status: str, reason: str | None = None) -> str:
        """Record the end of one item; if even that fails, a later pass's recovery finds it."""
        await self._guarded(self.dispatch.finish(item.send_id, status, reason))
        return status

    @staticmethod
    async def _guarded(work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:
            logger.exception("checkin.record_failed")
