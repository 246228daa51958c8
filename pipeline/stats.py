"""The admins' /stats report: users, ratings, judge means, tokens and cost over the last 7 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.i18n import _
from pipeline.replies import Para, Reply
from pipeline.settings import Settings
from storage import stats as stored_stats
from storage.db import Database


def opik_link(settings: Settings) -> str:
    """Where the team finds Rein's traces."""
    if not settings.tracing_enabled:
        return _("tracing is off (no Opik settings)")
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
    mean = f"{ratings['mean']:.2f}" if ratings["mean"] is not None else _("n/a")
    bars = "  ".join(f"{v}★ {n}" for v, n in ratings["distribution"].items())
    judge = "\n".join(f"{t} {c}: {avg:.2f} (n={n})" for t, c, avg, n in data["judge"]) or _("no judge scores yet")
    return Reply(paras=[
        Para(_("Rein stats\nUsers: {users}\nActive in {days} days: {active}", users=data["users"], days=days,
               active=data["active"]), heading=True),
        Para(_("Ratings\nCount: {count}, mean {mean}", count=ratings["count"], mean=mean) + f"\n{bars}", heading=True),
        Para(_("Judge means ({days} days)", days=days) + f"\n{judge}", heading=True),
        Para(_("LLM use ({days} days)\nCalls: {calls}\nTokens: {tokens_in} in, {tokens_out} out\nEstimated cost: "
               "${cost}\nHistory summaries: {summaries}", days=days, calls=data["llm_calls"],
               tokens_in=f"{data['tokens_in']:,}", tokens_out=f"{data['tokens_out']:,}",
               cost=f"{data['cost_usd']:.4f}", summaries=data["summaries"]), heading=True),
        Para(_("Crisis care ({days} days)\nBy the screen: {screen}\nBy the model: {model}", days=days,
               screen=data["care"]["screen"], model=data["care"]["model"]), heading=True),
        Para(f"Opik: {opik_link(settings)}"),
    ])
