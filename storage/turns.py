"""The conversation: every message of the user and the coach, in order, with the trace it came from."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, func, update
from sqlalchemy.ext.asyncio import AsyncSession
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
