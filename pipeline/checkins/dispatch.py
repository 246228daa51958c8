"""The scheduler's side of check-ins: claiming what is due, writing it, and recording how each send ended.

Exactly once: a send is claimed before it goes out, with a row in `checkin_sends` that is unique per
(schedule, due instant) and written in the same transaction that moves the schedule to its next occurrence.
A send then moves claimed → drafted (the coach's text stored) → sending (handed to Telegram, under the
user's lock, by one conditional update that only one caller can win) → sent, blocked, failed or uncertain.
A send never handed to Telegram can be delivered later without risk of a duplicate; one that was handed over
but not confirmed is marked uncertain, never sent again.

Every item stands alone: a deleted user, a blocked chat, an LLM or storage error, any exception, ends that
item (recorded with its reason) and nothing else.

Missed while down: a check-in that fell due while the bot was not running is sent once when it comes back if
it is at most `grace_s` late; several missed occurrences fold into the latest one; older ones are skipped.
Quiet hours: nothing is sent inside them except a check-in the user scheduled there themselves; a snooze that
would end inside them waits for their end, a late catch-up inside them is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipeline import prompts
from pipeline.checkins.core import CheckinCore
from pipeline.i18n import N_, _, use_locale
from pipeline.replies import Button, Para, Reply
from pipeline.schedule import in_quiet, latest_occurrence, next_occurrence, parse_time, quiet_end
from pipeline.steps import Owner
from storage import checkins as store
from storage import turns
from storage.models import CheckinPrefs, CheckinSchedule, Turn, User, utcnow

logger = logging.getLogger(__name__)

ON_TIME = timedelta(minutes=10)  # a send this late still counts as on time (quiet hours)
FALLBACK_CHECKIN = N_("Time for your check-in! How did your plan go since we last spoke?")
FALLBACK_REVIEW = N_("Your week in review: thanks for checking in. What is one thing you want to do differently "
                     "next week?")


@dataclass(frozen=True)
class Claimed:
    """One claimed send, ready to be written and delivered (`turn_id`: its text is stored already)."""

    send_id: int
    kind: str
    due_at: datetime
    user_id: int
    telegram_id: int
    chat_id: int
    zone: str
    turn_id: int | None = None
    language: str = "en"  # the user's language: the item is written and labelled in it


@dataclass
class RunStats:
    """What one pass over the due schedules did."""

    seen: int = 0
    claimed: int = 0
    sent: int = 0
    skipped: int = 0
    deferred: int = 0
    blocked: int = 0
    failed: int = 0
    gone: int = 0
    recovered: int = 0

    def add(self, other: RunStats) -> None:
        """Add another pass's counts to this one."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def count(self, status: str) -> None:
        """Count how one claimed send ended."""
        if status in ("sent", "blocked", "gone"):
            setattr(self, status, getattr(self, status) + 1)
        else:
            self.failed += 1


def _turn_kind(schedule_kind: str) -> str:
    """What a send of this schedule is in the conversation: a weekly review, or a check-in (a snooze too)."""
    return "review" if schedule_kind == "review" else "checkin"


