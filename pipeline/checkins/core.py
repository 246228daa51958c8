"""What every part of check-ins shares: the database, the clock, quiet hours, rescheduling, and the coach's
check-in texts (written through the one LLM-step path, with a fixed fallback when the model fails)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipeline import i18n, prompts, views
from pipeline.coaching import context_contents
from pipeline.guard import OutputGuard
from pipeline.i18n import _
from pipeline.llm import LLMError, user_content
from pipeline.replies import Reply
from pipeline.schedule import SUNDAY, describe, format_time, in_quiet, next_occurrence, parse_range, parse_time
from pipeline.steps import Owner, Steps
from pipeline.streaming import DraftSink
from pipeline.timezones import local_today
from storage import checkins as store
from storage import goals
from storage.db import Database
from storage.models import CheckinPrefs, CheckinSchedule, User, utcnow

logger = logging.getLogger(__name__)

AWAIT_WINDOW = timedelta(minutes=30)


def local_label(instant: datetime, zone: str) -> str:
    """"Sun 29 Nov, 08:00" in the zone, as the user's language writes it."""
    return i18n.format_datetime(instant.astimezone(ZoneInfo(zone)))


def this_weeks_actions(plan: Any, today: date) -> list[str]:
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


class CheckinCore:
    """Shared by the preferences, the answers, the progress report and the dispatch of check-ins."""

    def __init__(self, *, db: Database, steps: Steps, grace_s: float = 7200.0, quiet_hours: str = "22:00-07:00",
                 review_time: str = "19:00", allowed: frozenset[int] = frozenset(),
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.steps = steps
        self.grace = timedelta(seconds=grace_s)
        self.default_quiet = parse_range(quiet_hours)
        self.review_time = parse_time(review_time)
        self.allowed = allowed  # ALLOWED_USER_IDS: nobody else gets a check-in
        self.clock = clock
        self.guard = OutputGuard()
        self.on_change: Callable[[datetime], None] | None = None  # the scheduler's wake-up

    # ----- what Rein waits for from the user ---------------------------------------------------------

    def expect(self, prefs: CheckinPrefs, what: str, ref: int | None, window: timedelta = AWAIT_WINDOW) -> None:
        """The user's next text answers `what` (a zone, a custom time, a note) for a while."""
        prefs.awaiting, prefs.awaiting_ref, prefs.awaiting_until = what, ref, self.clock() + window

    def expects(self, prefs: CheckinPrefs, what: str) -> bool:
        """Whether Rein still waits for `what` from the user."""
        return prefs.awaiting == what and (prefs.awaiting_until is None or prefs.awaiting_until > self.clock())

    # ----- times ---------------------------------------------------------------------------------------

    def quiet(self, prefs: CheckinPrefs | None) -> tuple[time, time]:
        """The user's quiet hours (start, end), local."""
        if prefs is None:
            return self.default_quiet
        return parse_time(prefs.quiet_start), parse_time(prefs.quiet_end)

    def review_at(self, prefs: CheckinPrefs | None) -> time:
        """The review's local time: the configured evening time, or the hour before quiet hours begin."""
        start, end = self.quiet(prefs)
        if not in_quiet(self.review_time, start, end):
            return self.review_time
        moved = (datetime.combine(date(2000, 1, 2), start) - timedelta(hours=1)).time()
        return moved if not in_quiet(moved, start, end) else end

    @staticmethod
    def next_after(row: CheckinSchedule, after: datetime, zone: str) -> datetime | None:
        """The schedule's next occurrence after `after` (a one-off keeps its time, at the earliest `after`)."""
        if row.days == 0:
            return max(row.next_due_at or after, after)
        return next_occurrence(after, parse_time(row.local_time), row.days, zone)

    def changed(self, when: datetime | None) -> None:
        """A schedule now falls due at `when`: the scheduler may need to wake earlier."""
        if self.on_change is not None and when is not None:
            self.on_change(when)

    async def reschedule(self, session: Any, user: User, prefs: CheckinPrefs, now: datetime) -> list[CheckinSchedule]:
        """Recompute every schedule of the user from `now` (zone, pause or quiet hours changed)."""
        rows = await store.schedules(session=session, user_id=user.id or 0)
        zone = user.timezone or "UTC"
        start = max(now, prefs.paused_until) if prefs.paused_until else now
        earliest: datetime | None = None
        for row in rows:
            if row.kind == "review":
                row.local_time = format_time(self.review_at(prefs))
            if prefs.paused:
                row.next_due_at = None
            elif row.days == 0:
                row.next_due_at = max(row.next_due_at, start) if row.next_due_at else None
            else:
                row.next_due_at = next_occurrence(start, parse_time(row.local_time), row.days, zone)
            row.updated_at = utcnow()
            session.add(row)
            if row.next_due_at is not None and (earliest is None or row.next_due_at < earliest):
                earliest = row.next_due_at
        await session.flush()
        self.changed(earliest)
        return rows

    async def apply(self, session: Any, user: User, prefs: CheckinPrefs, at: time, days: int) -> Reply:
        """Set the user's check-in time (and the Sunday review) and say when the first one comes."""
        assert user.timezone is not None
        prefs.awaiting = None
        session.add(prefs)
        await store.put_schedule(session=session, user_id=user.id or 0, kind="checkin", local_time=format_time(at),
                                 days=days, next_due_at=None)
        await store.put_schedule(session=session, user_id=user.id or 0, kind="review",
                                 local_time=format_time(self.review_at(prefs)), days=SUNDAY, next_due_at=None)
        rows = await self.reschedule(session, user, prefs, self.clock())
        first = next(r.next_due_at for r in rows if r.kind == "checkin")
        parts = [_("Done: I'll check in {when} ({zone}).", when=describe(at, days), zone=user.timezone)]
        if first is not None:
            parts.append(_("The first one: {when}.", when=local_label(first, user.timezone)))
        else:
            parts.append(_("They're paused for now: /resume turns them on."))
        start, end = self.quiet(prefs)
        if in_quiet(at, start, end):
            parts.append(_("That's inside your quiet hours ({start}–{end}), but you chose it, so it still comes.",
                           start=i18n.format_time(start), end=i18n.format_time(end)))
        parts.append(_("On Sunday evenings I'll also send a short weekly review. /pause or /checkin off stop them."))
        return Reply.plain(" ".join(parts))

    # ----- the coach's material and texts ------------------------------------------------------------

    async def streak(self, session: Any, user_id: int) -> int:
        """Check-ins answered in a row without a miss (newest first)."""
        streak = 0
        for entry in await store.recent_progress(session=session, user_id=user_id, limit=366):
            if entry.status == "missed":
                break
            streak += 1
        return streak

    async def context(self, session: Any, user: User) -> str:
        """The goal, plan, summary, this week's actions and the next milestone, for a check-in prompt."""
        if user.active_goal_id is None:
            return "The user has no plan yet."
        goal = await goals.get_goal(session=session, goal_id=user.active_goal_id, user_id=user.id or 0)
        if goal is None:
            return "The user has no plan yet."
        plan = await goals.current_plan(session=session, goal_id=goal.id or 0)
        milestones = await goals.milestones(session=session, plan_id=plan.id or 0) if plan else []
        resolution = await goals.latest_resolution(session=session, goal_id=goal.id or 0)
        today = local_today(user.timezone, self.clock())
        context = views.coaching_context(goal, resolution, plan, milestones, user.summary, today=today)
        week = this_weeks_actions(plan, today)
        upcoming = next((m for m in milestones if m.reached_at is None and m.target_date >= today), None)
        if week:
            context += "\n\nThis week's actions: " + "; ".join(week)
        if upcoming is not None:
            context += (f"\nNext milestone: {upcoming.title} by {upcoming.target_date.isoformat()} "
                        f"({upcoming.criterion})")
        return context

    async def write(self, kind: str, owner: Owner, prompt: prompts.Prompt, context: str, request: str,
                    fallback: str, drafts: DraftSink | None = None) -> tuple[str, str | None]:
        """One text of the coach in its own trace in the user's thread (through the output guard; with `drafts`,
        shown there while it is written); the fallback text if the LLM fails."""
        try:
            async with self.steps.run(f"coach.{kind}", purpose=kind, owner=owner, input={"request": request},
                                      metadata={"prompt": prompt.version}, tags=[kind]) as step:
                try:
                    text = self.guard.check(await step.text(
                        system=prompts.writing(prompt.text),
                        contents=[*context_contents(context), user_content(request)],
                        drafts=drafts, guard=self.guard), user=owner.opaque_id)
                except LLMError as exc:
                    logger.warning("checkin.llm_failed kind=%s error=%s", kind, exc.kind)
                    text = fallback
                    step.trace.add_metadata({"fallback": exc.kind})
                step.set_output({"reply": text})
                return text, step.trace_id
        except LLMError as exc:  # the flood guard (a reply to a tap): the fallback, untraced
            logger.warning("checkin.llm_refused kind=%s error=%s", kind, exc.kind)
            return fallback, None
