"""Crisis care: the record of care given (which layer saw what, never the message) and the figures for /stats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.models import CareEvent


async def add_event(*, session: AsyncSession, user_id: int, layer: str, category: str, language: str,
                    pattern: str | None, trace_id: str | None) -> CareEvent:
    """Record that care was given."""
    event = CareEvent(user_id=user_id, layer=layer, category=category, language=language, pattern=pattern,
                      trace_id=trace_id)
    session.add(event)
    await session.flush()
    return event


async def counts_since(*, session: AsyncSession, since: datetime) -> dict[str, int]:
    """Care given since `since`, by layer ("screen", "model")."""
    rows = await session.execute(select(col(CareEvent.layer), func.count()).where(col(CareEvent.created_at) >= since)
                                 .group_by(col(CareEvent.layer)))
    return {str(layer): int(n) for layer, n in rows.all()}


async def events_for_user(*, session: AsyncSession, user_id: int) -> list[dict[str, Any]]:
    """The user's care events, for /export."""
    result = await session.scalars(select(CareEvent).where(col(CareEvent.user_id) == user_id)
                                   .order_by(col(CareEvent.id)))
    return [row.model_dump(mode="json") for row in result.all()]


async def delete_for_user(*, session: AsyncSession, user_id: int) -> None:
    """Erase the user's care events (/delete)."""
    await session.execute(delete(CareEvent).where(col(CareEvent.user_id) == user_id))
