"""The coach's memory: turns older than the recent window are folded into a per-user summary, so a prompt
stays bounded however long the conversation grows.

A summary request reads at most `SUMMARY_BATCH` old turns (oldest first), each cut to `SUMMARY_TURN_CHARS`, so a
request stays under about `SUMMARY_BATCH * SUMMARY_TURN_CHARS + SUMMARY_CHARS` characters however long the
backlog; a longer backlog is folded in over several turns. It runs after the reply is sent, never for a user over
the flood guard's cap, and writes nothing for a user deleted meanwhile.
"""

from __future__ import annotations

import logging

from pipeline import prompts
from pipeline.llm import LLMError, user_content
from pipeline.speaker import Speaker
from pipeline.steps import Owner, Steps
from storage import turns, users
from storage.db import Database

logger = logging.getLogger(__name__)

SUMMARY_BATCH = 60  # old turns one summary request reads at most
SUMMARY_CHARS = 4000
SUMMARY_TURN_CHARS = 1000  # of each old turn, in a summary request


class Memory:
    """History summaries, asked for when a coaching turn saw more unsummarised turns than its window."""

    def __init__(self, *, db: Database, steps: Steps, history_turns: int = 12) -> None:
        self.db = db
        self.steps = steps
        self.history_turns = history_turns
        self._due: set[int] = set()  # users whose last coaching turn saw a backlog

    def note_backlog(self, who: Speaker) -> None:
        """A coaching turn of this user saw more unsummarised turns than the window."""
        self._due.add(who.telegram_id)

    def forget(self, telegram_id: int) -> None:
        """Nothing more to fold for this user (their data was deleted)."""
        self._due.discard(telegram_id)

    async def compact(self, who: Speaker) -> bool:
        """Fold the oldest unsummarised turns (beyond the recent window) into the summary; True if it did."""
        if who.telegram_id not in self._due or self.steps.flooded(who.telegram_id):
            return False
        self._due.discard(who.telegram_id)
        async with self.db.session() as session:
            user = await users.get_user(session=session, telegram_id=who.telegram_id)
            if user is None or user.id is None:
                return False
            recent = await turns.recent_turns(session=session, user_id=user.id, limit=self.history_turns)
            if not recent:
                return False
            old = await turns.turns_between(session=session, user_id=user.id, after_id=user.summary_upto_turn_id,
                                            before_id=recent[0].id or 0, limit=SUMMARY_BATCH)
            if len(old) < self.history_turns:
                return False
            summary, owner = user.summary, Owner(user.id, user.opaque_id, user.thread_id)
        transcript = "\n".join(f"{t.role}: {t.text[:SUMMARY_TURN_CHARS]}" for t in old)
        request = f"Earlier summary:\n{summary or '(none)'}\n\nNew conversation:\n{transcript}"
        try:
            async with self.steps.run("coach.summary", purpose="summary", owner=owner, input={"turns": len(old)},
                                      metadata={"prompt": prompts.SUMMARY.version}, tags=["summary"]) as step:
                new_summary = await step.text(system=prompts.SUMMARY.text, contents=[user_content(request)],
                                              temperature=0.2)
                step.set_output({"summary": new_summary})
        except LLMError as exc:
            logger.warning("coach.summary_failed error=%s", exc.kind)
            return False
        async with self.db.session() as session:
            fresh = await users.get_user(session=session, telegram_id=who.telegram_id)
            if fresh is None or fresh.opaque_id != owner.opaque_id:  # deleted meanwhile (perhaps back as someone new)
                return False
            fresh.summary = new_summary[:SUMMARY_CHARS]
            fresh.summary_upto_turn_id = old[-1].id or 0
            session.add(fresh)
        if len(old) == SUMMARY_BATCH:
            self._due.add(who.telegram_id)  # more backlog: the next turn folds the next batch
        return True
