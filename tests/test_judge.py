"""The LLM judge, session scores and usage: scores land on the right trace or thread and never hurt a turn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.replying import send_replies
from storage.models import Judgement, LLMUsage, Turn, User
from tests.conftest import Harness, make_settings, start_bot, stop_bot
from tests.fakes import Fault

ANN = 4001


@pytest.fixture
async def judged(bot_api, gemini, sqlite_url, opik_stub):
    """A running bot with tracing and the judge on (every coaching reply judged)."""
    settings = make_settings(bot_api, gemini, sqlite_url, opik_track_disable=False, opik_url_override=opik_stub.url,
                             opik_flush_timeout_s=3, judge_enabled=True, judge_sample_rate=1.0)
    app = await start_bot(settings)
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


def _is_judge(request) -> bool:
    return "strict evaluator" in request.system


async def _judge_calls_done(h: Harness, count: int) -> None:
    """Wait until the judge has asked Gemini `count` times, then for its background work to finish."""
    await h.bot_api.wait_for(lambda: sum(map(_is_judge, h.gemini.requests)) >= count, timeout=10)
    await h.services.drain()


async def _plan(h: Harness) -> None:
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(ANN, "/start", expect=2)
    await h.say(ANN, "Read 20 books by December", expect=2)


async def test_resolution_and_plan_get_judge_scores_on_their_trace(judged: Harness, opik_stub) -> None:
    """After the plan is sent, each SMART and plan criterion lands as a 0–1 score with a reason on that trace."""
    await _plan(judged)
    async with judged.services.db.session() as session:
        trace_id = (await session.scalars(select(Turn.trace_id).where(Turn.kind == "plan"))).one()
    expected = {f"judge_resolution_{c}" for c in ("specific", "measurable", "achievable", "relevant", "time_bound")}
    expected |= {f"judge_plan_{c}" for c in ("feasible", "complete", "concrete", "safe")}
    await opik_stub.wait_for(lambda: expected <= {s["name"] for s in opik_stub.feedback_scores if s["id"] == trace_id},
                             timeout=10)
    scores = [s for s in opik_stub.feedback_scores if s["id"] == trace_id and s["name"] in expected]
    assert all(0 <= s["value"] <= 1 and s.get("reason") for s in scores)
    await judged.services.drain()
    async with judged.services.db.session() as session:
        rows = (await session.scalars(select(Judgement))).all()
    assert {(r.target, r.criterion) for r in rows} == {tuple(n.removeprefix("judge_").split("_", 1)) for n in expected}


async def test_the_judge_is_traced_as_its_own_llm_calls(judged: Harness, opik_stub) -> None:
    """The judge's Gemini calls after a message was sent are traces of their own, tagged judge, outside the user's
    thread; the plan's judgement, made before the plan is shown, is an LLM call inside the plan turn's trace."""
    import opik

    with opik.record_traces_locally() as recorded:
        await _plan(judged)
        await _judge_calls_done(judged, 2)
        trees = recorded.trace_trees
    judge_traces = [t for t in trees if t.name and t.name.startswith("judge.")]
    assert {t.name for t in judge_traces} == {"judge.resolution"}
    assert all("judge" in (t.tags or []) and t.thread_id is None for t in judge_traces)
    assert all(any(s.type == "llm" for s in t.spans) for t in judge_traces)
    goal = next(t for t in trees if t.name == "coach.goal")
    attempt = next(s for s in goal.spans if s.name == "plan.attempt")
    assert any(s.type == "llm" and "strict evaluator" in str(s.input) for s in attempt.spans or [])


async def test_a_failing_judge_leaves_the_users_turn_untouched(judged: Harness) -> None:
    """When every judge call fails, the user still gets resolution, plan and coaching, and nothing is scored."""
    judged.gemini.responder = lambda req: Fault.status(500) if _is_judge(req) else None
    await _plan(judged)
    await judged.press(ANN, judged.bot_api.messages(ANN)[-1], "✅ Accept")
    reply = (await judged.say(ANN, "Finished my first book"))[0]
    assert reply.text.startswith("Coach")
    await _judge_calls_done(judged, 3)
    async with judged.services.db.session() as session:
        assert (await session.scalars(select(Judgement))).all() == []


async def test_coaching_replies_are_judged_when_sampled(judged: Harness, opik_stub) -> None:
    """With the sample rate at 1, a coaching reply gets helpful/empathetic/actionable/safe scores."""
    await _plan(judged)
    await judged.press(ANN, judged.bot_api.messages(ANN)[-1], "✅ Accept")
    await judged.say(ANN, "I read 30 pages")
    await _judge_calls_done(judged, 3)
    async with judged.services.db.session() as session:
        rows = (await session.scalars(select(Judgement).where(Judgement.target == "coaching"))).all()
    assert {r.criterion for r in rows} == {"helpful", "empathetic", "actionable", "safe"}


async def test_quiet_session_gets_a_prompt_and_thread_scores(judged: Harness, opik_stub) -> None:
    """A quiet conversation is closed: "How was this session?" goes out once, and its stars and the judge's
    session score land on the Opik thread."""
    await _plan(judged)
    await judged.press(ANN, judged.bot_api.messages(ANN)[-1], "✅ Accept")
    await judged.say(ANN, "Read a chapter today")
    async with judged.services.db.session() as session:
        thread_id = (await session.scalars(select(User.thread_id))).one()
    sessions = judged.services.sessions
    closed = await sessions.close_quiet(quiet_s=60, now=datetime.now(UTC) + timedelta(minutes=5))
    assert [c.thread_id for c in closed] == [thread_id] and closed[0].prompt is not None
    await send_replies(judged.app.bot, ANN, [closed[0].prompt])
    prompt = judged.bot_api.messages(ANN)[-1]
    assert "How was this session?" in prompt.text
    await judged.services.judge.judge_thread(closed[0].user_id, thread_id)
    stars = [d for _, d in prompt.buttons() if d.startswith("r:")]
    judged.bot_api.user_presses(ANN, prompt.message_id, stars[3])
    await opik_stub.wait_for(lambda: {"session_rating", "judge_thread_session_quality"} <= {
        s["name"] for s in opik_stub.thread_feedback_scores if s.get("thread_id") == thread_id}, timeout=10)

    again = await sessions.close_quiet(quiet_s=60, now=datetime.now(UTC) + timedelta(minutes=10))
    assert again == [], "a closed thread is not closed twice"
    await judged.say(ANN, "Back again")
    async with judged.services.db.session() as session:
        assert (await session.scalars(select(User.thread_id))).one() != thread_id, "a new message opens a new thread"
    later = await sessions.close_quiet(quiet_s=60, now=datetime.now(UTC) + timedelta(hours=2))
    assert later and later[0].prompt is None, "no second prompt within a day"


async def test_usage_and_cost_are_recorded_per_llm_call(bot_api, gemini, sqlite_url) -> None:
    """Every Gemini call of a turn leaves a usage row with tokens and a positive estimated cost."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url))
    try:
        h = Harness(app, bot_api, gemini)
        await _plan(h)
        async with h.services.db.session() as session:
            rows = (await session.scalars(select(LLMUsage))).all()
        assert len(rows) == 3 and {r.purpose for r in rows} == {"goal"}
        assert all(r.prompt_tokens > 0 and r.output_tokens > 0 and r.cost_usd > 0 for r in rows)
    finally:
        await stop_bot(app)


async def test_stats_shows_admins_the_figures_and_refuses_others(bot_api, gemini, sqlite_url) -> None:
    """/stats gives admins users, ratings, judge means and LLM cost; anyone else gets a clear refusal."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, admin_user_ids=[ANN]))
    try:
        h = Harness(app, bot_api, gemini)
        await _plan(h)
        plan = bot_api.messages(ANN)[-1]
        query_id = bot_api.user_presses(ANN, plan.message_id, [d for _, d in plan.buttons() if d.startswith("r:")][3])
        await bot_api.wait_for(lambda: query_id in bot_api.callback_answers)
        report = (await h.say(ANN, "/stats"))[0].text
        assert "Users: 1" in report and "Active in 7 days: 1" in report
        assert "Count: 1, mean 4.00" in report and "4★ 1" in report
        assert "Calls: 3" in report and "Estimated cost: $" in report
        assert "tracing is off" in report
        refused = (await h.say(4999, "/stats"))[0].text
        assert "admins only" in refused
    finally:
        await stop_bot(app)
