"""Security and privacy: buttons act only for their owner, allow- and admin-lists, no secrets in logs or traces."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text as sql
from sqlmodel import SQLModel

from bot import texts
from bot.logs import REDACTED, configure, settings_secrets
from bot.render import decode, encode
from storage import turns, users
from tests.conftest import TOKEN, Harness, make_settings, start_bot, stop_bot, user_snapshot
from tests.fakes import Fault
from tests.test_faults import to_coaching

ANN = 987_650_001
BOB = 987_650_002
ANN_NAME = "Zanzibarella"
ANN_GOAL = "Ann's private goal ZQX-42: quit smoking"


async def _bob_presses(h: Harness, message_id: int, data: str) -> tuple[dict[str, Any], list[str]]:
    """Bob presses `data` (on Ann's message): the callback answer and whatever Bob got sent."""
    before = len(h.bot_api.messages(BOB))
    query = h.bot_api.user_presses(BOB, message_id, data)
    await h.bot_api.wait_for(lambda: query in h.bot_api.callback_answers)
    await h.bot_api.wait_for(lambda: len(h.services.locks) == 0)
    await h.settled()
    return h.bot_api.callback_answers[query], [m.text or "" for m in h.bot_api.messages(BOB)[before:]]


def _data(message: Any, prefix: str) -> str:
    return next(d for label, d in message.buttons() if label.startswith(prefix))


async def test_only_the_owner_can_act_on_a_buttons_data(harness: Harness) -> None:
    """Bob pressing each kind of Ann's button data (retry, skip, goal, delete, plan, rating, reason) changes nothing."""
    h = harness
    await h.say(BOB, "/start", expect=2)
    await h.say(ANN, "/start", expect=2, first_name=ANN_NAME)
    h.gemini.fail_always = Fault.status(503)
    error = (await h.say(ANN, ANN_GOAL))[0]
    h.gemini.fail_always = None
    async with h.services.db.session() as session:
        ann = await users.get_user(session=session, telegram_id=ANN)
    assert ann is not None and ann.active_goal_id is not None
    goal, ann_id = ann.active_goal_id, ann.id or 0

    first = {
        "retry": _data(error, "Try again"), "skip": encode("skip", goal), "goal_new": encode("goal_new", goal),
        "goal_keep": encode("goal_keep", goal), "delete_yes": encode("delete_yes", ann_id),
        "delete_no": encode("delete_no", ann_id),
    }
    before, calls = await user_snapshot(h, ANN), len(h.gemini.requests)
    for action, data in first.items():
        _, sent = await _bob_presses(h, error.message_id, data)
        assert all(ANN_GOAL not in s for s in sent), action
        assert sent and any(w in sent[0] for w in ("expired", "already been answered")), (action, sent)
    assert await user_snapshot(h, ANN) == before and len(h.gemini.requests) == calls

    question = (await h.press(ANN, error, "Try again"))[0]
    resolution, plan = await h.press(ANN, question, "Skip", expect=2)
    one = next(d for label, d in plan.buttons() if label == "☆1")
    h.bot_api.user_presses(ANN, plan.message_id, one)
    await h.bot_api.wait_for(lambda: "What would have helped" in h.bot_api.messages(ANN)[-1].text)
    reason = h.bot_api.messages(ANN)[-1]
    second = {
        "accept": _data(plan, "✅"), "regenerate": _data(plan, "🔄"), "adjust": _data(plan, "✏️"),
        "rate": next(d for label, d in resolution.buttons() if label == "☆5"),
        "skip_reason": _data(reason, "Skip"), "delete_yes": encode("delete_yes", ann_id),
    }
    plan_turn, plan_id = decode(one).ref, decode(_data(plan, "✅")).ref  # type: ignore[union-attr]
    checkin_answers = {action: encode(action, plan_turn) for action in
                       ("checkin_done", "checkin_partly", "checkin_missed", "checkin_snooze")}
    before, calls = await user_snapshot(h, ANN), len(h.gemini.requests)
    for action, data in {**second, **checkin_answers, "checkin_adjust": encode("checkin_adjust", plan_id)}.items():
        answer, sent = await _bob_presses(h, plan.message_id, data)
        shown = " ".join([answer.get("text") or "", *sent])
        assert "ZQX" not in shown and "quit smoking" not in shown, action
        if action in second:
            assert any(w in shown for w in ("isn't for you", "no longer current", "expired")), (action, shown)
    assert await user_snapshot(h, ANN) == before, "Ann's plan, ratings and pending reason are untouched"
    assert len(h.gemini.requests) == calls, "no LLM work was done on Ann's data for Bob"


async def test_commands_never_show_one_user_another_users_data(harness: Harness) -> None:
    """Bob's /start, /plan, /goal, /export, /progress, /checkin, /cancel, /delete and /help show nothing of Ann's."""
    h = harness
    await h.say(ANN, "/start", expect=2, first_name=ANN_NAME)
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(ANN, ANN_GOAL, expect=2)
    await h.press(ANN, h.bot_api.messages(ANN)[-1], "✅ Accept")
    await h.say(ANN, "Day 3 without a cigarette ZQX")
    async with h.services.db.session() as session:
        ann = await users.get_user(session=session, telegram_id=ANN)
    assert ann is not None
    ann_marks = ["ZQX", ANN_NAME, str(ANN), ann.opaque_id, ann.thread_id]
    for command in ("/start", "/plan", "/goal", "/export", "/progress", "/checkin", "/cancel", "/delete", "/help"):
        h.bot_api.user_sends(BOB, command)
    # /progress draws the process's first chart: matplotlib loads first (seconds on a busy machine)
    await h.bot_api.wait_for(lambda: h.bot_api.pending_updates == 0, timeout=30)
    await h.bot_api.wait_for(lambda: len(h.services.locks) == 0, timeout=30)
    await h.settled(timeout=30)
    shown = []
    for message in h.bot_api.messages(BOB):
        shown += [message.text or "", message.caption or "", (message.file or b"").decode("utf-8", "replace")]
    assert any('"turns"' in s for s in shown), "Bob got his own export"
    leaked = [mark for mark in ann_marks if any(mark in s for s in shown)]
    assert leaked == []


async def test_allowed_user_ids_turns_everyone_else_away_including_button_presses(
    bot_api, gemini, sqlite_url
) -> None:
    """With ALLOWED_USER_IDS set, others get a clear reply to messages and presses, and nothing is stored for them."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, allowed_user_ids=[ANN]))
    h = Harness(app, bot_api, gemini)
    try:
        assert len(await h.say(ANN, "/start", expect=2)) == 2
        for text in ("/start", "I want to get fit", "/export"):
            assert (await h.say(BOB, text))[0].text == texts.NOT_ALLOWED
        bot_api.user_sends_message(BOB, {"sticker": bot_api.sticker()})
        await bot_api.wait_messages(BOB, 4)
        query = bot_api.user_presses(BOB, 1, encode("accept", 1))
        await bot_api.wait_for(lambda: query in bot_api.callback_answers)
        assert bot_api.callback_answers[query].get("text") == texts.NOT_ALLOWED
        await h.settled()
        async with h.services.db.session() as session:
            assert await users.get_user(session=session, telegram_id=BOB) is None
        assert all("I want to get fit" not in r.last_user_text for r in gemini.requests)
    finally:
        await stop_bot(app)


async def test_stats_is_for_admins_only(bot_api, gemini, sqlite_url) -> None:
    """/stats answers a non-admin with a clear refusal and an admin with the report."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, admin_user_ids=[ANN]))
    h = Harness(app, bot_api, gemini)
    try:
        refused = (await h.say(BOB, "/stats"))[0]
        assert "admins only" in refused.text
        report = (await h.say(ANN, "/stats"))[0]
        assert "admins only" not in report.text
    finally:
        await stop_bot(app)


def test_forged_button_data_is_refused_by_the_decoder() -> None:
    """Only "code:ref[:value]" with a known code and bounded numbers decodes; everything else is None."""
    for bad in ("", "x" * 65, "pa:1:2", "r:1", "zz:1", "pa:-1", "pa:1e9", "pa:" + "9" * 16, "pa:1\n", "r:1:100"):
        assert decode(bad) is None, bad
    assert decode("pa:12") is not None and decode("r:3:5") is not None


# ----- secrets and logs ---------------------------------------------------------------------------

GEMINI_KEY = "AIzaSy-test-gemini-key-0123456789abcdef"
OPIK_KEY = "opik-test-key-9f8e7d6c5b4a3210"


@pytest.fixture
async def logged(bot_api, gemini, sqlite_url, opik_stub) -> AsyncIterator[tuple[Harness, io.StringIO, io.StringIO]]:
    """A traced bot whose whole log goes through Rein's handler (to one buffer) and raw (to another)."""
    settings = make_settings(bot_api, gemini, sqlite_url, gemini_api_key=GEMINI_KEY, opik_api_key=OPIK_KEY,
                             opik_track_disable=False, opik_url_override=opik_stub.url, opik_flush_timeout_s=3)
    rein_out, raw_out = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = configure("DEBUG", settings_secrets(settings), stream=rein_out)
    raw = logging.StreamHandler(raw_out)
    raw.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root.handlers.insert(0, raw)  # before Rein's handler: sees records before redaction
    app = await start_bot(settings)
    try:
        yield Harness(app, bot_api, gemini), rein_out, raw_out
    finally:
        await stop_bot(app)
        root.removeHandler(handler)
        root.removeHandler(raw)
        root.setLevel(old_level)
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


async def _eventful_run(h: Harness) -> None:
    """A run with a goal, a plan, coaching, a Gemini outage, a Telegram 502 and a forged press."""
    await to_coaching(h, ANN)
    await h.say(ANN, "Coaching with secrets around")
    h.gemini.fail_always = Fault.status(503)
    await h.say(ANN, "Gemini is down now")
    h.gemini.fail_always = None
    h.bot_api.fail_next("sendMessage", 502, "Bad Gateway", times=3)
    await h.say(ANN, "Telegram is flaky now")
    h.bot_api.user_presses(ANN, 1, "garbage:data")
    await h.bot_api.wait_for(lambda: h.bot_api.pending_updates == 0)
    await h.settled()


async def test_secrets_never_reach_the_log_or_opik(logged, opik_stub) -> None:
    """All log output of an eventful run (root at DEBUG) and everything sent to Opik lack the token and keys."""
    h, rein_out, raw_out = logged
    first_request = len(opik_stub.requests)
    await _eventful_run(h)
    h.services.tracer.flush()
    out = rein_out.getvalue()
    assert "coach.llm_failed" in out and "bot.unhandled_error" in out, "the run did log its faults"
    for secret in (TOKEN, TOKEN.split(":")[1], GEMINI_KEY, OPIK_KEY):
        assert secret not in out, "a secret reached Rein's log"
        assert secret not in raw_out.getvalue(), "a secret was logged at all (httpx must stay at WARNING)"
        assert secret not in json.dumps(opik_stub.requests[first_request:], default=str), "a secret reached Opik"


async def test_the_redaction_filter_catches_secrets_even_when_httpx_logs_at_debug(logged) -> None:
    """With httpx at DEBUG its request lines carry the token; Rein's handler still writes none of it."""
    h, rein_out, raw_out = logged
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    await h.say(ANN, "/start", expect=2)
    logging.getLogger("rein.test").error("token %s and key %s", TOKEN, GEMINI_KEY)
    assert TOKEN in raw_out.getvalue(), "the raw log did see the token (so the check below means something)"
    out = rein_out.getvalue()
    assert REDACTED in out
    for secret in (TOKEN, TOKEN.split(":")[1], GEMINI_KEY):
        assert secret not in out


async def test_logs_are_one_line_per_event_with_opaque_user_and_trace_ids(logged) -> None:
    """Every log line is one line with user= and trace=; a turn's lines carry the opaque id, never the Telegram id."""
    h, rein_out, _ = logged
    await to_coaching(h, ANN)
    await h.say(ANN, "One coaching turn", first_name=ANN_NAME)
    async with h.services.db.session() as session:
        ann = await users.get_user(session=session, telegram_id=ANN)
        coach_turn = await turns.latest_coach_turn(session=session, user_id=ann.id or 0, kind="coaching")
    assert ann is not None and coach_turn is not None and coach_turn.trace_id
    lines = [line for line in rein_out.getvalue().splitlines() if line.strip()]
    assert lines and all(" user=" in line and " trace=" in line for line in lines)
    turn_lines = [line for line in lines if "bot.turn " in line]
    assert any(f"user={ann.opaque_id}" in line and f"trace={coach_turn.trace_id}" in line for line in turn_lines)
    own = [line for line in lines if line.split(" ")[2].startswith(("bot", "pipeline", "storage"))]
    assert not [line for line in own if str(ANN) in line or ANN_NAME in line]


async def test_traces_carry_the_opaque_id_never_the_telegram_id_or_name(logged, opik_stub) -> None:
    """What Opik receives for a user's turns names them only by the opaque id."""
    h, _, _ = logged
    first_request = len(opik_stub.requests)
    await h.say(ANN, "/start", expect=2, first_name=ANN_NAME, username="zanzi_bar")
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(ANN, "Cycle to work", expect=2, first_name=ANN_NAME, username="zanzi_bar")
    await asyncio.to_thread(h.services.tracer.flush)
    async with h.services.db.session() as session:
        ann = await users.get_user(session=session, telegram_id=ANN)
    assert ann is not None

    def sent() -> str:
        return json.dumps(opik_stub.requests[first_request:], default=str)

    opaque_id = ann.opaque_id
    await opik_stub.wait_for(lambda: opaque_id in sent(), timeout=15, what="the turns' traces")
    sent_text = sent()
    for mark in (str(ANN), ANN_NAME, "zanzi_bar"):
        assert mark not in sent_text


# ----- /delete and /export ------------------------------------------------------------------------

def _user_tables() -> list[Any]:
    return [t for t in SQLModel.metadata.sorted_tables if "user_id" in t.c]


async def _rows_of(h: Harness, user_id: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    async with h.services.db.session() as session:
        for table in _user_tables():
            result = await session.execute(sql(f"SELECT * FROM {table.name} WHERE user_id = :u"), {"u": user_id})
            out[table.name] = [dict(row._mapping) for row in result]
    return out


@pytest.fixture
async def any_db(bot_api, gemini, database_url) -> AsyncIterator[Harness]:
    """A running bot on SQLite or PostgreSQL."""
    app = await start_bot(make_settings(bot_api, gemini, database_url))
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


async def _rich_user(h: Harness, user_id: int) -> None:
    await to_coaching(h, user_id)
    reply = (await h.say(user_id, "I did two runs this week"))[0]
    h.bot_api.user_presses(user_id, reply.message_id, next(d for label, d in reply.buttons() if label == "☆2"))
    await h.bot_api.wait_for(lambda: "What would have helped" in h.bot_api.messages(user_id)[-1].text)
    await h.say(user_id, "More about shoes")
    await h.say(user_id, "I want to end my life")  # crisis care: a care_events row


async def _missing_from_export(h: Harness) -> list[str]:
    """Tables holding rows of Ann that her /export does not contain."""
    await _rich_user(h, ANN)
    await _rich_user(h, BOB)
    async with h.services.db.session() as session:
        ann = await users.get_user(session=session, telegram_id=ANN)
    assert ann is not None
    sent = (await h.say(ANN, "/export"))[0]
    export = json.loads(sent.file or b"")
    lists = [v for v in export.values() if isinstance(v, list)]
    missing = []
    for table, rows in (await _rows_of(h, ann.id or 0)).items():
        if not rows:
            continue
        columns = {c for c in rows[0] if c != "user_id"}
        ids = {r["id"] for r in rows}
        if not any(ids <= {item.get("id") for item in lst if isinstance(item, dict) and columns <= set(item)}
                   for lst in lists):
            missing.append(table)
    assert str(BOB) not in json.dumps(export)
    return missing


async def test_export_contains_every_row_stored_about_the_user(any_db: Harness) -> None:
    """Every row of every table with a user_id (usage and judge scores too) is in that user's /export."""
    assert await _missing_from_export(any_db) == []


async def test_delete_erases_every_row_of_the_user_and_nobody_elses(any_db: Harness) -> None:
    """After /delete and Yes, no table holds a row of the user; the other user's rows are all still there."""
    h = any_db
    await _rich_user(h, ANN)
    await _rich_user(h, BOB)
    async with h.services.db.session() as session:
        ann = await users.get_user(session=session, telegram_id=ANN)
        bob = await users.get_user(session=session, telegram_id=BOB)
    assert ann is not None and bob is not None
    bob_rows = await _rows_of(h, bob.id or 0)
    ann_rows = await _rows_of(h, ann.id or 0)
    assert sum(len(r) for r in ann_rows.values()) > 10
    ask = (await h.say(ANN, "/delete"))[0]
    done = (await h.press(ANN, ask, "Yes"))[0]
    assert "deleted" in done.text
    left = {t: len(r) for t, r in (await _rows_of(h, ann.id or 0)).items() if r}
    assert left == {}
    async with h.services.db.session() as session:
        assert await users.get_user(session=session, telegram_id=ANN) is None
        for table in ("goals", "plans", "resolutions", "milestones"):
            assert ((await session.execute(sql(f"SELECT count(*) FROM {table}"))).scalar() or 0) > 0, "Bob's"
    assert await _rows_of(h, bob.id or 0) == bob_rows
