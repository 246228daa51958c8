"""Repository functions: keyword-only, over an `AsyncSession`; callers own the transaction."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage import checkins as checkin_store
from storage.models import (
    CheckinPrefs,
    Goal,
    Judgement,
    LLMUsage,
    Milestone,
    Plan,
    Rating,
    Resolution,
    Turn,
    User,
    utcnow,
)


async def get_user(*, session: AsyncSession, telegram_id: int) -> User | None:
    """The user with this Telegram id, if known."""
    result = await session.scalars(select(User).where(col(User.telegram_id) == telegram_id))
    return result.first()


# How stale `last_active_at` may get (it drives the "quiet session" check, measured in minutes).
ACTIVITY_RESOLUTION = timedelta(seconds=60)


async def get_or_create_user(
    *, session: AsyncSession, telegram_id: int, chat_id: int, language_code: str | None = None
) -> User:
    """The user with this Telegram id, created on first contact; `last_active_at` is refreshed."""
    user = await get_user(session=session, telegram_id=telegram_id)
    return await _known(session, user, telegram_id=telegram_id, chat_id=chat_id, language_code=language_code)


# The statements of every coaching turn, built once (bound parameters): building a statement and its cache
# key on each call was a visible share of a turn's CPU (docs/PERFORMANCE.md).
_USER_AWAITING = (
    select(User, col(CheckinPrefs.awaiting))
    .outerjoin(CheckinPrefs, col(CheckinPrefs.user_id) == col(User.id))
    .where(col(User.telegram_id) == bindparam("telegram_id"))
)
_RECENT_TURNS = (select(Turn).where(col(Turn.user_id) == bindparam("user_id")).order_by(col(Turn.id).desc())
                 .limit(bindparam("limit")))
_MILESTONES = select(Milestone).where(col(Milestone.plan_id) == bindparam("plan_id")).order_by(col(Milestone.position))
_MARK_ANSWERED = update(Turn).where(col(Turn.id) == bindparam("turn_id")).values(answered=True)
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


async def get_or_create_user_awaiting(
    *, session: AsyncSession, telegram_id: int, chat_id: int, language_code: str | None = None
) -> tuple[User, str | None]:
    """As `get_or_create_user`, with what a check-in waits for from the user (`checkin_prefs.awaiting`,
    usually None) read in the same query: the text hot path's one read of the user."""
    row = (await session.execute(_USER_AWAITING, {"telegram_id": telegram_id})).first()
    user = await _known(session, row[0] if row else None, telegram_id=telegram_id, chat_id=chat_id,
                        language_code=language_code)
    return user, row[1] if row else None


async def _known(session: AsyncSession, user: User | None, *, telegram_id: int, chat_id: int,
                 language_code: str | None) -> User:
    """The user as found, created when not found; what changed about them is updated."""
    now = utcnow()
    if user is None:
        opaque = uuid.uuid4().hex
        user = User(
            telegram_id=telegram_id,
            chat_id=chat_id,
            opaque_id=opaque,
            thread_id=new_thread_id(opaque),
            language_code=language_code,
        )
        session.add(user)
        await session.flush()
        return user
    # Write only what changed: most calls in a turn find the row as it is, and skip the UPDATE.
    if now - user.last_active_at > ACTIVITY_RESOLUTION:
        user.last_active_at = now
    if user.chat_id != chat_id:
        user.chat_id = chat_id
    if language_code and user.language_code != language_code:
        user.language_code = language_code
    return user


def new_thread_id(opaque_id: str) -> str:
    """A fresh Opik thread id for one conversation of this user."""
    return f"{opaque_id[:12]}-{uuid.uuid4().hex[:12]}"


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


async def get_turn(*, session: AsyncSession, turn_id: int, user_id: int) -> Turn | None:
    """A turn, only if it belongs to this user."""
    result = await session.scalars(
        select(Turn).where(col(Turn.id) == turn_id, col(Turn.user_id) == user_id)
    )
    return result.first()


async def recent_turns(*, session: AsyncSession, user_id: int, limit: int) -> list[Turn]:
    """The user's last `limit` turns, oldest first."""
    result = await session.scalars(_RECENT_TURNS, {"user_id": user_id, "limit": limit})
    return list(reversed(result.all()))


