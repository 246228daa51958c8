"""Limits a person never meets and an abuser always does: a daily cap on stored texts with one notice, /export at
most once per cooldown and split into documents under a size, history summaries that read a bounded number of
turns, and ALLOWED_USER_IDS for everything sent unasked."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select, update

from pipeline import prompts
from pipeline.checkins.core import CheckinCore
from pipeline.checkins.dispatch import Dispatch
from pipeline.checkins.scheduler import Begin, CheckinScheduler
from pipeline.llm import LLM
from pipeline.memory import SUMMARY_BATCH, SUMMARY_TURN_CHARS
from pipeline.replies import Reply
from pipeline.sessions import Sessions
from pipeline.speaker import Speaker
from pipeline.steps import Steps
from pipeline.tracing import Tracer
from storage import checkins as checkin_store
from storage import turns, users
from storage.db import Database
from storage.models import CheckinSend, Turn, User
from tests.conftest import TOKEN, Harness, make_settings, start_bot, stop_bot

VOICE = (Path(__file__).parent / "data" / "voice.ogg").read_bytes()
ANN = 9401
BOB = 9402


async def to_coaching(h: Harness, user_id: int) -> None:
    """Walk a user from /start to an accepted plan (their goal is the one text stored on the way)."""
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(user_id, "/start", expect=2)
    await h.say(user_id, "Run 5 km without stopping", expect=2)
    await h.press(user_id, h.bot_api.messages(user_id)[-1], "✅ Accept")


async def user_texts(h: Harness, telegram_id: int) -> int:
    """How many of the user's own texts are stored."""
    async with h.services.db.session() as session:
        user = await users.get_user(session=session, telegram_id=telegram_id)
        assert user is not None
        count = await session.scalar(select(func.count()).select_from(Turn)
                                     .where(Turn.user_id == user.id, Turn.role == "user"))
    return int(count or 0)


# ----- the daily cap ------------------------------------------------------------------------------------------


async def test_texts_past_the_daily_cap_get_one_notice_and_reach_neither_storage_nor_the_model(
        bot_api, gemini, database_url) -> None:
    """MAX_MESSAGES_PER_DAY=4: the goal and three coaching texts are answered; the fifth gets one notice, a sixth
    text and a voice note nothing, none is stored or sent to Gemini; another user is unaffected; the next day the
    count starts over."""
    app = await start_bot(make_settings(bot_api, gemini, database_url, max_messages_per_day=4))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        for text in ("Ran 2 km", "Ran 3 km", "Rested"):
            assert (await h.say(ANN, text))[0].text.startswith("Coach:")
        asked = len(gemini.requests)
        notice = (await h.say(ANN, "Ran 4 km"))[0]
        assert "4 messages today" in notice.text and "tomorrow" in notice.text
        bot_api.user_sends(ANN, "Are you there?")
        bot_api.user_sends_voice(ANN, VOICE, duration=1)  # not even heard by the model
        await h.settled()
        assert bot_api.messages(ANN)[-1].text == notice.text
        assert len(gemini.requests) == asked
        assert await user_texts(h, ANN) == 4

        await to_coaching(h, BOB)
        assert (await h.say(BOB, "Ran 1 km"))[0].text.startswith("Coach:")

        async with h.services.db.session() as session:  # a day later
            yesterday = datetime.now(UTC).date() - timedelta(days=1)
            await session.execute(update(User).where(User.telegram_id == ANN).values(messages_day=yesterday))
        assert (await h.say(ANN, "New day, ran 5 km"))[0].text.startswith("Coach:")
        assert await user_texts(h, ANN) == 5
    finally:
        await stop_bot(app)


# ----- /export ------------------------------------------------------------------------------------------------


