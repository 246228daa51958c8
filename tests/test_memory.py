"""The coach's memory: when the conversation outgrows the window, older turns become a summary that reaches the
next prompt, is traced in the user's thread, and is counted in /stats."""

from __future__ import annotations

import opik
from sqlalchemy import select

from pipeline import prompts
from storage.models import LLMUsage, User
from tests.conftest import Harness, make_settings, start_bot, stop_bot

ANN = 7001
SUMMARY = "SUMMARY-7001: runs three times a week, knee sore after long runs, committed to Sunday long run."


async def test_a_summary_is_made_used_traced_and_counted(bot_api, gemini, database_url, opik_stub) -> None:
    """With a window of two turns, a few coaching messages overflow it: a summary is written (its own trace in the
    user's thread), the next coaching prompt carries it, and /stats counts it."""
    settings = make_settings(bot_api, gemini, database_url, history_turns=2, admin_user_ids=[ANN],
                             opik_track_disable=False, opik_url_override=opik_stub.url, opik_flush_timeout_s=3)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)

    def answers(request):
        if request.system == prompts.answering(prompts.CLARIFY.text):
            return {"enough_information": True, "missing": [], "question": ""}
        if request.system == prompts.SUMMARY.text:
            return SUMMARY
        return None

    gemini.responder = answers
    try:
        await h.say(ANN, "/start", expect=2)
        await h.say(ANN, "Run a half marathon", expect=2)
        await h.press(ANN, bot_api.messages(ANN)[-1], "✅ Accept")
        with opik.record_traces_locally() as recorded:
            for text in ("Ran 5 km on Monday", "Skipped Wednesday", "Long run on Sunday went fine"):
                await h.say(ANN, text)
                await h.settled()
            trees = recorded.trace_trees
        summary_requests = [r for r in gemini.requests if r.system == prompts.SUMMARY.text]
        assert summary_requests, "the window overflowed but no summary was asked for"
        assert "Ran 5 km on Monday" in summary_requests[0].last_user_text
        async with h.services.db.session() as session:
            user = (await session.scalars(select(User))).one()
            usage = (await session.scalars(select(LLMUsage).where(LLMUsage.purpose == "summary"))).all()
        assert user.summary == SUMMARY and user.summary_upto_turn_id > 0 and len(usage) == len(summary_requests)

        await h.say(ANN, "What should I do this week?")
        coaching = gemini.requests[-1]
        assert coaching.system.startswith(prompts.COACH.text[:40])
        assert f"Summary of the earlier conversation: {SUMMARY}" in " ".join(coaching.user_texts)

        traced = [t for t in trees if t.name == "coach.summary"]
        assert traced and traced[0].thread_id == user.thread_id
        assert traced[0].output == {"summary": SUMMARY}
        assert any(s.type == "llm" for s in traced[0].spans)

        stats = (await h.say(ANN, "/stats"))[0]
        assert f"History summaries: {len(summary_requests)}" in stats.text
    finally:
        await stop_bot(app)
