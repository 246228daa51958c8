"""Goals, resolutions, plans and milestones: what the user works towards."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import bindparam, func, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage.models import (
    Goal,
    Milestone,
    Plan,
    Resolution,
    Stage,
    User,
    utcnow,
)


async def create_goal(*, session: AsyncSession, user: User, text: str) -> Goal:
    """A new active goal; any earlier active goal is marked replaced."""
    assert user.id is not None
    await session.execute(
        update(Goal).where(col(Goal.user_id) == user.id, col(Goal.status) == "active").values(status="replaced")
    )
    goal = Goal(user_id=user.id, text=text)
    session.add(goal)
    await session.flush()
    user.active_goal_id = goal.id
    session.add(user)
    return goal


async def get_goal(*, session: AsyncSession, goal_id: int, user_id: int) -> Goal | None:
    """A goal, only if it belongs to this user."""
    result = await session.scalars(
        select(Goal).where(col(Goal.id) == goal_id, col(Goal.user_id) == user_id)
    )
    return result.first()


async def save_resolution(*, session: AsyncSession, goal: Goal, fields: dict[str, Any]) -> Resolution:
    """Store a resolution for a goal."""
    assert goal.id is not None
    resolution = Resolution(goal_id=goal.id, **fields)
    session.add(resolution)
    await session.flush()
    return resolution


async def latest_resolution(*, session: AsyncSession, goal_id: int) -> Resolution | None:
    """The newest resolution of a goal."""
    result = await session.scalars(
        select(Resolution).where(col(Resolution.goal_id) == goal_id).order_by(col(Resolution.id).desc()).limit(1)
    )
    return result.first()


async def save_plan(
    *,
    session: AsyncSession,
    goal: Goal,
    resolution: Resolution | None,
    summary: str,
    phases: list[dict[str, Any]],
    milestones: list[tuple[str, date, str]],
    trace_id: str | None,
) -> Plan:
    """A new draft plan (earlier drafts of the goal are superseded) with its milestones."""
    assert goal.id is not None
    version = (await session.scalar(select(func.max(col(Plan.version))).where(col(Plan.goal_id) == goal.id)) or 0) + 1
    await session.execute(
        update(Plan).where(col(Plan.goal_id) == goal.id, col(Plan.status) == "draft").values(status="superseded")
    )
    plan = Plan(
        goal_id=goal.id,
        resolution_id=resolution.id if resolution else None,
        version=version,
        summary=summary,
        phases=phases,
        trace_id=trace_id,
    )
    session.add(plan)
    await session.flush()
    assert plan.id is not None
    for position, (title, target, criterion) in enumerate(milestones):
        milestone = Milestone(plan_id=plan.id, position=position, title=title, target_date=target,
                              criterion=criterion)
        session.add(milestone)
    await session.flush()
    return plan


async def get_plan(*, session: AsyncSession, plan_id: int, user_id: int) -> Plan | None:
    """A plan, only if its goal belongs to this user."""
    result = await session.scalars(
        select(Plan)
        .join(Goal, col(Goal.id) == Plan.goal_id)
        .where(col(Plan.id) == plan_id, col(Goal.user_id) == user_id)
    )
    return result.first()


async def current_plan(*, session: AsyncSession, goal_id: int) -> Plan | None:
    """The goal's accepted plan, or else its newest draft."""
    result = await session.scalars(
        select(Plan)
        .where(col(Plan.goal_id) == goal_id, col(Plan.status) != "superseded")
        .order_by(col(Plan.id).desc())
        .limit(1)
    )
    return result.first()


_MILESTONES = select(Milestone).where(col(Milestone.plan_id) == bindparam("plan_id")).order_by(col(Milestone.position))


async def milestones(*, session: AsyncSession, plan_id: int) -> list[Milestone]:
    """A plan's milestones in order."""
    result = await session.scalars(_MILESTONES, {"plan_id": plan_id})
    return list(result.all())


async def accept_plan(*, session: AsyncSession, plan: Plan) -> None:
    """Mark a draft accepted (any earlier accepted plan of the goal is superseded)."""
    await session.execute(
        update(Plan)
        .where(col(Plan.goal_id) == plan.goal_id, col(Plan.status) == "accepted", col(Plan.id) != plan.id)
        .values(status="superseded")
    )
    plan.status = "accepted"
    plan.accepted_at = utcnow()
    session.add(plan)


async def restore_previous_goal(*, session: AsyncSession, user: User) -> bool:
    """Make the newest set-aside goal with an accepted plan active again; False if there is none."""
    assert user.id is not None
    accepted = select(col(Plan.goal_id)).where(col(Plan.status) == "accepted")
    goal = (
        await session.scalars(
            select(Goal)
            .where(col(Goal.user_id) == user.id, col(Goal.status) == "replaced", col(Goal.id).in_(accepted))
            .order_by(col(Goal.id).desc())
            .limit(1)
        )
    ).first()
    if goal is None:
        user.active_goal_id = None
        user.stage = Stage.NEW
        return False
    goal.status = "active"
    session.add(goal)
    user.active_goal_id = goal.id
    user.stage = Stage.COACHING
    return True


_CURRENT_PLAN_ID = (
    select(col(Plan.id))
    .where(col(Plan.goal_id) == bindparam("goal_id"), col(Plan.status) != "superseded")
    .order_by(col(Plan.id).desc())
    .limit(1)
    .scalar_subquery()
)


_NEWEST_RESOLUTION_ID = (
    select(col(Resolution.id))
    .where(col(Resolution.goal_id) == bindparam("goal_id"))
    .order_by(col(Resolution.id).desc())
    .limit(1)
    .scalar_subquery()
)


_GOAL_CONTEXT = (
    select(Goal, Plan, Resolution)
    .select_from(Goal)
    .outerjoin(Plan, col(Plan.id) == _CURRENT_PLAN_ID)
    .outerjoin(Resolution, col(Resolution.id) == _NEWEST_RESOLUTION_ID)
    .where(col(Goal.id) == bindparam("goal_id"), col(Goal.user_id) == bindparam("user_id"))
)


async def goal_context(
    *, session: AsyncSession, goal_id: int, user_id: int
) -> tuple[Goal | None, Plan | None, Resolution | None]:
    """The user's goal with its current plan and newest resolution, in one query (the coaching hot path)."""
    row = (await session.execute(_GOAL_CONTEXT, {"goal_id": goal_id, "user_id": user_id})).first()
    if row is None:
        return None, None, None
    return row[0], row[1], row[2]


async def reach_milestone(*, session: AsyncSession, milestone_id: int, user_id: int) -> Milestone | None:
    """Mark one of the user's milestones reached (once); None if it is not theirs."""
    milestone = (
        await session.scalars(
            select(Milestone)
            .join(Plan, col(Plan.id) == Milestone.plan_id)
            .join(Goal, col(Goal.id) == Plan.goal_id)
            .where(col(Milestone.id) == milestone_id, col(Goal.user_id) == user_id)
        )
    ).first()
    if milestone is not None and milestone.reached_at is None:
        milestone.reached_at = utcnow()
        session.add(milestone)
    return milestone
