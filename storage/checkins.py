"""Repository functions for check-ins: preferences, schedules, claimed sends and progress entries."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.models import CheckinPrefs, CheckinSchedule, CheckinSend, ProgressEntry, User, utcnow


async def get_prefs(*, session: AsyncSession, user_id: int) -> CheckinPrefs:
    """The user's check-in preferences, created with the defaults on first use."""
    prefs = (await session.scalars(select(CheckinPrefs).where(col(CheckinPrefs.user_id) == user_id))).first()
    if prefs is None:
        prefs = CheckinPrefs(user_id=user_id)
        session.add(prefs)
        await session.flush()
    return prefs


async def find_prefs(*, session: AsyncSession, user_id: int) -> CheckinPrefs | None:
    """The user's check-in preferences, if any were stored."""
    return (await session.scalars(select(CheckinPrefs).where(col(CheckinPrefs.user_id) == user_id))).first()


async def awaiting_prefs(*, session: AsyncSession, telegram_id: int) -> tuple[User, CheckinPrefs] | None:
    """The user and their preferences while Rein waits for an answer from them; None (the usual case,
    on every text a user sends) without loading anything: one query on two unique indexes."""
    row = (await session.execute(
        select(User, CheckinPrefs)
        .join(CheckinPrefs, col(CheckinPrefs.user_id) == col(User.id))
        .where(col(User.telegram_id) == telegram_id, col(CheckinPrefs.awaiting).is_not(None))
    )).first()
    return None if row is None else (row[0], row[1])


async def get_schedule(*, session: AsyncSession, user_id: int, kind: str) -> CheckinSchedule | None:
    """The user's schedule of one kind (checkin | review | snooze)."""
    result = await session.scalars(
        select(CheckinSchedule).where(col(CheckinSchedule.user_id) == user_id, col(CheckinSchedule.kind) == kind)
    )
    return result.first()


async def schedules(*, session: AsyncSession, user_id: int) -> list[CheckinSchedule]:
    """Every schedule of the user."""
    result = await session.scalars(
        select(CheckinSchedule).where(col(CheckinSchedule.user_id) == user_id).order_by(col(CheckinSchedule.id))
    )
    return list(result.all())


async def put_schedule(
    *, session: AsyncSession, user_id: int, kind: str, local_time: str, days: int, next_due_at: datetime | None
) -> CheckinSchedule:
    """Create or replace the user's schedule of this kind."""
    row = await get_schedule(session=session, user_id=user_id, kind=kind)
    if row is None:
        row = CheckinSchedule(user_id=user_id, kind=kind, local_time=local_time, days=days)
    row.local_time, row.days, row.next_due_at, row.updated_at = local_time, days, next_due_at, utcnow()
    session.add(row)
    await session.flush()
    return row


async def drop_schedules(*, session: AsyncSession, user_id: int, kinds: tuple[str, ...]) -> int:
    """Remove the user's schedules of these kinds (their claimed sends go with them); how many went."""
    ids = select(col(CheckinSchedule.id)).where(
        col(CheckinSchedule.user_id) == user_id, col(CheckinSchedule.kind).in_(kinds)
    )
    await session.execute(delete(CheckinSend).where(col(CheckinSend.schedule_id).in_(ids)))
    result: Any = await session.execute(
        delete(CheckinSchedule).where(col(CheckinSchedule.user_id) == user_id, col(CheckinSchedule.kind).in_(kinds))
    )
    return int(result.rowcount or 0)


async def due(
    *, session: AsyncSession, now: datetime, limit: int
) -> list[tuple[CheckinSchedule, User, CheckinPrefs | None]]:
    """Schedules due at `now` (oldest first) with their user and preferences."""
    result = await session.execute(
        select(CheckinSchedule, User, CheckinPrefs)
        .join(User, col(User.id) == CheckinSchedule.user_id)
        .outerjoin(CheckinPrefs, col(CheckinPrefs.user_id) == CheckinSchedule.user_id)
        .where(col(CheckinSchedule.next_due_at).is_not(None), col(CheckinSchedule.next_due_at) <= now)
        .order_by(col(CheckinSchedule.next_due_at), col(CheckinSchedule.id))
        .limit(limit)
    )
    return [(s, u, p) for s, u, p in result.all()]


