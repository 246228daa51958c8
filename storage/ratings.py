"""Ratings of coach messages, and their synchronisation with Opik."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.models import (
    Rating,
    Turn,
    utcnow,
)


async def upsert_rating(*, session: AsyncSession, user_id: int, turn_id: int, value: int) -> Rating:
    """One rating per user and message: a second press replaces the value (and needs a new sync)."""
    rating = (
        await session.scalars(select(Rating).where(col(Rating.user_id) == user_id, col(Rating.turn_id) == turn_id))
    ).first()
    if rating is None:
        rating = Rating(user_id=user_id, turn_id=turn_id, value=value)
        session.add(rating)
        await session.flush()
        return rating
    await change_rating(session=session, rating_id=rating.id or 0, value=value)
    await session.refresh(rating)
    return rating


async def change_rating(*, session: AsyncSession, rating_id: int, **values: Any) -> None:
    """Change a rating and mark it for a new sync, in one UPDATE: `synced` is always written, so a sync
    that confirmed the old version in the meantime cannot leave the new one marked as sent."""
    await session.execute(
        update(Rating).where(col(Rating.id) == rating_id).values(**values, synced=False, updated_at=utcnow())
    )


async def get_rating(*, session: AsyncSession, rating_id: int, user_id: int) -> Rating | None:
    """A rating, only if it is this user's."""
    result = await session.scalars(
        select(Rating).where(col(Rating.id) == rating_id, col(Rating.user_id) == user_id)
    )
    return result.first()


async def unsynced_ratings(
    *, session: AsyncSession, limit: int = 100
) -> list[tuple[Rating, str | None, str | None, str]]:
    """Ratings not yet confirmed by Opik, with the rated message's trace id, thread id and kind."""
    result = await session.execute(
        select(Rating, Turn.trace_id, Turn.thread_id, Turn.kind)
        .join(Turn, col(Turn.id) == Rating.turn_id)
        .where(
            col(Rating.synced).is_(False),
            or_(col(Turn.trace_id).is_not(None), and_(col(Turn.kind) == "session", col(Turn.thread_id).is_not(None))),
        )
        .order_by(col(Rating.id))
        .limit(limit)
    )
    return [(rating, trace_id, thread_id, kind) for rating, trace_id, thread_id, kind in result.all()]


async def mark_ratings_synced(*, session: AsyncSession, versions: list[tuple[int, datetime]]) -> None:
    """Mark ratings synced, unless they changed since they were read (then they go again)."""
    for rating_id, updated_at in versions:
        await session.execute(
            update(Rating)
            .where(col(Rating.id) == rating_id, col(Rating.updated_at) == updated_at)
            .values(synced=True)
        )
