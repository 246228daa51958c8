"""Ratings of coach messages: stored per user and message, sent to Opik as feedback on that message's trace.

A press is stored first (one rating per user and message; another press replaces it) and synced to Opik
afterwards: a rating Opik has not confirmed (it was down) is sent again by the periodic sync. After a 1 or 2
the coach asks once what would have helped; the next text becomes the score's reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from pipeline import logcontext, texts
from pipeline.i18n import N_, _
from pipeline.replies import Button, Para, Reply
from pipeline.speaker import Speaker
from pipeline.tracing import Feedback, Tracer
from storage import ratings, turns, users
from storage.db import Database
from storage.models import User

USER_RATING = "user_rating"  # Opik feedback score name: the user's 1–5 rating of one coach message
SESSION_RATING = "session_rating"  # Opik thread score: the user's 1–5 answer to "How was this session?"
RATEABLE = frozenset({"question", "resolution", "plan", "coaching", "checkin", "review", "session"})
ASK_REASON = N_("Sorry that wasn't helpful. What would have helped? Just write it, or tap Skip.")


@dataclass
class RateOutcome:
    """What a rating press did: `ok` False means the data was not the user's or not valid."""

    ok: bool
    value: int = 0
    followup: list[Reply] | None = None


class Ratings:
    """Stores ratings and their reasons, and syncs them to Opik."""

    def __init__(self, *, db: Database, tracer: Tracer) -> None:
        self.db = db
        self.tracer = tracer
        self._sync_lock = asyncio.Lock()

    async def rate(self, who: Speaker, turn_id: int, value: int) -> RateOutcome:
        """A 1–5 rating of one of the user's coach messages; a new press replaces the old value."""
        if not 1 <= value <= 5:
            return RateOutcome(ok=False)
        async with self.db.session() as session:
            user = await users.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.id is None:
                return RateOutcome(ok=False)
            logcontext.set_user(user.opaque_id)
            turn = await turns.get_turn(session=session, turn_id=turn_id, user_id=user.id)
            if turn is None or turn.role != "coach" or turn.kind not in RATEABLE:
                return RateOutcome(ok=False)
            rating = await ratings.upsert_rating(session=session, user_id=user.id, turn_id=turn_id, value=value)
            followup = None
            if value <= 2 and not rating.reason_asked:
                rating.reason_asked = True
                user.pending_rating_id = rating.id
                session.add_all([rating, user])
                followup = [Reply(paras=[Para(_(ASK_REASON))],
                                  buttons=[[Button(_("Skip"), "skip_reason", rating.id or 0)]])]
        return RateOutcome(ok=True, value=value, followup=followup)

    async def skip_reason(self, who: Speaker, rating_id: int) -> list[Reply]:
        """The Skip button under "what would have helped?"."""
        async with self.db.session() as session:
            user = await users.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.pending_rating_id != rating_id:
                return [Reply.plain(_(texts.EXPIRED))]
            user.pending_rating_id = None
            session.add(user)
        return [Reply.plain(_("No problem.") + " " + texts.stage_hint(user.stage))]

    async def save_reason(self, session: AsyncSession, user: User, text: str) -> list[Reply]:
        """The text after "what would have helped?" becomes the rating's reason."""
        rating = await ratings.get_rating(session=session, rating_id=user.pending_rating_id or 0,
                                          user_id=user.id or 0)
        user.pending_rating_id = None
        session.add(user)
        if rating is not None and rating.id is not None:
            await ratings.change_rating(session=session, rating_id=rating.id, reason=text[:1000])
        return [Reply.plain(_("Thank you, that helps me get better.") + " " + texts.stage_hint(user.stage))]

    async def sync(self) -> int:
        """Send ratings Opik has not confirmed yet (after an outage, too); returns how many it took."""
        if not self.tracer.enabled:
            return 0
        async with self._sync_lock:  # one pass at a time, so a newer value never lands before an older one
            async with self.db.session() as session:
                pending = await ratings.unsynced_ratings(session=session)
            if not pending:
                return 0
            scores = [
                Feedback(thread_id or "", SESSION_RATING, float(rating.value), rating.reason, thread=True)
                if kind == "session" else Feedback(trace_id or "", USER_RATING, float(rating.value), rating.reason)
                for rating, trace_id, thread_id, kind in pending
            ]
            if not await asyncio.to_thread(self.tracer.send_feedback, scores):
                return 0
            async with self.db.session() as session:
                await ratings.mark_ratings_synced(session=session,
                                                  versions=[(r.id or 0, r.updated_at) for r, *_ in pending])
            return len(pending)
