"""Answers to a check-in: Done · Partly · Missed (recorded, then a brief reply of the coach), Snooze 1 h, and
"Adjust my plan" after three misses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipeline import prompts, speaker, texts
from pipeline.checkins.core import CheckinCore, local_label
from pipeline.i18n import N_, _, ngettext
from pipeline.replies import Button, Para, Reply
from pipeline.schedule import in_quiet, quiet_end
from pipeline.speaker import Speaker
from pipeline.steps import Owner
from storage import checkins as store
from storage import goals, turns
from storage.models import Stage, Turn, User

SNOOZE = timedelta(hours=1)
NOTE_WINDOW = timedelta(minutes=30)
STATUS_LABELS = {"done": N_("✅ Done"), "partly": N_("🟡 Partly"), "missed": N_("❌ Missed")}
FALLBACK_REPLY = {
    "done": N_("Great work, that's one more step done. Keep the rhythm going!"),
    "partly": N_("Partly is still progress. What would make the rest easier next time?"),
    "missed": N_("That happens. Pick the smallest version of the next step and do just that."),
}


class CheckinAnswers:
    """The buttons under a check-in."""

    def __init__(self, core: CheckinCore) -> None:
        self.core = core
        self.db = core.db

    async def answer(self, who: Speaker, turn_id: int, status: str) -> list[Reply]:
        """Done · Partly · Missed on a check-in: recorded, then a brief answer from the coach."""
        now = self.core.clock()
        async with self.db.session() as session:
            user, turn = await self._checkin_turn(session, who, turn_id)
            if turn is None:
                return [Reply.plain(_(texts.EXPIRED))]
            zone = user.timezone or "UTC"
            earlier = await store.progress_for_turn(session=session, user_id=user.id or 0, turn_id=turn_id)
            if earlier is not None:  # a second tap (or a forged one) changes the entry, without another LLM call
                changed = earlier.status != status
                earlier.status = status
                session.add(earlier)
                return [Reply.plain(_("Changed to {status}.", status=_(STATUS_LABELS[status])) if changed
                                    else _("Already recorded."))]
            entry = await store.put_progress(session=session, user_id=user.id or 0, goal_id=turn.goal_id,
                                             turn_id=turn_id, status=status,
                                             local_date=now.astimezone(ZoneInfo(zone)).date())
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            self.core.expect(prefs, "note", entry.id, window=NOTE_WINDOW)
            last = await store.recent_progress(session=session, user_id=user.id or 0, limit=3)
            streak = await self.core.streak(session, user.id or 0)
            context = await self.core.context(session, user)
            await turns.add_turn(session=session, user=user, role="user", kind="checkin",
                                 text=f"Check-in answer: {status}", answered=True)
            plan = await goals.current_plan(session=session, goal_id=user.active_goal_id or 0)
            owner = Owner(user.id, user.opaque_id, user.thread_id, answers=who.telegram_id)
        request = f"My check-in answer: {status}. Streak: {streak} check-ins in a row."
        text, trace_id = await self.core.write("checkin_reply", owner, prompts.CHECKIN_REPLY, context, request,
                                               _(FALLBACK_REPLY[status]), drafts=who.drafts)
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            written = await turns.add_turn(session=session, user=user, role="coach", kind="coaching", text=text,
                                           trace_id=trace_id)
        recorded = _("{status} recorded.", status=_(STATUS_LABELS[status]))
        if streak:
            recorded += " " + ngettext("Streak: {n} check-in 🔥", "Streak: {n} check-ins 🔥", streak)
        paras = [Para(text), Para(recorded), Para(_("Want to add a note? Just write it in your next message."))]
        replies = [Reply(paras=paras, kind="coaching", turn_id=written.id)]
        if status == "missed" and len(last) == 3 and all(e.status == "missed" for e in last):
            buttons = [[Button(_("✏️ Adjust my plan"), "checkin_adjust", plan.id or 0)]] if plan else []
            replies.append(Reply(paras=[Para(_("That's three misses in a row. No blame: it usually means the plan "
                                               "asks too much right now. Shall we adjust it to fit your weeks?"))],
                                 buttons=buttons))
        return replies

    async def snooze(self, who: Speaker, turn_id: int) -> list[Reply]:
        """Snooze 1 h on a check-in: the same question again in an hour (after quiet hours, if they fall there)."""
        now = self.core.clock()
        async with self.db.session() as session:
            user, turn = await self._checkin_turn(session, who, turn_id)
            if turn is None:
                return [Reply.plain(_(texts.EXPIRED))]
            prefs = await store.get_prefs(session=session, user_id=user.id or 0)
            zone = user.timezone or "UTC"
            due = now + SNOOZE
            start, end = self.core.quiet(prefs)
            if in_quiet(due.astimezone(ZoneInfo(zone)).time(), start, end):
                due = quiet_end(due, zone, end)
            await store.put_schedule(session=session, user_id=user.id or 0, kind="snooze",
                                     local_time=due.astimezone(ZoneInfo(zone)).strftime("%H:%M"), days=0,
                                     next_due_at=due)
        self.core.changed(due)
        return [Reply.plain(_("Okay, I'll check in again at {when}.", when=local_label(due, zone)))]

    async def adjust(self, who: Speaker, plan_id: int) -> list[Reply]:
        """"Adjust my plan" after three misses: the next text changes the plan (a new draft to accept)."""
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            plan = await goals.get_plan(session=session, plan_id=plan_id, user_id=user.id or 0)
            if plan is None or plan.goal_id != user.active_goal_id or plan.status == "superseded":
                return [Reply.plain(_(texts.PLAN_GONE))]
            user.stage = Stage.ADJUSTING
            session.add(user)
        return [Reply.plain(_("What should change so the plan fits your weeks? E.g. \"only two sessions a week\" or "
                              "\"shorter sessions on weekdays\"."))]

    @staticmethod
    async def _checkin_turn(session: Any, who: Speaker, turn_id: int) -> tuple[User, Turn | None]:
        """The user, and the check-in message a button refers to (None unless it is this user's check-in)."""
        user = await speaker.load(session, who)
        turn = await turns.get_turn(session=session, turn_id=turn_id, user_id=user.id or 0)
        if turn is None or turn.role != "coach" or turn.kind != "checkin":
            return user, None
        return user, turn