class Dispatch:
    """Claims due schedules, writes and stores each check-in, and records each send's end."""

    def __init__(self, core: CheckinCore) -> None:
        self.core = core
        self.db = core.db

    async def earliest_due(self) -> datetime | None:
        """The earliest due instant over all schedules."""
        async with self.db.session() as session:
            return await store.earliest_due(session=session)

    async def claim_due(self, now: datetime, limit: int) -> tuple[list[Claimed], RunStats]:
        """Claim what is due at `now` (at most `limit` schedules) and move each schedule past `now`."""
        stats = RunStats()
        claimed: list[Claimed] = []
        async with self.db.session() as session:
            for row, user, prefs in await store.due(session=session, now=now, limit=limit):
                stats.seen += 1
                try:
                    item = await self._claim_one(session, row, user, prefs, now, stats)
                except Exception:  # a row that cannot be scheduled (a zone that no longer exists…): it alone stops
                    logger.exception("checkin.claim_failed schedule=%s user=%s", row.id, user.opaque_id)
                    stats.failed += 1
                    item, row.next_due_at = None, None
                row.updated_at = utcnow()
                session.add(row)
                if item is not None:
                    claimed.append(item)
        stats.claimed = len(claimed)
        return claimed, stats

    async def _claim_one(self, session: Any, row: CheckinSchedule, user: User, prefs: CheckinPrefs | None,
                         now: datetime, stats: RunStats) -> Claimed | None:
        zone = user.timezone or "UTC"
        tz = ZoneInfo(zone)
        assert row.next_due_at is not None
        if user.blocked and (prefs is None or not prefs.paused):
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            prefs.paused, prefs.pause_reason = True, "blocked"  # /start after unblocking resumes
            session.add(prefs)
        if prefs is not None and prefs.paused:
            row.next_due_at = None
            return None
        if prefs is not None and prefs.paused_until is not None and prefs.paused_until > now:
            row.next_due_at = self.core.next_after(row, prefs.paused_until, zone)
            return None
        if row.days == 0:
            due_at, following = row.next_due_at, None
        else:
            at = parse_time(row.local_time)
            due_at = latest_occurrence(row.next_due_at, now, at, row.days, zone)
            following = next_occurrence(due_at, at, row.days, zone)
        late = now - due_at
        if late > self.core.grace or (self.core.allowed and user.telegram_id not in self.core.allowed):
            logger.info("checkin.skipped kind=%s user=%s late_s=%.0f", row.kind, user.opaque_id, late.total_seconds())
            stats.skipped += 1
            row.next_due_at = following
            return None
        start, end = self.core.quiet(prefs)
        quiet_now = in_quiet(now.astimezone(tz).time(), start, end)
        chosen_quiet = row.kind == "checkin" and in_quiet(due_at.astimezone(tz).time(), start, end)
        if quiet_now and ((late > ON_TIME and not chosen_quiet) or row.kind == "snooze"):
            if row.days == 0:
                row.next_due_at = quiet_end(now, zone, end)
                stats.deferred += 1
            else:
                logger.info("checkin.skipped_quiet kind=%s user=%s", row.kind, user.opaque_id)
                row.next_due_at = following
                stats.skipped += 1
            return None
        send_id = await store.claim(session=session, schedule=row, due_at=due_at)
        row.next_due_at = following
        if send_id is None:
            return None
        return Claimed(send_id=send_id, kind=row.kind, due_at=due_at, user_id=user.id or 0,
                       telegram_id=user.telegram_id, chat_id=user.chat_id, zone=zone, language=user.language)

    async def recover(self, now: datetime, limit: int) -> list[Claimed]:
        """Sends an earlier pass claimed and never finished: those never handed to Telegram come back to be
        delivered (within the grace window; later ones end as expired), those handed over end as uncertain."""
        items: list[Claimed] = []
        async with self.db.session() as session:
            for send, user in await store.open_sends(session=session, limit=limit):
                assert send.id is not None
                if send.status == "sending":
                    await store.finish_send(session=session, send_id=send.id, status="uncertain",
                                            reason="interrupted while sending")
                elif now - send.due_at > self.core.grace:
                    await store.finish_send(session=session, send_id=send.id, status="expired",
                                            reason="not sent within the grace window")
                else:
                    items.append(Claimed(send_id=send.id, kind=send.kind, due_at=send.due_at, user_id=user.id or 0,
                                         telegram_id=user.telegram_id, chat_id=user.chat_id,
                                         zone=user.timezone or "UTC", turn_id=send.turn_id,
                                         language=user.language))
        if items:
            logger.info("checkin.recovering count=%d", len(items))
        return items

    async def prepare(self, item: Claimed) -> Reply | None:
        """Write the check-in (or weekly review) and store it as the coach's turn; None when the user is gone.
        Raises only what the caller records as the item's failure. Everything is in the user's language."""
        with use_locale(item.language):
            return await self._prepare(item)

    async def _prepare(self, item: Claimed) -> Reply | None:
        if item.turn_id is not None:  # recovered: the text was written and stored before
            async with self.db.session() as session:
                stored = await turns.get_turn(session=session, turn_id=item.turn_id, user_id=item.user_id)
            return None if stored is None else self._message(item.kind, stored)
        written = await self._draft(item)
        if written is None:
            return None
        text, trace_id = written
        async with self.db.session() as session:
            # The send row first, then the user's: the order /delete takes them in, so the two never deadlock.
            if not await store.mark_drafted(session=session, send_id=item.send_id):
                return None  # deleted, or another pass took it meanwhile: nothing to store or send
            user = await session.get(User, item.user_id)
            if user is None:
                return None
            turn = await turns.add_turn(session=session, user=user, role="coach", kind=_turn_kind(item.kind),
                                        text=text, trace_id=trace_id)
            await store.set_turn(session=session, send_id=item.send_id, turn_id=turn.id or 0)
        return self._message(item.kind, turn)

    async def _draft(self, item: Claimed) -> tuple[str, str | None] | None:
        """The coach's text for the check-in, traced in the user's thread; None when the user is gone."""
        local = self.core.clock().astimezone(ZoneInfo(item.zone))
        async with self.db.session() as session:
            user = await session.get(User, item.user_id)
            if user is None:
                return None
            streak = await self.core.streak(session, item.user_id)
            context = await self.core.context(session, user)
            owner = Owner(user.id, user.opaque_id, user.thread_id)
            week = await store.progress_since(session=session, user_id=item.user_id,
                                              since=local.date() - timedelta(days=6)) if item.kind == "review" else []
        today = f"Today is {local.strftime('%A %Y-%m-%d')}, {local.strftime('%H:%M')} local time."
        if item.kind == "review":
            results = ", ".join(f"{e.local_date.strftime('%a')}: {e.status}" + (f" ({e.note})" if e.note else "")
                                for e in week) or "no check-ins answered"
            request = f"{today}\nThis week's check-ins: {results}. Streak: {streak}."
            return await self.core.write("review", owner, prompts.REVIEW, context, request, _(FALLBACK_REVIEW))
        request = f"{today}\nStreak: {streak} check-ins in a row. Write today's check-in."
        return await self.core.write("checkin", owner, prompts.CHECKIN, context, request, _(FALLBACK_CHECKIN))

    @staticmethod
    def _message(kind: str, turn: Turn) -> Reply:
        """A stored check-in (or review) as a message with its buttons."""
        ref = turn.id or 0
        buttons = []
        if _turn_kind(kind) == "checkin":
            buttons = [[Button(_("✅ Done"), "checkin_done", ref), Button(_("🟡 Partly"), "checkin_partly", ref),
                        Button(_("❌ Missed"), "checkin_missed", ref)],
                       [Button(_("⏰ Snooze 1 h"), "checkin_snooze", ref)]]
        return Reply(paras=[Para(turn.text)], kind=_turn_kind(kind), turn_id=turn.id, buttons=buttons)

    async def start_sending(self, send_id: int) -> bool:
        """Hand the send to Telegram (see `store.start_sending`): False means send nothing."""
        async with self.db.session() as session:
            return await store.start_sending(session=session, send_id=send_id)

    async def finish(self, send_id: int, status: str, reason: str | None = None) -> None:
        """Record how one send ended."""
        async with self.db.session() as session:
            await store.finish_send(session=session, send_id=send_id, status=status, reason=reason)

    async def blocked(self, user_id: int) -> None:
        """The user blocked the bot: their check-ins pause until they /start again (no retries)."""
        async with self.db.session() as session:
            user = await session.get(User, user_id)
            if user is None:
                return
            prefs = await store.get_prefs(session=session, user_id=user_id)
            prefs.paused, prefs.pause_reason = True, "blocked"
            session.add(prefs)
            await self.core.reschedule(session, user, prefs, self.core.clock())
        logger.info("checkin.paused_blocked user=%s", user.opaque_id)
