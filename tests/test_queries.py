"""Database access per coaching turn: a fixed, short list of statements, whatever the history's length."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import Harness, make_settings, start_bot, stop_bot
from tests.fakes import FakeBotAPI, FakeGemini
from tests.test_faults import to_coaching

ANN = 5301
# docs/PERFORMANCE.md lists them: the user with what a check-in awaits, the prompt's four inputs, the message;
# after the answer, the reply, the message marked answered, the tokens.
COACHING_TURN = ["SELECT checkin_prefs,users", "UPDATE users", "SELECT goals,plans,resolutions", "SELECT milestones",
                 "SELECT progress_entries", "SELECT turns", "INSERT turns",
                 "INSERT turns", "UPDATE turns", "INSERT llm_usage"]


@pytest.fixture
async def any_db(bot_api: FakeBotAPI, gemini: FakeGemini, database_url: str) -> AsyncIterator[Harness]:
    """A running bot on SQLite and on PostgreSQL; no LLM cap or summary gets in the way of the test's turns."""
    app = await start_bot(make_settings(bot_api, gemini, database_url, llm_calls_per_minute=1000, history_turns=40))
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


def _shape(statement: str) -> str:
    """A statement reduced to its verb and tables, for a readable list."""
    verb = statement.split(None, 1)[0].upper()
    tables = sorted(set(re.findall(r"(?:FROM|JOIN|INTO|UPDATE)\s+\"?(\w+)", statement, re.IGNORECASE)))
    return f"{verb} {','.join(tables)}"


async def _turn_statements(h: Harness, text: str, *, expect: int = 1) -> list[str]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(_shape(statement))

    engine = h.services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await h.say(ANN, text, expect=expect)
        await h.settled()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


async def test_a_coaching_turn_runs_the_same_short_list_of_statements_every_time(any_db: Harness) -> None:
    """The second and the thirtieth coaching turn issue the same ten statements (no growth, no extra reads)."""
    await to_coaching(any_db, ANN)
    early = await _turn_statements(any_db, "first week went fine")
    for n in range(27):
        await any_db.say(ANN, f"update {n}")
    late = await _turn_statements(any_db, "still on track")
    assert late == early, f"{early} then {late}"
    assert early == COACHING_TURN, early


async def test_a_turn_over_the_llm_cap_stores_the_message_without_reading_prompt_inputs(
        bot_api: FakeBotAPI, gemini: FakeGemini, sqlite_url: str) -> None:
    """Past LLM_CALLS_PER_MINUTE a message is still stored (its answer waits for a follow-up), but the goal,
    plan and history are not read."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, llm_calls_per_minute=3))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        for n in range(2):  # the cap's other two turns
            await h.say(ANN, f"message {n}")
        statements = await _turn_statements(h, "one too many", expect=0)
        assert h.services.conversation.followups.armed(ANN), "held back, to be answered when the window allows"
        assert "INSERT turns" in statements, statements
        assert not any("goals" in s or "milestones" in s for s in statements), statements
    finally:
        await stop_bot(app)
