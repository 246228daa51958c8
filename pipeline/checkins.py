"""Scheduled check-ins, progress and streaks in the user's own time zone (no Telegram here).

Schedules live in Rein's own table (`checkin_schedules`), one row per user and kind (checkin, review,
snooze) with the next due instant in UTC, computed with zoneinfo (`pipeline.schedule`). That table is the
persistent store: `CheckinScheduler` keeps one APScheduler date job armed for the earliest due instant
(and at least every `poll_s`, so changes made by another process are seen), which costs the same for ten
users as for a hundred thousand.

Exactly once: a send is claimed before it goes out, with a row in `checkin_sends` that is unique per
(schedule, due instant) and written in the same transaction that moves the schedule to its next
occurrence. A restart, a second run or a second process finds the claim (or the moved schedule) and does
not send again. A crash between the claim and the send therefore loses that one check-in instead of
sending it twice; its claim stays with status "claimed". A connection dropped while sending is not
retried either (status "uncertain"): Telegram may have delivered it.

Missed while down: a check-in that fell due while the bot was not running is sent once when it comes
back if it is at most `grace_s` late; several missed occurrences fold into the latest one; older ones are
skipped. Quiet hours: nothing is sent inside them except a check-in the user scheduled there themselves;
a snooze that would end inside them waits for their end, a late catch-up inside them is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipeline import prompts
from pipeline.chart import weekly_chart
from pipeline.coach import EXPIRED, Who, coaching_context
from pipeline.llm import LLM, LLMError, user_content
from pipeline.replies import Button, Para, Reply
from pipeline.schedule import (
    CUSTOM,
    EVERY_DAY,
    PRESETS,
    SUNDAY,
    ScheduleError,
    describe,
    format_time,
    in_quiet,
    latest_occurrence,
    next_occurrence,
    parse_checkin,
    parse_range,
    parse_time,
    quiet_end,
    schedule_menu,
)
from pipeline.timezones import from_location, resolve
from pipeline.tracing import Tracer
from storage import checkins as store
from storage import repository as repo
from storage.db import Database
from storage.models import CheckinPrefs, CheckinSchedule, Milestone, Plan, ProgressEntry, Stage, Turn, User, utcnow

logger = logging.getLogger(__name__)

SNOOZE = timedelta(hours=1)
NOTE_WINDOW = timedelta(minutes=30)
AWAIT_WINDOW = timedelta(minutes=30)
ON_TIME = timedelta(minutes=10)  # a send this late still counts as on time (quiet hours)
RECURRING = ("checkin", "review")
CUSTOM_BASE = 1000  # awaiting_ref for a custom time waiting for a zone: CUSTOM_BASE + minutes * 128 + days
STATUS_LABELS = {"done": "✅ Done", "partly": "🟡 Partly", "missed": "❌ Missed"}

ASK_ZONE = (
    "Which time zone are you in? Send your city (e.g. Berlin or São Paulo), a zone name like "
    "Europe/Berlin, or share your location (📎 → Location)."
)
ASK_CUSTOM = "Send the time, and the days if not every day, e.g. 07:30 or 19:00 mon,wed,fri."
FALLBACK_CHECKIN = "Time for your check-in! How did your plan go since we last spoke?"
FALLBACK_REPLY = {
    "done": "Great work, that's one more step done. Keep the rhythm going!",
    "partly": "Partly is still progress. What would make the rest easier next time?",
    "missed": "That happens. Pick the smallest version of the next step and do just that.",
}
FALLBACK_REVIEW = "Your week in review: thanks for checking in. What is one thing you want to do differently next week?"


class RecipientBlocked(Exception):
    """The user blocked the bot (Telegram answered 403 Forbidden)."""


class DeliveryUncertain(Exception):
    """The connection failed mid-send: Telegram may or may not have delivered the message."""


Sender = Callable[[int, int, list[Reply]], Awaitable[None]]  # (chat_id, telegram_id, replies)


@dataclass(frozen=True)
class Claimed:
    """One claimed send, ready to be written and delivered."""

    send_id: int
    schedule_id: int
    kind: str
    due_at: datetime
    user_id: int
    telegram_id: int
    chat_id: int
    zone: str


@dataclass(frozen=True)
class Draft:
    """A check-in written by the coach, not yet stored or sent."""

    item: Claimed
    kind: str
    text: str
    trace_id: str | None


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

    def add(self, other: RunStats) -> None:
        """Add another pass's counts to this one."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class Progress:
    """A user's progress: streak, the last weeks (oldest first) and milestones."""

    streak: int
    weeks: list[tuple[date, int, int, int, int]]  # (monday, done, partly, missed, check-ins sent)
    reached: int
    milestones: int
    next_milestone: Milestone | None

    def rates(self) -> list[float | None]:
        """Completion per week (done = 1, partly = ½) over the check-ins sent; None without any."""
        out: list[float | None] = []
        for _, done, partly, missed, sent in self.weeks:
            total = max(sent, done + partly + missed)
            out.append((done + 0.5 * partly) / total if total else None)
        return out


