"""Tracing: one Opik trace per turn in the user's thread, Gemini calls as LLM spans, ratings as feedback."""

from __future__ import annotations

import opik
import pytest
from sqlalchemy import select

from storage.models import Turn, User
from tests.conftest import Harness, make_settings, start_bot, stop_bot

ANN = 3001


@pytest.fixture
async def traced(bot_api, gemini, sqlite_url, opik_stub):
    """A running bot with tracing on, Opik pointed at the loopback stub."""
    settings = make_settings(bot_api, gemini, sqlite_url, opik_track_disable=False,
                             opik_url_override=opik_stub.url, opik_flush_timeout_s=3)
    app = await start_bot(settings)
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


async def _coach_once(h: Harness) -> None:
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(ANN, "/start", expect=2)
    await h.say(ANN, "Sleep eight hours a night", expect=2)
    await h.press(ANN, h.bot_api.messages(ANN)[-1], "✅ Accept")
    await h.say(ANN, "I slept 7 hours yesterday")


async def test_a_coaching_turn_is_one_trace_with_an_llm_span(traced: Harness) -> None:
    """The coaching turn's trace has the thread id, input, output, metadata and a Gemini span with usage."""
    with opik.record_traces_locally() as recorded:
        await _coach_once(traced)
        trees = recorded.trace_trees
    async with traced.services.db.session() as session:
        user = (await session.scalars(select(User))).one()
        coach_turn = (await session.scalars(select(Turn).where(Turn.kind == "coaching", Turn.role == "coach"))).one()
    coaching = [t for t in trees if t.name == "coach.coaching"]
    assert len(coaching) == 1
    trace = coaching[0]
    assert trace.id == coach_turn.trace_id
    assert trace.thread_id == user.thread_id
    assert trace.input == {"message": "I slept 7 hours yesterday"}
    assert trace.output == {"reply": coach_turn.text}
    assert trace.metadata["stage"] == "coaching" and trace.metadata["model"] == traced.services.llm.model
    assert trace.metadata["user"] == user.opaque_id
    llm_spans = [s for s in trace.spans if s.type == "llm"]
    assert len(llm_spans) == 1
    assert llm_spans[0].usage and llm_spans[0].usage.get("total_tokens", 0) > 0
    assert llm_spans[0].provider == "google_ai"
    assert llm_spans[0].total_cost is not None and llm_spans[0].total_cost > 0


def _all_spans(spans):
    """Every span of a tree, nested ones included."""
    for span in spans:
        yield span
        yield from _all_spans(span.spans or [])


async def test_the_plan_turn_traces_resolution_and_plan_calls_together(traced: Harness) -> None:
    """Writing the resolution and plan is one trace: each attempt a span with its LLM span inside, stored on
    both messages."""
    with opik.record_traces_locally() as recorded:
        traced.gemini.queue({"enough_information": True, "missing": [], "question": ""})
        await traced.say(ANN, "/start", expect=2)
        await traced.say(ANN, "Learn Italian", expect=2)
        trees = recorded.trace_trees
    goal_trace = next(t for t in trees if t.name == "coach.goal")
    assert len([s for s in _all_spans(goal_trace.spans) if s.type == "llm"]) == 3
    assert [s.name for s in goal_trace.spans if s.name.endswith(".attempt")] == ["resolution.attempt", "plan.attempt"]
    async with traced.services.db.session() as session:
        coach_turns = (await session.scalars(select(Turn).where(Turn.role == "coach"))).all()
        kinds = {t.kind: t.trace_id for t in coach_turns}
    assert kinds["resolution"] == kinds["plan"] == goal_trace.id


async def test_a_failed_turn_records_the_error_on_its_trace(traced: Harness) -> None:
    """When Gemini fails, the turn's trace carries error info and the user still gets a reply."""
    from tests.fakes import Fault

    with opik.record_traces_locally() as recorded:
        await traced.say(ANN, "/start", expect=2)
        traced.gemini.fail_always = Fault.status(500)
        error = (await traced.say(ANN, "Run a marathon"))[0]
        trees = recorded.trace_trees
    assert "Try again" in error.text
    failed = next(t for t in trees if t.name == "coach.goal")
    assert failed.error_info is not None


async def test_user_names_never_reach_opik(traced: Harness) -> None:
    """Traces carry the opaque id, never the Telegram name, username or id."""
    with opik.record_traces_locally() as recorded:
        traced.bot_api.user_sends(ANN, "/start", first_name="Zelda", username="zelda_secret")
        await traced.bot_api.wait_messages(ANN, 2)
        await traced.say(ANN, "Paint every day", first_name="Zelda", username="zelda_secret")
        trees = recorded.trace_trees
    dumped = repr([(t.input, t.output, t.metadata, t.tags) for t in trees])
    assert "Zelda" not in dumped and "zelda_secret" not in dumped and str(ANN) not in dumped


