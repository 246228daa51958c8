"""Every LLM call is counted: after a scripted fortnight, /stats shows exactly the tokens Gemini reported."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from pipeline.steps import estimate_cost
from storage.models import LLMUsage
from tests.conftest import Clock, Harness, make_settings, start_bot, stop_bot

ANN = 6101
PRICES = (Decimal("0.30"), Decimal("2.50"))


def berlin(*args: int) -> datetime:
    """A Berlin wall time as an aware UTC instant."""
    return datetime(*args, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)


@pytest.fixture
async def fortnight(bot_api, gemini, sqlite_url) -> AsyncIterator[Harness]:
    """A bot whose judge scores everything, with a short history window (summaries come early), Ann as admin."""
    settings = make_settings(bot_api, gemini, sqlite_url, judge_enabled=True, judge_sample_rate=1.0,
                             admin_user_ids=[ANN], history_turns=2, checkin_scheduler=False,
                             price_input_per_mtok=PRICES[0], price_output_per_mtok=PRICES[1])
    app = await start_bot(settings)
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


async def test_stats_count_the_tokens_of_every_llm_call_of_a_fortnight(fortnight: Harness) -> None:
    """Goal → plan → coaching → a check-in answered → weekly review → a history summary → judge: /stats' token
    and cost totals equal the usageMetadata the Gemini server returned, call by call."""
    h = fortnight
    svc = h.services
    clock = Clock(berlin(2026, 11, 28, 9, 0))
    svc.checkins.core.clock = clock
    scheduler = svc.checkins.scheduler
    assert scheduler is not None

    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(ANN, "/start", expect=2)
    plan = (await h.say(ANN, "Run a 10k by June", expect=2))[-1]
    await h.press(ANN, plan, "✅ Accept")
    for text in ("I ran 3 km today", "My knees hurt a bit", "Should I rest tomorrow?", "Okay, rested", "Ran 4 km"):
        await h.say(ANN, text)
    await h.say(ANN, "/timezone Europe/Berlin")
    await h.say(ANN, "/checkin 08:00")
    clock.now = berlin(2026, 11, 29, 8, 0, 20)
    assert (await scheduler.run_due(clock.now)).sent == 1
    checkin = h.bot_api.messages(ANN)[-1]
    await h.press(ANN, checkin, "✅ Done")
    clock.now = berlin(2026, 11, 29, 19, 0, 20)
    assert (await scheduler.run_due(clock.now)).sent == 1
    await svc.drain(timeout_s=20)

    async with svc.db.session() as session:
        stored = list((await session.scalars(select(LLMUsage))).all())
    purposes = Counter(row.purpose for row in stored)
    for purpose in ("answer", "goal", "coaching", "summary", "checkin", "checkin_reply", "review", "judge"):
        if purpose == "answer":
            continue
        assert purposes[purpose] >= 1, f"no {purpose} call was counted: {purposes}"
    returned = sorted((u["promptTokenCount"], u["candidatesTokenCount"]) for u in h.gemini.usages)
    counted = sorted((row.prompt_tokens, row.output_tokens) for row in stored)
    assert counted == returned, "one llm_usage row per Gemini answer, with its very token counts"

    tokens_in = sum(p for p, _ in returned)
    tokens_out = sum(o for _, o in returned)
    cost = sum(estimate_cost(p, o, PRICES) for p, o in returned)
    report = (await h.say(ANN, "/stats"))[0].text
    found = re.search(r"Calls: (\d+)\nTokens: ([\d,]+) in, ([\d,]+) out\nEstimated cost: \$([\d.]+)", report)
    assert found is not None, report
    assert int(found.group(1)) == len(returned)
    assert int(found.group(2).replace(",", "")) == tokens_in
    assert int(found.group(3).replace(",", "")) == tokens_out
    assert found.group(4) == f"{cost:.4f}"