async def earliest_due(*, session: AsyncSession) -> datetime | None:
    """The earliest next due time over all schedules."""
    value: datetime | None = await session.scalar(select(func.min(col(CheckinSchedule.next_due_at))))
    if value is not None and value.tzinfo is None:  # min() bypasses the column type on SQLite
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value


async def claim(*, session: AsyncSession, schedule: CheckinSchedule, due_at: datetime) -> int | None:
    """Claim the send of `schedule` at `due_at`: the new claim's id, or None if it was claimed before."""
    assert schedule.id is not None
    values = {"schedule_id": schedule.id, "user_id": schedule.user_id, "kind": schedule.kind, "due_at": due_at,
              "status": "claimed", "claimed_at": utcnow()}
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(CheckinSend)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["schedule_id", "due_at"])
        .returning(col(CheckinSend.id))
    )
    result = await session.execute(statement)
    return result.scalar()


UNSENT = ("claimed", "drafted")  # never handed to Telegram: safe to deliver (once)
OPEN = (*UNSENT, "sending")  # not finished


async def mark_drafted(*, session: AsyncSession, send_id: int) -> bool:
    """The coach's text for a claimed send is being stored (the row stays locked until the transaction ends);
    False if the send is gone or moved on."""
    result: Any = await session.execute(
        update(CheckinSend).where(col(CheckinSend.id) == send_id, col(CheckinSend.status) == "claimed")
        .values(status="drafted")
    )
    return bool(result.rowcount)


async def set_turn(*, session: AsyncSession, send_id: int, turn_id: int) -> None:
    """The stored coach turn a send delivers."""
    await session.execute(update(CheckinSend).where(col(CheckinSend.id) == send_id).values(turn_id=turn_id))


async def start_sending(*, session: AsyncSession, send_id: int) -> bool:
    """Hand a send to Telegram: True for exactly one caller, and only while it was never handed over before
    (the user deleted in the meantime, or another pass took it: False, and nothing is sent)."""
    result: Any = await session.execute(
        update(CheckinSend).where(col(CheckinSend.id) == send_id, col(CheckinSend.status).in_(UNSENT))
        .values(status="sending")
    )
    return bool(result.rowcount)


async def finish_send(*, session: AsyncSession, send_id: int, status: str, reason: str | None = None) -> None:
    """Record how a send ended (with why, unless it was sent)."""
    await session.execute(
        update(CheckinSend)
        .where(col(CheckinSend.id) == send_id)
        .values(status=status, reason=reason[:64] if reason else None, sent_at=utcnow() if status == "sent" else None)
    )


async def open_sends(*, session: AsyncSession, limit: int) -> list[tuple[CheckinSend, User]]:
    """Sends a pass claimed and never finished (it crashed, or storage failed), oldest first, with their user."""
    result = await session.execute(
        select(CheckinSend, User)
        .join(User, col(User.id) == CheckinSend.user_id)
        .where(col(CheckinSend.status).in_(OPEN))
        .order_by(col(CheckinSend.id))
        .limit(limit)
    )
    return [(send, user) for send, user in result.all()]


async def sends_since(*, session: AsyncSession, user_id: int, since: datetime) -> list[CheckinSend]:
    """The user's check-in sends claimed since a time."""
    result = await session.scalars(
        select(CheckinSend)
        .where(col(CheckinSend.user_id) == user_id, col(CheckinSend.claimed_at) >= since)
        .order_by(col(CheckinSend.id))
    )
    return list(result.all())