async def turns_between(*, session: AsyncSession, user_id: int, after_id: int, before_id: int) -> list[Turn]:
    """The user's turns with after_id < id < before_id, oldest first."""
    result = await session.scalars(
        select(Turn)
        .where(col(Turn.user_id) == user_id, col(Turn.id) > after_id, col(Turn.id) < before_id)
        .order_by(col(Turn.id))
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


async def count_turns_after(*, session: AsyncSession, user_id: int, after_id: int) -> int:
    """How many turns of the user have an id above `after_id`."""
    count = await session.scalar(
        select(func.count()).select_from(Turn).where(col(Turn.user_id) == user_id, col(Turn.id) > after_id)
    )
    return int(count or 0)


async def delete_user(*, session: AsyncSession, user: User) -> None:
    """Erase the user and every row that belongs to them."""
    assert user.id is not None
    goal_ids = select(col(Goal.id)).where(col(Goal.user_id) == user.id)
    plan_ids = select(col(Plan.id)).where(col(Plan.goal_id).in_(goal_ids))
    await checkin_store.delete_for_user(session=session, user_id=user.id)
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
    }


async def latest_coach_turn(*, session: AsyncSession, user_id: int, kind: str) -> Turn | None:
    """The coach's newest message of a kind (e.g. the last clarifying question)."""
    result = await session.scalars(
        select(Turn)
        .where(col(Turn.user_id) == user_id, col(Turn.role) == "coach", col(Turn.kind) == kind)
        .order_by(col(Turn.id).desc())
        .limit(1)
    )
    return result.first()


async def mark_answered(*, session: AsyncSession, turn_id: int) -> None:
    """Record that a user's turn got its reply."""
    await session.execute(_MARK_ANSWERED, {"turn_id": turn_id})


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
        user.stage = "new"
        return False
    goal.status = "active"
    session.add(goal)
    user.active_goal_id = goal.id
    user.stage = "coaching"
    return True


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


async def thread_turns(*, session: AsyncSession, user_id: int, thread_id: str, limit: int) -> list[Turn]:
    """The last `limit` turns of one conversation thread, oldest first."""
    result = await session.scalars(
        select(Turn)
        .where(col(Turn.user_id) == user_id, col(Turn.thread_id) == thread_id)
        .order_by(col(Turn.id).desc())
        .limit(limit)
    )
    return list(reversed(result.all()))


async def quiet_open_threads(*, session: AsyncSession, before: datetime, limit: int) -> list[User]:
    """Users whose current conversation is still open but who have been quiet since `before`."""
    result = await session.scalars(
        select(User)
        .where(col(User.thread_closed).is_(False), col(User.last_active_at) < before)
        .order_by(col(User.last_active_at))
        .limit(limit)
    )
    return list(result.all())


async def count_thread_turns(*, session: AsyncSession, user_id: int, thread_id: str, role: str) -> int:
    """How many turns of one role a conversation thread has."""
    count = await session.scalar(
        select(func.count()).select_from(Turn).where(
            col(Turn.user_id) == user_id, col(Turn.thread_id) == thread_id, col(Turn.role) == role
        )
    )
    return int(count or 0)


async def stats(*, session: AsyncSession, since: datetime) -> dict[str, Any]:
    """Figures for the admins' /stats: users, activity, ratings, judge means, tokens and cost since `since`."""
    users = await session.scalar(select(func.count()).select_from(User))
    active = await session.scalar(select(func.count()).select_from(User).where(col(User.last_active_at) >= since))
    rating_rows = await session.execute(select(col(Rating.value), func.count()).group_by(col(Rating.value)))
    distribution = {int(value): int(n) for value, n in rating_rows.all()}
    judge_rows = await session.execute(
        select(col(Judgement.target), col(Judgement.criterion), func.avg(col(Judgement.score)), func.count())
        .where(col(Judgement.created_at) >= since)
        .group_by(col(Judgement.target), col(Judgement.criterion))
        .order_by(col(Judgement.target), col(Judgement.criterion))
    )
    usage = (
        await session.execute(
            select(
                func.coalesce(func.sum(col(LLMUsage.prompt_tokens)), 0),
                func.coalesce(func.sum(col(LLMUsage.output_tokens)), 0),
                func.coalesce(func.sum(col(LLMUsage.cost_usd)), 0.0),
                func.count(),
            ).where(col(LLMUsage.created_at) >= since)
        )
    ).one()
    count = sum(distribution.values())
    mean = sum(v * n for v, n in distribution.items()) / count if count else None
    return {
        "users": int(users or 0),
        "active": int(active or 0),
        "ratings": {"count": count, "mean": mean, "distribution": {v: distribution.get(v, 0) for v in range(1, 6)}},
        "judge": [(t, c, float(avg), int(n)) for t, c, avg, n in judge_rows.all()],
        "tokens_in": int(usage[0]),
        "tokens_out": int(usage[1]),
        "cost_usd": float(usage[2]),
        "llm_calls": int(usage[3]),
    }


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
