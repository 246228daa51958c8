"""The admins' /stats report: users, ratings, judge means, tokens and cost over the last 7 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.replies import Para, Reply
from pipeline.settings import Settings
from storage import stats as stored_stats
from storage.db import Database


def opik_link(settings: Settings) -> str:
    """Where the team finds Rein's traces."""
    if not settings.tracing_enabled:
        return "tracing is off (no Opik settings)"
    if settings.opik_url_override:
        return f"{settings.opik_url_override} (project {settings.opik_project_name})"
    workspace = settings.opik_workspace or "default"
    return f"https://www.comet.com/opik/{workspace}/projects (project {settings.opik_project_name})"


async def stats_report(db: Database, settings: Settings, *, days: int = 7) -> Reply:
    """The report as a reply."""
    since = datetime.now(UTC) - timedelta(days=days)
    async with db.session() as session:
        data = await stored_stats.stats(session=session, since=since)
    ratings = data["ratings"]
    mean = f"{ratings['mean']:.2f}" if ratings["mean"] is not None else "n/a"
    bars = "  ".join(f"{v}★ {n}" for v, n in ratings["distribution"].items())
    judge = "\n".join(f"{t} {c}: {avg:.2f} (n={n})" for t, c, avg, n in data["judge"]) or "no judge scores yet"
    return Reply(paras=[
        Para(f"Rein stats\nUsers: {data['users']}\nActive in {days} days: {data['active']}", heading=True),
        Para(f"Ratings\nCount: {ratings['count']}, mean {mean}\n{bars}", heading=True),
        Para(f"Judge means ({days} days)\n{judge}", heading=True),
        Para(f"LLM use ({days} days)\nCalls: {data['llm_calls']}\nTokens: {data['tokens_in']:,} in, "
             f"{data['tokens_out']:,} out\nEstimated cost: ${data['cost_usd']:.4f}\n"
             f"History summaries: {data['summaries']}", heading=True),
        Para(f"Crisis care ({days} days)\nBy the screen: {data['care']['screen']}\n"
             f"By the model: {data['care']['model']}", heading=True),
        Para(f"Opik: {opik_link(settings)}"),
    ])