async def put_progress(
    *, session: AsyncSession, user_id: int, goal_id: int | None, turn_id: int, status: str, local_date: date
) -> ProgressEntry:
    """Record the answer to one check-in; a second tap on the same check-in replaces the first."""
    entry = (
        await session.scalars(
            select(ProgressEntry).where(col(ProgressEntry.user_id) == user_id, col(ProgressEntry.turn_id) == turn_id)
        )
    ).first()
    if entry is None:
        entry = ProgressEntry(user_id=user_id, goal_id=goal_id, turn_id=turn_id, status=status, local_date=local_date)
    entry.status = status
    session.add(entry)
    await session.flush()
    return entry


async def progress_for_turn(*, session: AsyncSession, user_id: int, turn_id: int) -> ProgressEntry | None:
    """The user's answer to one check-in, if they gave one."""
    result = await session.scalars(
        select(ProgressEntry).where(col(ProgressEntry.user_id) == user_id, col(ProgressEntry.turn_id) == turn_id)
    )
    return result.first()


async def get_progress(*, session: AsyncSession, entry_id: int, user_id: int) -> ProgressEntry | None:
    """A progress entry, only if it is the user's."""
    result = await session.scalars(
        select(ProgressEntry).where(col(ProgressEntry.id) == entry_id, col(ProgressEntry.user_id) == user_id)
    )
    return result.first()


# Built once: every coaching turn runs it (bound parameters).
_RECENT_PROGRESS = (
    select(ProgressEntry)
    .where(col(ProgressEntry.user_id) == bindparam("user_id"))
    .order_by(col(ProgressEntry.local_date).desc(), col(ProgressEntry.id).desc())
    .limit(bindparam("limit"))
)


async def recent_progress(*, session: AsyncSession, user_id: int, limit: int) -> list[ProgressEntry]:
    """The user's newest progress entries, newest first."""
    result = await session.scalars(_RECENT_PROGRESS, {"user_id": user_id, "limit": limit})
    return list(result.all())


async def progress_since(*, session: AsyncSession, user_id: int, since: date) -> list[ProgressEntry]:
    """The user's progress entries from a local date on, oldest first."""
    result = await session.scalars(
        select(ProgressEntry)
        .where(col(ProgressEntry.user_id) == user_id, col(ProgressEntry.local_date) >= since)
        .order_by(col(ProgressEntry.local_date), col(ProgressEntry.id))
    )
    return list(result.all())


async def delete_for_user(*, session: AsyncSession, user_id: int) -> None:
    """Erase the user's check-in rows (for /delete)."""
    for statement in (
        delete(CheckinSend).where(col(CheckinSend.user_id) == user_id),
        delete(CheckinSchedule).where(col(CheckinSchedule.user_id) == user_id),
        delete(ProgressEntry).where(col(ProgressEntry.user_id) == user_id),
        delete(CheckinPrefs).where(col(CheckinPrefs.user_id) == user_id),
    ):
        await session.execute(statement)


async def export_for_user(*, session: AsyncSession, user_id: int) -> dict[str, Any]:
    """The user's check-in rows as JSON-ready data (for /export)."""

    async def rows(statement: Any) -> list[dict[str, Any]]:
        result = await session.scalars(statement)
        return [row.model_dump(mode="json", exclude={"user_id"}) for row in result.all()]

    return {
        "checkin_preferences": await rows(select(CheckinPrefs).where(col(CheckinPrefs.user_id) == user_id)),
        "checkin_schedules": await rows(select(CheckinSchedule).where(col(CheckinSchedule.user_id) == user_id)),
        "checkin_sends": await rows(
            select(CheckinSend).where(col(CheckinSend.user_id) == user_id).order_by(col(CheckinSend.id))
        ),
        "progress": await rows(
            select(ProgressEntry).where(col(ProgressEntry.user_id) == user_id).order_by(col(ProgressEntry.id))
        ),
    }
