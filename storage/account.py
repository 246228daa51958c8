"""A user's whole account: everything exported for /export, everything erased for /delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage import care as care_store
from storage import checkins as checkin_store
from storage.models import (
    Goal,
    Judgement,
    LLMUsage,
    Milestone,
    Plan,
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


async def export_user(*, session: AsyncSession, user: User) -> dict[str, Any]:
    """Everything stored about the user, as JSON-ready data."""
    assert user.id is not None

    async def rows(statement: Any) -> list[dict[str, Any]]:
        result = await session.scalars(statement)
        return [row.model_dump(mode="json") for row in result.all()]

    goal_ids = select(col(Goal.id)).where(col(Goal.user_id) == user.id)
    plan_ids = select(col(Plan.id)).where(col(Plan.goal_id).in_(goal_ids))
    return {
        "user": user.model_dump(mode="json", exclude={"id"}),
        "goals": await rows(select(Goal).where(col(Goal.user_id) == user.id).order_by(col(Goal.id))),
        "resolutions": await rows(select(Resolution).where(col(Resolution.goal_id).in_(goal_ids))),
        "plans": await rows(select(Plan).where(col(Plan.goal_id).in_(goal_ids)).order_by(col(Plan.id))),
        "milestones": await rows(select(Milestone).where(col(Milestone.plan_id).in_(plan_ids))),
        "turns": await rows(select(Turn).where(col(Turn.user_id) == user.id).order_by(col(Turn.id))),
        "ratings": await rows(select(Rating).where(col(Rating.user_id) == user.id)),
        "judgements": await rows(select(Judgement).where(col(Judgement.user_id) == user.id)),
        "llm_usage": await rows(select(LLMUsage).where(col(LLMUsage.user_id) == user.id)),
        **await checkin_store.export_for_user(session=session, user_id=user.id),
        "care_events": await care_store.events_for_user(session=session, user_id=user.id),
    }
