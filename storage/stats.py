"""Figures for the admins' /stats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from storage import care as care_store
from storage.models import (
    Judgement,
    LLMUsage,
    Rating,
    User,
)


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
    summaries = await session.scalar(select(func.count()).select_from(LLMUsage).where(
        col(LLMUsage.created_at) >= since, col(LLMUsage.purpose) == "summary"))
    care = await care_store.counts_since(session=session, since=since)
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
        "summaries": int(summaries or 0),
        "care": {"screen": care.get("screen", 0), "model": care.get("model", 0)},
    }