async def test_export_twice_within_the_cooldown_gets_a_clear_message(bot_api, gemini, sqlite_url) -> None:
    """A second /export within EXPORT_COOLDOWN_S says when to ask again and sends no document; after the cooldown
    it works again."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, export_cooldown_s=300))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        assert (await h.say(ANN, "/export"))[0].kind == "document"
        again = (await h.say(ANN, "/export"))[0]
        assert again.kind != "document" and "ask again in 5 min" in again.text
        async with h.services.db.session() as session:
            earlier = datetime.now(UTC) - timedelta(seconds=301)
            await session.execute(update(User).where(User.telegram_id == ANN).values(exported_at=earlier))
        assert (await h.say(ANN, "/export"))[0].kind == "document"
    finally:
        await stop_bot(app)


async def test_a_large_export_comes_as_documents_under_the_part_size(bot_api, gemini, database_url) -> None:
    """With EXPORT_PART_BYTES=4096 and 400 stored turns, /export sends several documents: each under 4096 bytes
    and valid JSON on its own, numbered, and together holding every turn exactly once and the user once."""
    app = await start_bot(make_settings(bot_api, gemini, database_url, export_part_bytes=4096))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        async with h.services.db.session() as session:
            user = await users.get_user(session=session, telegram_id=ANN)
            assert user is not None
            for n in range(400):
                await turns.add_turn(session=session, user=user, role="user" if n % 2 else "coach", kind="message",
                                     text=f"Message number {n} about running ü")
            stored = set((await session.scalars(select(Turn.id).where(Turn.user_id == user.id))).all())
        before = len(bot_api.messages(ANN))
        await h.say(ANN, "/export")
        await h.settled()
        docs = [m for m in bot_api.messages(ANN)[before:] if m.kind == "document"]
        assert len(docs) > 5
        parts = [json.loads(d.file or b"") for d in docs]
        assert all(len(d.file or b"") <= 4096 for d in docs)
        assert [p["part"] for p in parts] == list(range(1, len(docs) + 1))
        assert f"part 2 of {len(docs)}" in (docs[1].caption or "")
        exported = [t["id"] for p in parts for t in p.get("turns", [])]
        assert sorted(exported) == sorted(stored)
        assert sum("user" in p for p in parts) == 1 and sum("opik" in p for p in parts) == 1
    finally:
        await stop_bot(app)


# ----- history summaries --------------------------------------------------------------------------------------


async def test_a_summary_request_reads_a_bounded_number_of_turns(bot_api, gemini, sqlite_url) -> None:
    """A user with 300 unsummarised turns of 3,000 characters: each summary request carries at most SUMMARY_BATCH
    turns, each cut to SUMMARY_TURN_CHARS, and the next one goes on where the last stopped."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        async with h.services.db.session() as session:
            user = await users.get_user(session=session, telegram_id=ANN)
            assert user is not None
            for n in range(300):
                await turns.add_turn(session=session, user=user, role="user", kind="coaching", text=f"{n:04d}" * 750)
        gemini.responder = lambda r: "SUMMARY" if r.system == prompts.SUMMARY.text else None
        who = Speaker(ANN, ANN)
        upto = []
        for _ in range(2):
            h.services.memory.note_backlog(who)
            assert await h.services.memory.compact(who)
            async with h.services.db.session() as session:
                upto.append((await users.get_user(session=session, telegram_id=ANN)).summary_upto_turn_id)  # type: ignore[union-attr]
        requests = [r for r in gemini.requests if r.system == prompts.SUMMARY.text]
        assert len(requests) == 2
        for request in requests:
            lines = [line for line in request.last_user_text.splitlines() if line.startswith(("user: ", "coach: "))]
            assert 0 < len(lines) <= SUMMARY_BATCH
            assert max(len(line) for line in lines) <= len("coach: ") + SUMMARY_TURN_CHARS
            assert len(request.last_user_text) < SUMMARY_BATCH * (SUMMARY_TURN_CHARS + 8) + 5000
        assert upto[1] > upto[0] > 0
    finally:
        gemini.responder = None
        await stop_bot(app)


# ----- ALLOWED_USER_IDS for what is sent unasked -------------------------------------------------------------