async def test_ratings_land_as_user_rating_on_the_rated_trace(traced: Harness, opik_stub) -> None:
    """Pressing 4 logs `user_rating`=4 on the reply's trace in Opik; pressing 2 replaces it, with a reason."""
    await _coach_once(traced)
    reply = traced.bot_api.messages(ANN)[-1]
    async with traced.services.db.session() as session:
        query = select(Turn.trace_id).where(Turn.kind == "coaching", Turn.role == "coach")
        trace_id = (await session.scalars(query)).one()
    stars = [d for _, d in reply.buttons() if d.startswith("r:")]
    traced.bot_api.user_presses(ANN, reply.message_id, stars[3])
    await traced.bot_api.wait_for(lambda: any(
        s.get("id") == trace_id and s.get("value") == 4 for s in opik_stub.feedback_scores))
    traced.bot_api.user_presses(ANN, reply.message_id, stars[1])
    await traced.bot_api.wait_for(lambda: "What would have helped" in traced.bot_api.messages(ANN)[-1].text)
    await traced.say(ANN, "Shorter answers")
    await traced.services.ratings.sync()
    scores = [s for s in opik_stub.feedback_scores if s.get("id") == trace_id]
    assert scores[-1]["name"] == "user_rating"
    assert (scores[-1]["value"], scores[-1].get("reason")) == (2, "Shorter answers")


async def test_ratings_wait_out_an_opik_outage(traced: Harness, opik_stub) -> None:
    """With Opik down the rating is kept unsynced; once Opik is back the periodic sync delivers it."""
    from storage.models import Rating

    await _coach_once(traced)
    reply = traced.bot_api.messages(ANN)[-1]
    opik_stub.down = True
    try:
        five = [d for _, d in reply.buttons() if d.startswith("r:")][4]
        qid = traced.bot_api.user_presses(ANN, reply.message_id, five)
        await traced.bot_api.wait_for(lambda: qid in traced.bot_api.callback_answers)
        assert await traced.services.ratings.sync() == 0
        async with traced.services.db.session() as session:
            assert [r.synced for r in (await session.scalars(select(Rating))).all()] == [False]
    finally:
        opik_stub.down = False
    await traced.services.ratings.sync()  # or the periodic re-send gets there first: either delivers it
    async with traced.services.db.session() as session:
        assert [r.synced for r in (await session.scalars(select(Rating))).all()] == [True]
        trace_id = (await session.scalars(select(Turn.trace_id).where(Turn.kind == "coaching",
                                                                      Turn.role == "coach"))).one()
    assert any(s.get("id") == trace_id and s.get("value") == 5 and s["name"] == "user_rating"
               for s in opik_stub.feedback_scores)


async def test_without_opik_settings_the_bot_runs_untraced(bot_api, gemini, sqlite_url) -> None:
    """With no Opik settings turns still work and carry no trace id."""
    settings = make_settings(bot_api, gemini, sqlite_url)
    assert not settings.tracing_enabled
    app = await start_bot(settings)
    try:
        h = Harness(app, bot_api, gemini)
        await h.say(ANN, "/start", expect=2)
        await h.say(ANN, "Meditate daily")
        async with h.services.db.session() as session:
            assert all(t.trace_id is None for t in (await session.scalars(select(Turn))).all())
    finally:
        await stop_bot(app)


async def test_shutdown_is_bounded_when_opik_is_unreachable(bot_api, gemini, sqlite_url, opik_stub) -> None:
    """With Opik down, stopping the bot waits at most the flush bound (plus a small margin), never Opik's retries."""
    import time

    settings = make_settings(bot_api, gemini, sqlite_url, opik_track_disable=False,
                             opik_url_override=opik_stub.url, opik_flush_timeout_s=1)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    await h.say(ANN, "/start", expect=2)
    opik_stub.down = True
    try:
        await h.say(ANN, "Swim 1 km without stopping")
        started = time.monotonic()
        await stop_bot(app)
        elapsed = time.monotonic() - started
    finally:
        opik_stub.down = False
    assert elapsed < settings.opik_flush_timeout_s + 6, f"shutdown took {elapsed:.1f} s"


async def test_prompts_are_registered_in_the_prompt_library(traced: Harness, opik_stub) -> None:
    """With Opik configured, every versioned prompt is sent to Opik's prompt library at start-up."""
    from pipeline import prompts

    def stored(prompt: prompts.Prompt) -> bool:
        return any(v.get("template") == prompt.text and (v.get("metadata") or {}).get("version") == prompt.version
                   for v in opik_stub.prompt_versions.get(prompt.name, []))

    await traced.bot_api.wait_for(lambda: all(map(stored, prompts.ALL)), timeout=10)
    assert len(opik_stub.prompt_versions["rein-plan"]) >= 2, "two versions of the plan prompt"
