"""Sessions: a conversation quiet for a while is finished; its Opik thread gets the judge's session score,
and at most once a day the user is asked "How was this session?"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.i18n import N_, _, use_locale
from pipeline.replies import Para, Reply
from pipeline.speaker import Speaker
from storage import turns, users
from storage.db import Database

SESSION_PROMPT = N_("How was this session? Tap a star: it helps me coach you better.")


@dataclass(frozen=True)
class ClosedThread:
    """A conversation that went quiet: its thread is scored; `prompt` asks the user to rate it."""

    speaker: Speaker
    user_id: int
    thread_id: str
    prompt: Reply | None


class Sessions:
    """Closes quiet conversations."""

    def __init__(self, *, db: Database, allowed: frozenset[int] = frozenset()) -> None:
        self.db = db
        self.allowed = allowed  # ALLOWED_USER_IDS: nobody else is sent anything unasked

    async def close_quiet(self, *, quiet_s: float, now: datetime | None = None, limit: int = 200) -> list[ClosedThread]:
        """Close conversations quiet for `quiet_s`; offer "How was this session?" at most once a day."""
        now = now or datetime.now(UTC)
        closed: list[ClosedThread] = []
        async with self.db.session() as session:
            for user in await users.quiet_open_threads(session=session, before=now - timedelta(seconds=quiet_s),
                                                       limit=limit):
                assert user.id is not None
                user.thread_closed = True
                session.add(user)
                prompt = None
                coached = await turns.count_thread_turns(session=session, user_id=user.id, thread_id=user.thread_id,
                                                         role="coach")
                recently = user.session_prompted_at and now - user.session_prompted_at < timedelta(days=1)
                allowed = not self.allowed or user.telegram_id in self.allowed
                if coached >= 2 and not recently and not user.blocked and allowed:
                    with use_locale(user.language):
                        text = _(SESSION_PROMPT)
                    turn = await turns.add_turn(session=session, user=user, role="coach", kind="session", text=text)
                    user.session_prompted_at = now
                    prompt = Reply(paras=[Para(text)], kind="session", turn_id=turn.id)
                closed.append(ClosedThread(Speaker(user.telegram_id, user.chat_id), user.id, user.thread_id, prompt))
        return closed
