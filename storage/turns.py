"""The conversation: every message of the user and the coach, in order, with the trace it came from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, exists, func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from storage.models import (
    Turn,
    User,
)


async def add_turn(
    *,
    session: AsyncSession,
    user: User,
    role: str,
    kind: str,
    text: str,
    trace_id: str | None = None,
    answered: bool = False,
) -> Turn:
    """Store one message of the conversation."""
    assert user.id is not None
    turn = Turn(
        user_id=user.id,
        goal_id=user.active_goal_id,
        role=role,
        kind=kind,
        text=text,
        trace_id=trace_id,
        thread_id=user.thread_id,
        answered=answered,
    )
    session.add(turn)
    await session.flush()
    return turn


async def delete_coach_turns(*, session: AsyncSession, user_id: int, turn_ids: list[int]) -> int:
    """Remove coach turns that were never shown (a reply withheld for crisis care); returns how many."""
    if not turn_ids:
        return 0
    result = await session.execute(delete(Turn).where(col(Turn.user_id) == user_id, col(Turn.role) == "coach",
                                                      col(Turn.id).in_(turn_ids)))
    return int(getattr(result, "rowcount", 0) or 0)


async def get_turn(*, session: AsyncSession, turn_id: int, user_id: int) -> Turn | None:
    """A turn, only if it belongs to this user."""
    result = await session.scalars(
        select(Turn).where(col(Turn.id) == turn_id, col(Turn.user_id) == user_id)
    )
    return result.first()


_RECENT_TURNS = (select(Turn).where(col(Turn.user_id) == bindparam("user_id")).order_by(col(Turn.id).desc())
                 .limit(bindparam("limit")))


async def recent_turns(*, session: AsyncSession, user_id: int, limit: int) -> list[Turn]:
    """The user's last `limit` turns, oldest first."""
    result = await session.scalars(_RECENT_TURNS, {"user_id": user_id, "limit": limit})
    return list(reversed(result.all()))


async def turns_between(*, session: AsyncSession, user_id: int, after_id: int, before_id: int,
                        limit: int | None = None) -> list[Turn]:
    """The user's turns with after_id < id < before_id, oldest first (the first `limit` of them)."""
    result = await session.scalars(
        select(Turn)
        .where(col(Turn.user_id) == user_id, col(Turn.id) > after_id, col(Turn.id) < before_id)
        .order_by(col(Turn.id))
        .limit(limit)
    )
    return list(result.all())


async def latest_user_turn(*, session: AsyncSession, user_id: int) -> Turn | None:
    """The user's newest message (not the coach's)."""
    result = await session.scalars(
        select(Turn)
        .where(col(Turn.user_id) == user_id, col(Turn.role) == "user")
        .order_by(col(Turn.id).desc())
        .limit(1)
    )
    return result.first()


async def latest_coach_turn(*, session: AsyncSession, user_id: int, kind: str) -> Turn | None:
    """The coach's newest message of a kind (e.g. the last clarifying question)."""
    result = await session.scalars(
        select(Turn)
        .where(col(Turn.user_id) == user_id, col(Turn.role) == "coach", col(Turn.kind) == kind)
        .order_by(col(Turn.id).desc())
        .limit(1)
    )
    return result.first()


_MARK_ANSWERED = update(Turn).where(col(Turn.id) == bindparam("turn_id")).values(answered=True)


async def mark_answered(*, session: AsyncSession, turn_id: int) -> None:
    """Record that a user's turn got its reply."""
    await session.execute(_MARK_ANSWERED, {"turn_id": turn_id})


async def mark_all_answered(*, session: AsyncSession, user_id: int, turn_ids: list[int]) -> None:
    """Record that these turns of the user got their reply (one reply answered them together)."""
    if turn_ids:
        await session.execute(update(Turn).where(col(Turn.user_id) == user_id, col(Turn.id).in_(turn_ids))
                              .values(answered=True))


def _after_last_answered(user_id: object) -> object:
    """The id of the user's newest answered message (0 if none), as a subquery."""
    answered = aliased(Turn)
    return func.coalesce(
        select(func.max(answered.id)).where(answered.user_id == user_id, answered.role == "user",
                                            answered.answered == True)  # noqa: E712
        .scalar_subquery(), 0)


async def waiting_turns(*, session: AsyncSession, user_id: int, limit: int) -> list[Turn]:
    """The user's messages still waiting for a reply: unanswered and newer than the last answered one, oldest
    first (the newest `limit` of them)."""
    result = await session.scalars(
        select(Turn)
        .where(col(Turn.user_id) == user_id, col(Turn.role) == "user", col(Turn.answered) == False,  # noqa: E712
               col(Turn.id) > _after_last_answered(user_id))
        .order_by(col(Turn.id).desc())
        .limit(limit)
    )
    return list(reversed(result.all()))


async def users_waiting(*, session: AsyncSession, active_since: datetime, limit: int) -> list[User]:
    """Users active since `active_since` with messages still waiting for a reply (after a restart)."""
    waiting = (select(Turn.id).where(col(Turn.user_id) == User.id, col(Turn.role) == "user",
                                     col(Turn.answered) == False,  # noqa: E712
                                     col(Turn.id) > _after_last_answered(User.id)))
    result = await session.scalars(
        select(User).where(col(User.last_active_at) >= active_since, exists(waiting))
        .order_by(col(User.last_active_at)).limit(limit)
    )
    return list(result.all())


async def thread_turns(*, session: AsyncSession, user_id: int, thread_id: str, limit: int) -> list[Turn]:
    """The last `limit` turns of one conversation thread, oldest first."""
    result = await session.scalars(
        select(Turn)
        .where(col(Turn.user_id) == user_id, col(Turn.thread_id) == thread_id)
        .order_by(col(Turn.id).desc())
        .limit(limit)
    )
    return list(reversed(result.all()))


async def count_thread_turns(*, session: AsyncSession, user_id: int, thread_id: str, role: str) -> int:
    """How many turns of one role a conversation thread has."""
    count = await session.scalar(
        select(func.count()).select_from(Turn).where(
            col(Turn.user_id) == user_id, col(Turn.thread_id) == thread_id, col(Turn.role) == role
        )
    )
    return int(count or 0)
