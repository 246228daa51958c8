"""The webhook's inbox: updates stored before Telegram is told they arrived, taken per user in update order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.models import InboxUpdate


async def put(*, session: AsyncSession, update_id: int, telegram_id: int, payload: dict[str, Any]) -> bool:
    """Store an update; False when it was stored before (Telegram sent it again)."""
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result: Any = await session.execute(
        insert(InboxUpdate)
        .values(update_id=update_id, telegram_id=telegram_id, payload=payload)
        .on_conflict_do_nothing(index_elements=["update_id"])
    )
    return bool(result.rowcount)


async def take_next(*, session: AsyncSession, telegram_id: int) -> InboxUpdate | None:
    """The user's oldest waiting update (by update id), removed from the inbox in the same transaction."""
    row = (await session.scalars(
        select(InboxUpdate).where(col(InboxUpdate.telegram_id) == telegram_id)
        .order_by(col(InboxUpdate.update_id)).limit(1)
    )).first()
    if row is not None:
        await session.execute(delete(InboxUpdate).where(col(InboxUpdate.id) == row.id))
    return row


async def peek(*, session: AsyncSession, telegram_id: int, limit: int) -> list[dict[str, Any]]:
    """The payloads of the user's first `limit` waiting updates, oldest first (nothing is removed)."""
    result = await session.scalars(
        select(col(InboxUpdate.payload)).where(col(InboxUpdate.telegram_id) == telegram_id)
        .order_by(col(InboxUpdate.update_id)).limit(limit)
    )
    return list(result.all())


async def waiting_users(*, session: AsyncSession, limit: int) -> list[int]:
    """Users with updates waiting (after a restart: the ones acknowledged and never handled)."""
    result = await session.scalars(
        select(col(InboxUpdate.telegram_id)).group_by(col(InboxUpdate.telegram_id))
        .order_by(func.min(col(InboxUpdate.update_id))).limit(limit)
    )
    return list(result.all())


async def count(*, session: AsyncSession) -> int:
    """Updates waiting in all."""
    return int(await session.scalar(select(func.count()).select_from(InboxUpdate)) or 0)
