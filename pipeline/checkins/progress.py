"""/progress: the streak, completion per week, milestones, and a chart of the last weeks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipeline import speaker
from pipeline.chart import ChartSpec, render_chart
from pipeline.checkins.core import CheckinCore
from pipeline.i18n import _, format_date, format_percent, ngettext
from pipeline.replies import Button, Para, Reply
from pipeline.speaker import Speaker
from storage import checkins as store
from storage import goals
from storage.models import Goal, Milestone, Plan, ProgressEntry, User


@dataclass
class Progress:
    """A user's progress: streak, the last weeks (oldest first) and milestones."""

    streak: int
    weeks: list[tuple[date, int, int, int, int]]  # (monday, done, partly, missed, check-ins sent)
    reached: int
    milestones: int
    next_milestone: Milestone | None
    goal: str | None = None  # the active goal's text

    def rates(self) -> list[float | None]:
        """Completion per week (done = 1, partly = ½) over the check-ins sent; None without any."""
        out: list[float | None] = []
        for _monday, done, partly, missed, sent in self.weeks:
            total = max(sent, done + partly + missed)
            out.append((done + 0.5 * partly) / total if total else None)
        return out


def _count(entries: list[ProgressEntry]) -> tuple[int, int, int]:
    return (sum(e.status == "done" for e in entries), sum(e.status == "partly" for e in entries),
            sum(e.status == "missed" for e in entries))


class ProgressReport:
    """Reads and shows a user's progress."""

    def __init__(self, core: CheckinCore) -> None:
        self.core = core
        self.db = core.db

    async def progress(self, who: Speaker, weeks: int = 8) -> tuple[list[Reply], bytes]:
        """/progress: streak, completion per week, milestones, and a PNG chart of the last weeks."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            data = await self.read(session, user, weeks)
        lines = [ngettext("Streak: {n} check-in in a row", "Streak: {n} check-ins in a row", data.streak)
                 + (" 🔥" if data.streak >= 3 else "")]
        _monday, done, partly, missed, sent = data.weeks[-1]
        week = _("This week: {done} done · {partly} partly · {missed} missed", done=done, partly=partly,
                 missed=missed)
        if sent:
            week += " " + ngettext("(of {n} check-in)", "(of {n} check-ins)", sent)
        lines.append(week)
        rates = data.rates()
        lines.append(_("Last weeks: {rates}", rates=" · ".join("–" if r is None else format_percent(r)
                                                                 for r in rates)))
        if data.milestones:
            line = _("Milestones: {reached} of {total} reached", reached=data.reached, total=data.milestones)
            if data.next_milestone is not None:
                line += ". " + _("Next: {title} by {date}", title=data.next_milestone.title,
                                 date=format_date(data.next_milestone.target_date))
            lines.append(line)
        if not any(r is not None for r in rates):
            lines.append(_("No check-ins answered yet. /checkin sets when I ask."))
        buttons = []
        if data.next_milestone is not None and data.next_milestone.id is not None:
            label = _("🏁 Reached: {title}", title=data.next_milestone.title)
            buttons = [[Button(label[:60], "milestone", data.next_milestone.id)]]
        reply = Reply(paras=[Para(_("📈 Your progress") + "\n" + "\n".join(lines), heading=True)], buttons=buttons)
        return [reply], await render_chart(self.chart_spec(data))

    @staticmethod
    def chart_spec(data: Progress) -> ChartSpec:
        """What the /progress chart shows of `data`."""
        upcoming = data.next_milestone
        mondays = [week[0] for week in data.weeks]
        return ChartSpec(goal=data.goal, weeks=list(zip(mondays, data.rates(), strict=True)), streak=data.streak,
                         milestone=None if upcoming is None else (upcoming.title, upcoming.target_date))

    async def read(self, session: Any, user: User, weeks: int) -> Progress:
        """The user's progress over the last `weeks` weeks (in their zone)."""
        zone = ZoneInfo(user.timezone or "UTC")
        today = self.core.clock().astimezone(zone).date()
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
        milestones: list[Milestone] = []
        goal: Goal | None = None
        plan: Plan | None = None
        if user.active_goal_id is not None:
            goal, plan, _resolution = await goals.goal_context(session=session, goal_id=user.active_goal_id,
                                                     user_id=user.id or 0)
            milestones = await goals.milestones(session=session, plan_id=plan.id or 0) if plan else []
        upcoming = next((m for m in milestones if m.reached_at is None), None)
        return Progress(streak=await self.core.streak(session, user.id or 0), weeks=table,
                        reached=sum(1 for m in milestones if m.reached_at), milestones=len(milestones),
                        next_milestone=upcoming, goal=goal.text if goal is not None else None)