def _at(text: str) -> time:
    return parse_time(text)


def local_label(instant: datetime, zone: str) -> str:
    """"Sun 29 Nov, 08:00" in the zone."""
    local = instant.astimezone(ZoneInfo(zone))
    return local.strftime("%a %d %b, %H:%M")


class Checkins:
    """Check-in logic behind the handlers and the scheduler."""

    def __init__(self, *, db: Database, llm: LLM, tracer: Tracer, grace_s: float = 7200.0,
                 quiet_hours: str = "22:00-07:00", review_time: str = "19:00",
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.llm = llm
        self.tracer = tracer
        self.grace = timedelta(seconds=grace_s)
        self.default_quiet = parse_range(quiet_hours)
        self.review_time = parse_time(review_time)
        self.clock = clock
        self.on_change: Callable[[datetime], None] | None = None

    # ----- schedule, zone, pause, quiet hours -------------------------------------------------------

    async def menu(self, who: Who) -> list[Reply]:
        """/checkin: the schedule menu, with the current schedule if there is one."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            row = await store.get_schedule(session=session, user_id=user.id or 0, kind="checkin")
            prefs = await store.find_prefs(session=session, user_id=user.id or 0)
        current = None
        if row is not None:
            current = f"Your check-ins: {describe(_at(row.local_time), row.days)} ({user.timezone or 'UTC'})."
            if prefs is not None and (prefs.paused or (prefs.paused_until and prefs.paused_until > self.clock())):
                current += " Paused: /resume turns them back on."
            current += " /checkin off stops them."
        return [schedule_menu(current)]

    async def choose(self, who: Who, preset: int) -> list[Reply]:
        """A menu button: a preset time, or Custom."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if preset == CUSTOM:
                self._await(prefs, "custom", None)
                return [Reply.plain(ASK_CUSTOM)]
            choice = PRESETS.get(preset)
            if choice is None:
                return [Reply.plain("This button has expired. /checkin shows the choices.")]
            if user.timezone is None:
                self._await(prefs, "timezone", preset)
                return [Reply.plain(ASK_ZONE)]
            return [await self._apply(session, user, prefs, choice.at, choice.days)]

    async def command(self, who: Who, args: str) -> list[Reply]:
        """/checkin [HH:MM [days] | off]."""
        args = args.strip()
        if not args:
            return await self.menu(who)
        if args.lower() in ("off", "stop", "none"):
            async with self.db.session() as session:
                user = await self._user(session, who)
                gone = await store.drop_schedules(session=session, user_id=user.id or 0,
                                                  kinds=("checkin", "review", "snooze"))
            if not gone:
                return [Reply.plain("You have no check-ins set. /checkin sets them.")]
            return [Reply.plain("Check-ins are off. /checkin turns them on again whenever you like.")]
        try:
            at, days = parse_checkin(args)
        except ScheduleError as exc:
            return [Reply.plain(f"Sorry, {exc}.")]
        async with self.db.session() as session:
            user = await self._user(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if user.timezone is None:
                self._await(prefs, "timezone", CUSTOM_BASE + (at.hour * 60 + at.minute) * 128 + days)
                return [Reply.plain(ASK_ZONE)]
            return [await self._apply(session, user, prefs, at, days)]

    async def timezone(self, who: Who, args: str) -> list[Reply]:
        """/timezone [Area/City | city]."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if not args.strip():
                self._await(prefs, "timezone", None)
                now = self.clock()
                known = (f"Your time zone is {user.timezone} (it's {local_label(now, user.timezone)} there). "
                         if user.timezone else "")
                return [Reply.plain(known + ASK_ZONE)]
            zone = resolve(args)
            if zone is None:
                return [Reply.plain(self._unknown_zone(args))]
            return await self._set_zone(session, user, prefs, zone)

    async def location(self, who: Who, latitude: float, longitude: float) -> list[Reply] | None:
        """A shared location: sets the zone while Rein is asking for one; None otherwise."""
        async with self.db.session() as session:
            found = await store.awaiting_prefs(session=session, telegram_id=who.telegram_id)
            if found is None or not self._awaiting(found[1], "timezone"):
                return None
            user, prefs = found
            zone = from_location(latitude, longitude)
            if zone is None:
                return [Reply.plain("I couldn't tell the time zone of that place. Send your city instead.")]
            return await self._set_zone(session, user, prefs, zone)

    async def intercept(self, who: Who, text: str) -> list[Reply] | None:
        """A text that answers what Rein asked (zone, custom time, a note); None lets the coach have it."""
        async with self.db.session() as session:
            found = await store.awaiting_prefs(session=session, telegram_id=who.telegram_id)
            if found is None:
                return None
            user, prefs = found
            awaiting = prefs.awaiting
            assert awaiting is not None
            if not self._awaiting(prefs, awaiting):
                prefs.awaiting = None
                session.add(prefs)
                return None
            chatty = len(text.split()) > 5
            if awaiting == "note":
                if text.rstrip().endswith("?"):  # a question for the coach, not a note
                    prefs.awaiting = None
                    session.add(prefs)
                    return None
                entry = await store.get_progress(session=session, entry_id=prefs.awaiting_ref or 0,
                                                 user_id=user.id or 0)
                prefs.awaiting = None
                session.add(prefs)
                if entry is None:
                    return None
                entry.note = text[:1000]
                session.add(entry)
                return [Reply.plain("Noted. ✍️ /progress shows how your weeks are going.")]
            if awaiting == "timezone":
                zone = resolve(text)
                if zone is None:
                    if chatty:
                        prefs.awaiting = None
                        session.add(prefs)
                        return None
                    return [Reply.plain(self._unknown_zone(text))]
                return await self._set_zone(session, user, prefs, zone)
            try:
                at, days = parse_checkin(text)
            except ScheduleError as exc:
                if chatty:
                    prefs.awaiting = None
                    session.add(prefs)
                    return None
                return [Reply.plain(f"Sorry, {exc}.")]
            prefs.awaiting = None
            if user.timezone is None:
                self._await(prefs, "timezone", CUSTOM_BASE + (at.hour * 60 + at.minute) * 128 + days)
                return [Reply.plain(ASK_ZONE)]
            return [await self._apply(session, user, prefs, at, days)]

    async def pause(self, who: Who, args: str) -> list[Reply]:
        """/pause [days]: no check-ins until /resume, or for that many days."""
        args = args.strip()
        if args and (not args.isdigit() or not 1 <= int(args) <= 365):
            return [Reply.plain("Use /pause for a pause until /resume, or /pause 3 for three days (1–365).")]
        now = self.clock()
        async with self.db.session() as session:
            user = await self._user(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if args:
                prefs.paused, prefs.pause_reason = False, None
                prefs.paused_until = now + timedelta(days=int(args))
                await self._reschedule(session, user, prefs, now)
                until = local_label(prefs.paused_until, user.timezone or "UTC")
                text = f"Check-ins paused for {args} day{'s' if args != '1' else ''}, until {until}. /resume ends it."
            else:
                prefs.paused, prefs.pause_reason, prefs.paused_until = True, "user", None
                await self._reschedule(session, user, prefs, now)
                text = "Check-ins paused. /resume turns them back on."
            session.add(prefs)
        return [Reply.plain(text)]

    async def resume(self, who: Who) -> list[Reply]:
        """/resume: check-ins on again from now."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            was_paused = prefs.paused or prefs.paused_until is not None
            prefs.paused, prefs.pause_reason, prefs.paused_until = False, None, None
            session.add(prefs)
            rows = await self._reschedule(session, user, prefs, self.clock())
        checkin = next((r for r in rows if r.kind == "checkin"), None)
        if checkin is None or checkin.next_due_at is None:
            return [Reply.plain("You have no check-ins set. /checkin sets them.")]
        lead = "Check-ins are back on." if was_paused else "Check-ins weren't paused."
        return [Reply.plain(f"{lead} Next: {local_label(checkin.next_due_at, user.timezone or 'UTC')}.")]

    async def resume_after_block(self, who: Who) -> list[Reply]:
        """/start after the user had blocked the bot: their check-ins start again."""
        async with self.db.session() as session:
            user = await repo.get_user(session=session, telegram_id=who.telegram_id)
            if user is None:
                return []
            prefs = await store.find_prefs(session=session, user_id=user.id or 0)
            if prefs is None or not prefs.paused or prefs.pause_reason != "blocked":
                return []
            prefs.paused, prefs.pause_reason = False, None
            session.add(prefs)
            rows = await self._reschedule(session, user, prefs, self.clock())
        if not any(r.kind == "checkin" and r.next_due_at for r in rows):
            return []
        return [Reply.plain("Good to have you back. Your check-ins are on again (/pause stops them).")]

    async def quiet(self, who: Who, args: str) -> list[Reply]:
        """/quiet [HH:MM-HH:MM | off]: the local hours in which Rein sends nothing unasked."""
        args = args.strip().lower()
        async with self.db.session() as session:
            user = await self._user(session, who)
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            if not args:
                start, end = self._quiet(prefs)
                state = "off" if start == end else f"{format_time(start)}–{format_time(end)}"
                return [Reply.plain(f"Quiet hours: {state} (your local time). Change them with /quiet 22:00-07:00, "
                                    "or /quiet off. A check-in you schedule inside them still comes.")]
            if args == "off":
                start = end = time(0, 0)
            else:
                try:
                    start, end = parse_range(args)
                except ScheduleError as exc:
                    return [Reply.plain(f"Sorry, {exc}.")]
            prefs.quiet_start, prefs.quiet_end = format_time(start), format_time(end)
            prefs.updated_at = utcnow()
            session.add(prefs)
            await self._reschedule(session, user, prefs, self.clock())
        if start == end:
            return [Reply.plain("Quiet hours are off.")]
        return [Reply.plain(f"Quiet hours set: {format_time(start)}–{format_time(end)} your time.")]

    # ----- answers to a check-in ------------------------------------------------------------------

    async def answer(self, who: Who, turn_id: int, status: str) -> list[Reply]:
        """Done · Partly · Missed on a check-in: recorded, then a brief answer from the coach."""
        now = self.clock()
        async with self.db.session() as session:
            user, turn = await self._checkin_turn(session, who, turn_id)
            if turn is None:
                return [Reply.plain(EXPIRED)]
            zone = user.timezone or "UTC"
            earlier = await store.progress_for_turn(session=session, user_id=user.id or 0, turn_id=turn_id)
            if earlier is not None:  # a second tap (or a forged one) changes the entry, without another LLM call
                changed = earlier.status != status
                earlier.status = status
                session.add(earlier)
                return [Reply.plain(f"Changed to {STATUS_LABELS[status]}." if changed else "Already recorded.")]
            entry = await store.put_progress(session=session, user_id=user.id or 0, goal_id=turn.goal_id,
                                             turn_id=turn_id, status=status,
                                             local_date=now.astimezone(ZoneInfo(zone)).date())
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            self._await(prefs, "note", entry.id, window=NOTE_WINDOW)
            last = await store.recent_progress(session=session, user_id=user.id or 0, limit=3)
            streak = await self._streak(session, user.id or 0)
            context = await self._context(session, user)
            await repo.add_turn(session=session, user=user, role="user", kind="checkin",
                                text=f"Check-in answer: {status}", answered=True)
            plan = await repo.current_plan(session=session, goal_id=user.active_goal_id or 0)
            thread_id, opaque = user.thread_id, user.opaque_id
        request = f"My check-in answer: {status}. Streak: {streak} check-ins in a row."
        text, trace_id = await self._write("checkin_reply", thread_id, opaque, prompts.CHECKIN_REPLY, context,
                                           request, FALLBACK_REPLY[status])
        async with self.db.session() as session:
            user = await self._user(session, who)
            coach_turn = await repo.add_turn(session=session, user=user, role="coach", kind="coaching", text=text,
                                             trace_id=trace_id)
        streak_line = f"Streak: {streak} 🔥" if streak else ""
        paras = [Para(text), Para(f"{STATUS_LABELS[status]} recorded. {streak_line}".strip()),
                 Para("Want to add a note? Just write it in your next message.")]
        replies = [Reply(paras=paras, kind="coaching", turn_id=coach_turn.id)]
        if status == "missed" and len(last) == 3 and all(e.status == "missed" for e in last):
            buttons = [[Button("✏️ Adjust my plan", "checkin_adjust", plan.id or 0)]] if plan else []
            replies.append(Reply(paras=[Para("That's three misses in a row. No blame: it usually means the plan "
                                             "asks too much right now. Shall we adjust it to fit your weeks?")],
                                 buttons=buttons))
        return replies

    async def _checkin_turn(self, session: Any, who: Who, turn_id: int) -> tuple[User, Turn | None]:
        """The user, and the check-in message a button refers to (None unless it is this user's check-in)."""
        user = await self._user(session, who)
        turn = await repo.get_turn(session=session, turn_id=turn_id, user_id=user.id or 0)
        if turn is None or turn.role != "coach" or turn.kind != "checkin":
            return user, None
        return user, turn

    async def snooze(self, who: Who, turn_id: int) -> list[Reply]:
        """Snooze 1 h on a check-in: the same question again in an hour (after quiet hours, if they fall there)."""
        now = self.clock()
        async with self.db.session() as session:
            user, turn = await self._checkin_turn(session, who, turn_id)
            if turn is None:
                return [Reply.plain(EXPIRED)]
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            zone = user.timezone or "UTC"
            due = now + SNOOZE
            start, end = self._quiet(prefs)
            if in_quiet(due.astimezone(ZoneInfo(zone)).time(), start, end):
                due = quiet_end(due, zone, end)
            await store.put_schedule(session=session, user_id=user.id or 0, kind="snooze",
                                     local_time=due.astimezone(ZoneInfo(zone)).strftime("%H:%M"), days=0,
                                     next_due_at=due)
        self._changed(due)
        return [Reply.plain(f"Okay, I'll check in again at {local_label(due, zone)}.")]

    async def adjust(self, who: Who, plan_id: int) -> list[Reply]:
        """"Adjust my plan" after three misses: the next text changes the plan (a new draft to accept)."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            plan = await repo.get_plan(session=session, plan_id=plan_id, user_id=user.id or 0)
            if plan is None or plan.goal_id != user.active_goal_id or plan.status == "superseded":
                return [Reply.plain("This plan is no longer current. Send /plan to see the one in force.")]
            user.stage = Stage.ADJUSTING
            session.add(user)
        return [Reply.plain("What should change so the plan fits your weeks? E.g. \"only two sessions a week\" or "
                            "\"shorter sessions on weekdays\".")]

    async def progress(self, who: Who, weeks: int = 8) -> tuple[list[Reply], bytes]:
        """/progress: streak, completion per week, milestones, and a PNG chart of the last weeks."""
        async with self.db.session() as session:
            user = await self._user(session, who)
            data = await self._progress(session, user, weeks)
        lines = [f"Streak: {data.streak} check-in{'s' if data.streak != 1 else ''} in a row"
                 + (" 🔥" if data.streak >= 3 else "")]
        _, done, partly, missed, sent = data.weeks[-1]
        lines.append(f"This week: {done} done · {partly} partly · {missed} missed"
                     + (f" (of {sent} check-ins)" if sent else ""))
        rates = data.rates()
        lines.append("Last weeks: " + " · ".join("–" if r is None else f"{round(r * 100)}%" for r in rates))
        if data.milestones:
            line = f"Milestones: {data.reached} of {data.milestones} reached"
            if data.next_milestone is not None:
                line += (f". Next: {data.next_milestone.title} by "
                         f"{data.next_milestone.target_date.isoformat()}")
            lines.append(line)
        if not any(r is not None for r in rates):
            lines.append("No check-ins answered yet. /checkin sets when I ask.")
        buttons = []
        if data.next_milestone is not None and data.next_milestone.id is not None:
            label = f"🏁 Reached: {data.next_milestone.title}"
            buttons = [[Button(label[:60], "milestone", data.next_milestone.id)]]
        reply = Reply(paras=[Para("📈 Your progress\n" + "\n".join(lines), heading=True)], buttons=buttons)
        return [reply], weekly_chart(rates)

    # ----- the scheduler's side -----------------------------------------------------------------

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
                item = await self._claim_one(session, row, user, prefs, now, stats)
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
            row.next_due_at = self._next(row, prefs.paused_until, zone, prefs)
            return None
        if row.days == 0:
            due_at, following = row.next_due_at, None
        else:
            due_at = latest_occurrence(row.next_due_at, now, _at(row.local_time), row.days, zone)
            following = next_occurrence(due_at, _at(row.local_time), row.days, zone)
        late = now - due_at
        if late > self.grace:
            logger.info("checkin.skipped_late kind=%s user=%s late_s=%.0f", row.kind, user.opaque_id,
                        late.total_seconds())
            stats.skipped += 1
            row.next_due_at = following
            return None
        start, end = self._quiet(prefs)
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
        return Claimed(send_id=send_id, schedule_id=row.id or 0, kind=row.kind, due_at=due_at,
                       user_id=user.id or 0, telegram_id=user.telegram_id, chat_id=user.chat_id, zone=zone)

    async def draft(self, item: Claimed) -> Draft:
        """The check-in (or weekly review) written by the coach from the plan, traced in the user's thread."""
        local = self.clock().astimezone(ZoneInfo(item.zone))
        async with self.db.session() as session:
            user = await session.get(User, item.user_id)
            assert user is not None
            streak = await self._streak(session, item.user_id)
            context = await self._context(session, user)
            thread_id, opaque = user.thread_id, user.opaque_id
            week = await store.progress_since(session=session, user_id=item.user_id,
                                              since=local.date() - timedelta(days=6)) if item.kind == "review" else []
        today = f"Today is {local.strftime('%A %Y-%m-%d')}, {local.strftime('%H:%M')} local time."
        if item.kind == "review":
            results = ", ".join(f"{e.local_date.strftime('%a')}: {e.status}" + (f" ({e.note})" if e.note else "")
                                for e in week) or "no check-ins answered"
            request = f"{today}\nThis week's check-ins: {results}. Streak: {streak}."
            text, trace_id = await self._write("review", thread_id, opaque, prompts.REVIEW, context, request,
                                               FALLBACK_REVIEW)
            return Draft(item, "review", text, trace_id)
        request = f"{today}\nStreak: {streak} check-ins in a row. Write today's check-in."
        text, trace_id = await self._write("checkin", thread_id, opaque, prompts.CHECKIN, context, request,
                                           FALLBACK_CHECKIN)
        return Draft(item, "checkin", text, trace_id)

    async def record(self, drafts: list[Draft]) -> list[Reply]:
        """Store the drafts as coach turns (one transaction) and make them messages with their buttons."""
        turns = []
        async with self.db.session() as session:
            for draft in drafts:
                user = await session.get(User, draft.item.user_id)
                assert user is not None
                turns.append(await repo.add_turn(session=session, user=user, role="coach", kind=draft.kind,
                                                 text=draft.text, trace_id=draft.trace_id))
        replies = []
        for draft, turn in zip(drafts, turns, strict=True):
            ref = turn.id or 0
            buttons = []
            if draft.kind == "checkin":
                buttons = [[Button("✅ Done", "checkin_done", ref), Button("🟡 Partly", "checkin_partly", ref),
                            Button("❌ Missed", "checkin_missed", ref)],
                           [Button("⏰ Snooze 1 h", "checkin_snooze", ref)]]
            replies.append(Reply(paras=[Para(draft.text)], kind=draft.kind, turn_id=turn.id, buttons=buttons))
        return replies

    async def finish(self, results: list[tuple[int, str, int | None]]) -> None:
        """Record how claimed sends ended: (send id, status, turn id), one transaction."""
        if not results:
            return
        async with self.db.session() as session:
            for send_id, status, turn_id in results:
                await store.finish_send(session=session, send_id=send_id, status=status, turn_id=turn_id)

    async def blocked(self, user_id: int) -> None:
        """The user blocked the bot: their check-ins pause until they /start again (no retries)."""
        async with self.db.session() as session:
            user = await session.get(User, user_id)
            if user is None:
                return
            prefs = await store.get_prefs(session=session, user_id=user_id)
            prefs.paused, prefs.pause_reason = True, "blocked"
            session.add(prefs)
            await self._reschedule(session, user, prefs, self.clock())
        logger.info("checkin.paused_blocked user=%s", user.opaque_id)

    # ----- helpers ----------------------------------------------------------------------------

    async def _user(self, session: Any, who: Who) -> User:
        return await repo.get_or_create_user(session=session, telegram_id=who.telegram_id, chat_id=who.chat_id,
                                             language_code=who.language_code)

    def _await(self, prefs: CheckinPrefs, what: str, ref: int | None, window: timedelta = AWAIT_WINDOW) -> None:
        prefs.awaiting, prefs.awaiting_ref, prefs.awaiting_until = what, ref, self.clock() + window

    def _awaiting(self, prefs: CheckinPrefs, what: str) -> bool:
        return prefs.awaiting == what and (prefs.awaiting_until is None or prefs.awaiting_until > self.clock())

    def _quiet(self, prefs: CheckinPrefs | None) -> tuple[time, time]:
        if prefs is None:
            return self.default_quiet
        return _at(prefs.quiet_start), _at(prefs.quiet_end)

    def _review_at(self, prefs: CheckinPrefs | None) -> time:
        """The review's local time: the configured evening time, or the hour before quiet hours begin."""
        start, end = self._quiet(prefs)
        if not in_quiet(self.review_time, start, end):
            return self.review_time
        moved = (datetime.combine(date(2000, 1, 2), start) - timedelta(hours=1)).time()
        return moved if not in_quiet(moved, start, end) else end

    def _next(self, row: CheckinSchedule, after: datetime, zone: str, prefs: CheckinPrefs | None) -> datetime | None:
        if row.days == 0:
            return max(row.next_due_at or after, after)
        return next_occurrence(after, _at(row.local_time), row.days, zone)

    def _changed(self, when: datetime | None) -> None:
        if self.on_change is not None and when is not None:
            self.on_change(when)

    async def _apply(self, session: Any, user: User, prefs: CheckinPrefs, at: time, days: int) -> Reply:
        """Set the user's check-in time (and the Sunday review) and say when the first one comes."""
        assert user.timezone is not None
        prefs.awaiting = None
        session.add(prefs)
        await store.put_schedule(session=session, user_id=user.id or 0, kind="checkin", local_time=format_time(at),
                                 days=days, next_due_at=None)
        await store.put_schedule(session=session, user_id=user.id or 0, kind="review",
                                 local_time=format_time(self._review_at(prefs)), days=SUNDAY, next_due_at=None)
        rows = await self._reschedule(session, user, prefs, self.clock())
        first = next(r.next_due_at for r in rows if r.kind == "checkin")
        text = f"Done: I'll check in {describe(at, days)} ({user.timezone})."
        if first is not None:
            text += f" The first one: {local_label(first, user.timezone)}."
        else:
            text += " They're paused for now: /resume turns them on."
        start, end = self._quiet(prefs)
        if in_quiet(at, start, end):
            text += (f" That's inside your quiet hours ({format_time(start)}–{format_time(end)}), but you chose it, "
                     "so it still comes.")
        text += " On Sunday evenings I'll also send a short weekly review. /pause or /checkin off stop them."
        return Reply.plain(text)

    async def _reschedule(self, session: Any, user: User, prefs: CheckinPrefs, now: datetime) -> list[CheckinSchedule]:
        """Recompute every schedule of the user from `now` (zone, pause or quiet hours changed)."""
        rows = await store.schedules(session=session, user_id=user.id or 0)
        zone = user.timezone or "UTC"
        start = max(now, prefs.paused_until) if prefs.paused_until else now
        earliest: datetime | None = None
        for row in rows:
            if row.kind == "review":
                row.local_time = format_time(self._review_at(prefs))
            if prefs.paused:
                row.next_due_at = None
            elif row.days == 0:
                row.next_due_at = max(row.next_due_at, start) if row.next_due_at else None
            else:
                row.next_due_at = next_occurrence(start, _at(row.local_time), row.days, zone)
            row.updated_at = utcnow()
            session.add(row)
            if row.next_due_at is not None and (earliest is None or row.next_due_at < earliest):
                earliest = row.next_due_at
        await session.flush()
        self._changed(earliest)
        return rows

    async def _set_zone(self, session: Any, user: User, prefs: CheckinPrefs, zone: str) -> list[Reply]:
        pending = prefs.awaiting_ref if prefs.awaiting == "timezone" else None
        prefs.awaiting = None
        user.timezone = zone
        session.add_all([user, prefs])
        await self._reschedule(session, user, prefs, self.clock())
        local = self.clock().astimezone(ZoneInfo(zone))
        replies = [Reply.plain(f"Time zone set: {zone}. It's {local.strftime('%H:%M')} on {local.strftime('%A')} "
                               "there now, if I got that right. (/timezone changes it.)")]
        if pending is not None and pending in PRESETS:
            replies.append(await self._apply(session, user, prefs, PRESETS[pending].at, PRESETS[pending].days))
        elif pending is not None and pending >= CUSTOM_BASE:
            code = pending - CUSTOM_BASE
            minutes, days = divmod(code, 128)
            replies.append(await self._apply(session, user, prefs, time(*divmod(minutes, 60)), days or EVERY_DAY))
        return replies

    @staticmethod
    def _unknown_zone(text: str) -> str:
        return (f"I don't know the time zone of “{text.strip()[:40]}”. Try a bigger city nearby, a zone name like "
                "America/New_York, or share your location.")

    async def _streak(self, session: Any, user_id: int) -> int:
        streak = 0
        for entry in await store.recent_progress(session=session, user_id=user_id, limit=366):
            if entry.status == "missed":
                break
            streak += 1
        return streak

    async def _context(self, session: Any, user: User) -> str:
        if user.active_goal_id is None:
            return "The user has no plan yet."
        goal = await repo.get_goal(session=session, goal_id=user.active_goal_id, user_id=user.id or 0)
        if goal is None:
            return "The user has no plan yet."
        plan = await repo.current_plan(session=session, goal_id=goal.id or 0)
        stones = await repo.milestones(session=session, plan_id=plan.id or 0) if plan else []
        resolution = await repo.latest_resolution(session=session, goal_id=goal.id or 0)
        context = coaching_context(goal, resolution, plan, stones, user.summary)
        today = self.clock().astimezone(ZoneInfo(user.timezone or "UTC")).date()
        week = this_weeks_actions(plan, today)
        upcoming = next((s for s in stones if s.reached_at is None and s.target_date >= today), None)
        if week:
            context += "\n\nThis week's actions: " + "; ".join(week)
        if upcoming is not None:
            context += (f"\nNext milestone: {upcoming.title} by {upcoming.target_date.isoformat()} "
                        f"({upcoming.criterion})")
        return context

    async def _write(self, kind: str, thread_id: str, opaque: str, prompt: prompts.Prompt, context: str,
                     request: str, fallback: str) -> tuple[str, str | None]:
        """One LLM text in its own trace in the user's thread; the fallback text if the LLM fails."""
        metadata = {"model": self.llm.model, "user": opaque, "prompt": prompt.version}
        with self.tracer.turn(f"coach.{kind}", thread_id=thread_id, input={"request": request},
                              metadata=metadata, tags=[kind]) as trace:
            try:
                text = await self.llm.text(system=prompt.text + "\n\n" + context, contents=[user_content(request)])
            except LLMError as exc:
                logger.warning("checkin.llm_failed kind=%s error=%s user=%s", kind, exc.kind, opaque)
                text = fallback
                trace.add_metadata({**metadata, "fallback": exc.kind})
            trace.set_output({"reply": text})
        return text, trace.id

    async def _progress(self, session: Any, user: User, weeks: int) -> Progress:
        zone = ZoneInfo(user.timezone or "UTC")
        today = self.clock().astimezone(zone).date()
        first_monday = today - timedelta(days=today.weekday(), weeks=weeks - 1)
        entries = await store.progress_since(session=session, user_id=user.id or 0, since=first_monday)
        since = datetime.combine(first_monday, time(0), tzinfo=zone).astimezone(UTC)
        sends = [s for s in await store.sends_since(session=session, user_id=user.id or 0, since=since)
                 if s.status == "sent" and s.kind in ("checkin", "snooze")]
        table: list[tuple[date, int, int, int, int]] = []
        for index in range(weeks):
            monday = first_monday + timedelta(weeks=index)
            sunday = monday + timedelta(days=6)
            inside = [e for e in entries if monday <= e.local_date <= sunday]
            sent = sum(1 for s in sends if monday <= s.due_at.astimezone(zone).date() <= sunday)
            table.append((monday, *_count(inside), sent))
        stones: list[Milestone] = []
        plan: Plan | None = None
        if user.active_goal_id is not None:
            plan = await repo.current_plan(session=session, goal_id=user.active_goal_id)
            stones = await repo.milestones(session=session, plan_id=plan.id or 0) if plan else []
        upcoming = next((s for s in stones if s.reached_at is None), None)
        return Progress(streak=await self._streak(session, user.id or 0), weeks=table,
                        reached=sum(1 for s in stones if s.reached_at), milestones=len(stones),
                        next_milestone=upcoming)


def _count(entries: list[ProgressEntry]) -> tuple[int, int, int]:
    return (sum(e.status == "done" for e in entries), sum(e.status == "partly" for e in entries),
            sum(e.status == "missed" for e in entries))


def this_weeks_actions(plan: Plan | None, today: date) -> list[str]:
    """The weekly actions of the plan phase that contains today (else the first phase)."""
    if plan is None or not plan.phases:
        return []
    for phase in plan.phases:
        try:
            start = date.fromisoformat(str(phase.get("start_date")))
            end = date.fromisoformat(str(phase.get("end_date")))
        except ValueError:
            continue
        if start <= today <= end:
            return [str(a) for a in phase.get("weekly_actions", [])]
    return [str(a) for a in plan.phases[0].get("weekly_actions", [])]


class CheckinScheduler:
    """Sends due check-ins. `start()`/`shutdown()` are independent of the bot, so one replica can own it.

    One APScheduler (3.x) date job is armed for the earliest due instant in the table, re-armed after every
    pass and whenever a schedule moves earlier in this process, and at least every `poll_s`.
    """

    JOB_ID = "rein-checkin-wake"

    def __init__(self, *, checkins: Checkins, send: Sender, poll_s: float = 60.0, batch: int = 200,
                 concurrency: int = 32) -> None:
        self.checkins = checkins
        self.send = send
        self.poll = timedelta(seconds=poll_s)
        self.batch = batch
        self.concurrency = concurrency
        self._scheduler: Any = None
        self._lock = asyncio.Lock()
        self._armed: datetime | None = None

    @property
    def running(self) -> bool:
        """Whether the scheduler is started."""
        return self._scheduler is not None

    async def start(self) -> None:
        """Start the timer and arm it (what fell due while the bot was down is handled at once)."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._scheduler.start()
        self.checkins.on_change = self.poke
        await self._rearm()
        logger.info("checkin.scheduler_started armed=%s", self._armed)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the timer and wait (bounded) for a pass in progress."""
        if self._scheduler is None:
            return
        self.checkins.on_change = None
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
        cap = self.checkins.clock() + self.poll
        when = cap if when is None else min(when, cap)
        self._scheduler.add_job(self._wake, trigger=DateTrigger(run_date=when, timezone=UTC), id=self.JOB_ID,
                                replace_existing=True)
        self._armed = when

    async def _rearm(self) -> None:
        self._arm(await self.checkins.earliest_due())

    async def _wake(self) -> None:
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
        """Claim and deliver everything due at `now` (default: the clock); one pass at a time.

        Batches overlap: while one batch is being sent (at the rate limiter's pace), the next one is claimed,
        written by the coach and stored. The first batches are small, so the first check-ins leave at once.
        """
        total = RunStats()
        async with self._lock:
            now = now or self.checkins.clock()
            gate = asyncio.Semaphore(self.concurrency)
            sending: asyncio.Task[list[str]] | None = None
            # Small batches first, doubling: sending starts after a few drafts, and each batch is written while
            # the one before it (half its size) is being sent.
            size = min(self.batch, self.concurrency)
            try:
                while True:
                    items, stats = await self.checkins.claim_due(now, size)
                    size = min(self.batch, size * 2)
                    total.add(stats)
                    if stats.seen == 0:
                        break
                    if not items:
                        continue
                    drafts = await asyncio.gather(*(self._draft(item, gate) for item in items))
                    replies = await self.checkins.record(list(drafts))
                    if sending is not None:
                        self._count(total, await sending)
                    sending = asyncio.create_task(self._send_batch(items, replies, gate))
                if sending is not None:
                    self._count(total, await sending)
                    sending = None
            finally:
                if sending is not None and not sending.done():
                    sending.cancel()
        if total.seen:
            logger.info("checkin.pass %s", " ".join(f"{f.name}={getattr(total, f.name)}" for f in fields(total)))
        return total

    @staticmethod
    def _count(total: RunStats, statuses: list[str]) -> None:
        for status in statuses:
            if status == "sent":
                total.sent += 1
            elif status == "blocked":
                total.blocked += 1
            else:
                total.failed += 1

    async def _draft(self, item: Claimed, gate: asyncio.Semaphore) -> Draft:
        async with gate:
            return await self.checkins.draft(item)

    async def _send_batch(self, items: list[Claimed], replies: list[Reply], gate: asyncio.Semaphore) -> list[str]:
        statuses = await asyncio.gather(*(self._deliver(item, reply, gate) for item, reply in zip(items, replies,
                                                                                                   strict=True)))
        await self.checkins.finish([(item.send_id, status, reply.turn_id)
                                    for item, reply, status in zip(items, replies, statuses, strict=True)])
        return list(statuses)

    async def _deliver(self, item: Claimed, reply: Reply, gate: asyncio.Semaphore) -> str:
        async with gate:
            try:
                await self.send(item.chat_id, item.telegram_id, [reply])
                return "sent"
            except RecipientBlocked:
                await self.checkins.blocked(item.user_id)
                return "blocked"
            except DeliveryUncertain:
                logger.warning("checkin.delivery_uncertain send=%s", item.send_id)
                return "uncertain"
            except Exception:
                logger.exception("checkin.send_failed send=%s", item.send_id)
                return "failed"
