"""Crisis care: what Rein does when a text shows a risk of suicide or self-harm, of harming someone, of abuse,
or a medical emergency (`pipeline.safety` finds it).

The reply is fixed text in the user's language (`pipeline.care_texts`), never written by the model, so it goes
out within milliseconds whether Gemini answers or not: they are heard; Rein is a coach, not a crisis service;
where to get help now (the emergency number and national lines of the country of their time zone, and the
findahelpline.com directory). Then: their check-ins pause for 24 hours (with a button to resume), the coach
stays gentle until `care_until`, and the trace gets the `safety_flag` feedback score and tags an operator can
filter on (`safety`, `safety:<category>`, `safety:<layer>`). Logs carry the category and layer, never the text.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from pipeline import care_texts, crisis_lines, speaker
from pipeline.care_texts import say
from pipeline.checkins.core import CheckinCore
from pipeline.replies import Button, Para, Reply
from pipeline.safety import Hit
from pipeline.speaker import Speaker
from pipeline.steps import Owner, Steps
from pipeline.tracing import TurnTrace
from storage import care as care_store
from storage import checkins as checkin_store
from storage import turns
from storage.db import Database
from storage.models import User

logger = logging.getLogger(__name__)

SAFETY_FLAG = "safety_flag"
PAUSE = timedelta(hours=24)  # check-ins after care (the message names the 24 hours)


def care_reply(category: str, language: str, zone: str | None, *, paused: bool) -> Reply:
    """The fixed care message for a category, in a catalog language, with the help for the user's country."""
    country = crisis_lines.help_for(zone)
    emergency = (say(care_texts.EMERGENCY_NUMBER, language, number=country.emergency)
                 if country is not None and country.emergency else say(care_texts.EMERGENCY_LOCAL, language))
    heard = say(care_texts.HEARD.get(category, care_texts.HEARD["suicide"]), language)
    helps = [f"• {line.name}: {line.contact}" for line in (country.lines if country else ())]
    helps.append("• " + say(care_texts.DIRECTORY, language, url=crisis_lines.DIRECTORY))
    paras = [Para(heard)]
    if category == "medical":
        paras.append(Para(emergency))
    paras.append(Para(say(care_texts.NOT_A_SERVICE, language) + "\n" + "\n".join(
        ([] if category == "medical" else ["• " + emergency]) + helps)))
    paras.append(Para(say(care_texts.CLOSING, language)))
    buttons: list[list[Button]] = []
    if paused:
        paras.append(Para(say(care_texts.PAUSED, language)))
        buttons = [[Button(say(care_texts.RESUME, language), "care_resume", 0)]]
    return Reply(paras=paras, kind="care", buttons=buttons)


class Care:
    """Gives crisis care: the reply, the pause, the gentle flag, the record and the trace's flag."""

    def __init__(self, *, db: Database, steps: Steps, core: CheckinCore, gentle_hours: float = 72.0) -> None:
        self.db = db
        self.steps = steps
        self.core = core
        self.pause = PAUSE  # the care message says so
        self.gentle_for = timedelta(hours=gentle_hours)

    async def screened(self, who: Speaker, text: str, hit: Hit) -> list[Reply]:
        """A text the screen caught: care in a trace of its own (no model call at all), the text kept."""
        language = care_texts.catalog_code(hit.language)
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            owner = Owner(user.id, user.opaque_id, user.thread_id)  # no flood guard: care is never refused
        async with self.steps.run("safety.care", purpose="care", owner=owner,
                                  input={"layer": "screen", "category": hit.category, "language": hit.language},
                                  metadata={"pattern": hit.pattern}, tags=["safety", "care"]) as step:
            replies = await self.give(who, category=hit.category, language=language, layer="screen",
                                      trace=step.trace, text=text, pattern=hit.pattern)
            step.set_output({"reply": "\n\n".join(r.text for r in replies)})
        return replies

    async def give(self, who: Speaker, *, category: str, language: str, layer: str, trace: TurnTrace,
                   text: str | None = None, answered_turn_id: int | None = None,
                   pattern: str | None = None) -> list[Reply]:
        """Store and flag the care: `text` is stored as the user's turn (screen), or the stored turn
        `answered_turn_id` is marked answered (model). Returns the care reply."""
        now = self.core.clock()  # the check-ins' clock: the pause is measured as they measure time
        reason = f"{layer}:{category}"
        trace.flag(SAFETY_FLAG, 1.0, reason, ["safety", f"safety:{category}", f"safety:{layer}"])
        async with self.db.session() as session:
            user = await speaker.load(session, who)
            user.care_until = now + self.gentle_for
            user.pending_rating_id = None  # what they wrote is not the reason for a rating
            paused = await self._pause_checkins(session, user, now)
            if text is not None:
                await turns.add_turn(session=session, user=user, role="user", kind="crisis", text=text,
                                     answered=True)
            elif answered_turn_id is not None:
                await turns.mark_answered(session=session, turn_id=answered_turn_id)
            reply = care_reply(category, language, user.timezone, paused=paused)
            written = await turns.add_turn(session=session, user=user, role="coach", kind="care", text=reply.text,
                                           trace_id=trace.id)
            reply.turn_id = written.id
            await care_store.add_event(session=session, user_id=user.id or 0, layer=layer, category=category,
                                       language=language, pattern=pattern, trace_id=trace.id)
            session.add(user)
        logger.warning("safety.care layer=%s category=%s language=%s trace=%s", layer, category, language, trace.id)
        return [reply]

    async def _pause_checkins(self, session: AsyncSession, user: User, now: datetime) -> bool:
        """Pause the user's check-ins for `pause` (a longer pause they chose stays); True if they have any."""
        rows = await checkin_store.schedules(session=session, user_id=user.id or 0)
        if not rows:
            return False
        prefs = await checkin_store.get_prefs(session=session, user_id=user.id or 0)
        prefs.awaiting = None
        if not prefs.paused:
            until = now + self.pause
            if prefs.paused_until is None or prefs.paused_until < until:
                prefs.paused_until = until
                prefs.pause_reason = "care"
            await self.core.reschedule(session, user, prefs, now)
        session.add(prefs)
        return True
