"""A user's whole account: everything exported for /export, everything erased for /delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col, select

from storage import care as care_store
from storage import checkins as checkin_store
from storage.models import (
    CareEvent,
    CheckinPrefs,
    CheckinSchedule,
    CheckinSend,
    Goal,
    Judgement,
    LLMUsage,
    Milestone,
    Plan,
    ProgressEntry,
    Rating,
    Resolution,
    Turn,
    User,
)


async def delete_user(*, session: AsyncSession, user: User) -> None:
    """Erase the user and every row that belongs to them."""
    assert user.id is not None
    goal_ids = select(col(Goal.id)).where(col(Goal.user_id) == user.id)
    plan_ids = select(col(Plan.id)).where(col(Plan.goal_id).in_(goal_ids))
    await checkin_store.delete_for_user(session=session, user_id=user.id)
    await care_store.delete_for_user(session=session, user_id=user.id)
    for statement in (
        delete(Rating).where(col(Rating.user_id) == user.id),
        delete(Judgement).where(col(Judgement.user_id) == user.id),
        delete(LLMUsage).where(col(LLMUsage.user_id) == user.id),
        delete(Milestone).where(col(Milestone.plan_id).in_(plan_ids)),
        delete(Plan).where(col(Plan.goal_id).in_(goal_ids)),
        delete(Resolution).where(col(Resolution.goal_id).in_(goal_ids)),
        delete(Turn).where(col(Turn.user_id) == user.id),
        delete(Goal).where(col(Goal.user_id) == user.id),
        delete(User).where(col(User.id) == user.id),
    ):
        await session.execute(statement)


# The sections of /export: name, table, how its rows belong to the user, and columns left out.
def _sections(user_id: int) -> list[tuple[str, type[SQLModel], Any, set[str]]]:
    goal_ids = select(col(Goal.id)).where(col(Goal.user_id) == user_id)
    plan_ids = select(col(Plan.id)).where(col(Plan.goal_id).in_(goal_ids))
    return [
        ("goals", Goal, col(Goal.user_id) == user_id, set()),
        ("resolutions", Resolution, col(Resolution.goal_id).in_(goal_ids), set()),
        ("plans", Plan, col(Plan.goal_id).in_(goal_ids), set()),
        ("milestones", Milestone, col(Milestone.plan_id).in_(plan_ids), set()),
        ("turns", Turn, col(Turn.user_id) == user_id, set()),
        ("ratings", Rating, col(Rating.user_id) == user_id, set()),
        ("judgements", Judgement, col(Judgement.user_id) == user_id, set()),
        ("llm_usage", LLMUsage, col(LLMUsage.user_id) == user_id, set()),
        ("checkin_preferences", CheckinPrefs, col(CheckinPrefs.user_id) == user_id, {"user_id"}),
        ("checkin_schedules", CheckinSchedule, col(CheckinSchedule.user_id) == user_id, {"user_id"}),
        ("checkin_sends", CheckinSend, col(CheckinSend.user_id) == user_id, {"user_id"}),
        ("progress", ProgressEntry, col(ProgressEntry.user_id) == user_id, {"user_id"}),
        ("care_events", CareEvent, col(CareEvent.user_id) == user_id, set()),
    ]


def user_record(user: User) -> dict[str, Any]:
    """The user's own row, as JSON-ready data (without the internal id)."""
    return user.model_dump(mode="json", exclude={"id"})


async def export_pages(*, session: AsyncSession, user: User,
                       page_size: int = 500) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """Everything stored about the user, section by section, `page_size` rows at a time (oldest first): plain
    rows, never kept in the session, so an export of any size reads in bounded memory. A section without rows
    yields one empty page."""
    assert user.id is not None
    for name, table, belongs, excluded in _sections(user.id):
        columns = list(table.__table__.columns)  # type: ignore[attr-defined]
        id_column = table.__table__.c.id  # type: ignore[attr-defined]
        after, first = 0, True
        while True:
            result = await session.execute(select(*columns).where(belongs, id_column > after)
                                           .order_by(id_column).limit(page_size))
            rows = [table.model_validate(dict(row._mapping)).model_dump(mode="json", exclude=excluded)
                    for row in result.all()]
            if rows or first:
                yield name, rows
            first = False
            if len(rows) < page_size:
                break
            after = rows[-1]["id"]


async def export_user(*, session: AsyncSession, user: User) -> dict[str, Any]:
    """Everything stored about the user, as JSON-ready data in one dict (small users; /export streams pages)."""
    data: dict[str, Any] = {"user": user_record(user)}
    async for name, rows in export_pages(session=session, user=user):
        data.setdefault(name, []).extend(rows)
    return data