async def test_quiet_session_prompts_go_only_to_allowed_users(sqlite_url) -> None:
    """Two quiet conversations with two coach turns each: with ALLOWED_USER_IDS naming one user, only that user is
    asked "How was this session?"; both threads are closed."""
    db = Database(sqlite_url)
    await db.migrate()
    try:
        async with db.session() as session:
            for telegram_id in (ANN, BOB):
                user = await users.get_or_create_user(session=session, telegram_id=telegram_id, chat_id=telegram_id)
                for _ in range(2):
                    await turns.add_turn(session=session, user=user, role="coach", kind="coaching", text="Well done")
                user.last_active_at = datetime.now(UTC) - timedelta(hours=2)
                session.add(user)
        closed = await Sessions(db=db, allowed=frozenset({ANN})).close_quiet(quiet_s=1800)
        prompted = {c.speaker.telegram_id for c in closed if c.prompt is not None}
        assert prompted == {ANN} and len(closed) == 2
    finally:
        await db.dispose()


async def test_checkins_and_reviews_go_only_to_allowed_users(sqlite_url, gemini) -> None:
    """Ann and Bob both have a check-in and a weekly review due; with ALLOWED_USER_IDS naming Ann, a pass sends
    Ann both and Bob nothing (his are marked, not left claimed)."""
    from pipeline.settings import Settings

    due = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)  # a Sunday
    db = Database(sqlite_url)
    await db.migrate()
    async with db.session() as session:
        for telegram_id in (ANN, BOB):
            user = await users.get_or_create_user(session=session, telegram_id=telegram_id, chat_id=telegram_id)
            user.timezone = "UTC"
            session.add(user)
            for kind in ("checkin", "review"):
                await checkin_store.put_schedule(session=session, user_id=user.id or 0, kind=kind, local_time="07:00",
                                                 days=127, next_due_at=due)
    settings = Settings(_env_file=None, telegram_bot_token=TOKEN, gemini_api_key="k", opik_track_disable=True)
    llm = LLM(api_key="k", model="gemini-2.5-flash", base_url=gemini.url, timeout_s=5.0, backoff_s=0.01)
    steps = Steps(llm=llm, tracer=Tracer(settings), db=db, prices=(Decimal("0.3"), Decimal("2.5")))
    core = CheckinCore(db=db, steps=steps, clock=lambda: due, allowed=frozenset({ANN}))
    sent: list[tuple[int, str]] = []

    async def send(chat_id: int, telegram_id: int, replies: list[Reply], begin: Begin) -> bool:
        if not await begin():
            return False
        sent.extend((telegram_id, r.kind) for r in replies)
        return True

    try:
        await CheckinScheduler(dispatch=Dispatch(core), send=send, concurrency=4, batch=8).run_due(due)
        assert {telegram_id for telegram_id, _ in sent} == {ANN}
        assert {kind for _, kind in sent} >= {"checkin", "review"}
        async with db.session() as session:
            unfinished = await session.scalars(select(CheckinSend).where(
                CheckinSend.status.in_(checkin_store.OPEN)))  # type: ignore[attr-defined]
            assert unfinished.all() == []
    finally:
        await llm.aclose()
        await db.dispose()


async def test_an_export_is_built_in_bounded_memory(sqlite_url, tmp_path) -> None:
    """A user with 8,000 turns of 2,000 characters (a 17 MB export): /export's documents are written while Python's
    allocations peak at under a quarter of that (rows are read 500 at a time and never kept)."""
    import tracemalloc

    from pipeline.account import Account

    db = Database(sqlite_url)
    await db.migrate()
    try:
        async with db.session() as session:
            user = await users.get_or_create_user(session=session, telegram_id=ANN, chat_id=ANN)
        for start in range(0, 8000, 500):
            async with db.session() as session:
                session.add_all([Turn(user_id=user.id or 0, role="user", kind="coaching", text=f"{n:05d}" * 400)
                                 for n in range(start, start + 500)])
        account = Account(db=db, export_part_bytes=45_000_000)
        tracemalloc.start()
        try:
            replies = await account.export(Speaker(ANN, ANN), tmp_path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert replies[0].document is not None
        path = replies[0].document[1]
        assert isinstance(path, Path)
        size = path.stat().st_size
        assert size > 16_000_000
        assert peak < size / 4, f"peak {peak / 1e6:.1f} MB for an export of {size / 1e6:.1f} MB"
        assert len(json.loads(path.read_bytes())["turns"]) == 8000
    finally:
        await db.dispose()
