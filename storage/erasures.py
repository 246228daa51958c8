"""Erasures: what a deleted user left in Opik (their opaque id, threads and known trace ids), kept until Opik
confirms it holds nothing of theirs any more."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.models import CareEvent, Erasure, Goal, Plan, Resolution, Turn, User


async def held_in_opik(*, session: AsyncSession, user: User) -> tuple[list[str], list[str]]:
    """The user's Opik thread ids and the trace ids their rows point at (turns, resolutions, plans, care)."""
    assert user.id is not None
    threads = {user.thread_id}
    threads.update(t for t in await session.scalars(
        select(col(Turn.thread_id)).where(col(Turn.user_id) == user.id, col(Turn.thread_id).is_not(None)).distinct())
        if t)
    goal_ids = select(col(Goal.id)).where(col(Goal.user_id) == user.id)
    traces: set[str] = set()
    for statement in (
        select(col(Turn.trace_id)).where(col(Turn.user_id) == user.id),
        select(col(Resolution.trace_id)).where(col(Resolution.goal_id).in_(goal_ids)),
        select(col(Plan.trace_id)).where(col(Plan.goal_id).in_(goal_ids)),
        select(col(CareEvent.trace_id)).where(col(CareEvent.user_id) == user.id),
    ):
        traces.update(t for t in await session.scalars(statement.distinct()) if t)
    return sorted(threads), sorted(traces)


async def record(*, session: AsyncSession, opaque_id: str, thread_ids: list[str], trace_ids: list[str]) -> Erasure:
    """Record an erasure to carry out (in the transaction that removes the user's rows)."""
    erasure = Erasure(opaque_id=opaque_id, thread_ids=thread_ids, trace_ids=trace_ids)
    session.add(erasure)
    await session.flush()
    return erasure


async def due(*, session: AsyncSession, now: datetime, limit: int = 20) -> list[Erasure]:
    """Erasures not done whose next attempt is due, oldest first."""
    result = await session.scalars(
        select(Erasure).where(col(Erasure.done_at).is_(None), col(Erasure.next_attempt_at) <= now)
        .order_by(col(Erasure.next_attempt_at)).limit(limit))
    return list(result.all())


async def pending(*, session: AsyncSession) -> list[Erasure]:
    """Every erasure Opik has not confirmed yet."""
    result = await session.scalars(select(Erasure).where(col(Erasure.done_at).is_(None)).order_by(col(Erasure.id)))
    return list(result.all())


async def claim(*, session: AsyncSession, erasure: Erasure, until: datetime) -> bool:
    """Take an attempt (no other pass, here or on another replica, takes it until `until`); False if taken."""
    result = await session.execute(
        update(Erasure).where(col(Erasure.id) == erasure.id, col(Erasure.next_attempt_at) == erasure.next_attempt_at,
                              col(Erasure.done_at).is_(None)).values(next_attempt_at=until))
    return int(getattr(result, "rowcount", 0) or 0) == 1


async def attempted(*, session: AsyncSession, erasure_id: int, next_attempt_at: datetime, deleted: int,
                    threads: list[str], error: str | None, done_at: datetime | None) -> None:
    """Record one attempt: how many traces it deleted, the threads known now, its error, and whether it is done
    (a done erasure keeps only its opaque id, counts and times)."""
    erasure = await session.get(Erasure, erasure_id)
    if erasure is None:
        return
    erasure.attempts += 1
    erasure.traces_deleted += deleted
    erasure.last_error = error[:120] if error else None
    erasure.next_attempt_at = next_attempt_at
    erasure.thread_ids = [] if done_at else threads
    if done_at is not None:
        erasure.done_at = done_at
        erasure.trace_ids = []
    session.add(erasure)
