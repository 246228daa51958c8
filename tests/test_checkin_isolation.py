"""A check-in pass isolates its items: one user's /delete, a poison item or a failed send costs nobody else a
check-in, and no claim is left unfinished."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from pipeline.checkins.core import CheckinCore
from pipeline.checkins.dispatch import Dispatch
from pipeline.checkins.scheduler import Begin, CheckinScheduler
from pipeline.llm import LLM
from pipeline.replies import Reply
from pipeline.steps import Steps
from pipeline.tracing import Tracer
from storage import account, users
from storage import checkins as store
from storage.db import Database
from storage.models import CheckinSend, User
from tests.conftest import TOKEN, Harness, make_settings, start_bot, stop_bot
from tests.fakes.gemini import FakeGemini

DUE = datetime(2026, 11, 29, 8, 0, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)
FIRST = 8100


async def open_sends(db: Database) -> list[CheckinSend]:
    """Sends no pass finished (claimed, drafted or sending)."""
    async with db.session() as session:
        rows = (await session.scalars(select(CheckinSend).where(CheckinSend.status.in_(store.OPEN)))).all()  # type: ignore[attr-defined]
    return list(rows)


# ----- over the loopback servers ------------------------------------------------------------------------


@pytest.fixture
async def six(bot_api, gemini, sqlite_url) -> AsyncIterator[Harness]:
    """A running bot (scheduler timer off) with six users whose check-in falls due in the same minute."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url, checkin_scheduler=False))
    h = Harness(app, bot_api, gemini)
    h.services.checkins.core.clock = lambda: DUE - timedelta(hours=20)
    for user in range(FIRST, FIRST + 6):
        await h.say(user, "/timezone Europe/Berlin")
        await h.say(user, "/checkin 08:00")
    h.services.checkins.core.clock = lambda: DUE
    yield h
    await stop_bot(app)


async def test_a_delete_during_a_pass_costs_the_others_nothing(six: Harness) -> None:
    """Six users due in one minute; one deletes while Gemini writes the check-ins (1 s a call): the other five get
    exactly one each, the deleted user none, and no claim is left open."""
    h = six
    scheduler = h.services.checkins.scheduler
    assert scheduler is not None
    h.gemini.latency = 1.0
    asked = len(h.gemini.requests)
    passing = asyncio.create_task(scheduler.run_due(DUE + timedelta(seconds=20)))
    await h.bot_api.wait_for(lambda: len(h.gemini.requests) - asked == 6, timeout=10)  # all six being written
    leaver = FIRST + 2
    question = (await h.say(leaver, "/delete"))[0]
    assert "deleted" in (await h.press(leaver, question, "Yes, delete everything"))[0].text
    stats = await passing
    assert (stats.sent, stats.gone, stats.failed) == (5, 1, 0)
    for user in range(FIRST, FIRST + 6):
        checkins = [m for m in h.bot_api.messages(user) if any("Snooze" in label for label, _ in m.buttons())]
        assert len(checkins) == (0 if user == leaver else 1), user
    assert await open_sends(h.services.db) == []
    async with h.services.db.session() as session:
        assert await users.get_user(session=session, telegram_id=leaver) is None


# ----- the pipeline alone, on both databases -------------------------------------------------------------


@dataclass
class Pass:
    """Check-in dispatch over a real database and the loopback Gemini, with a recording sender."""

    db: Database
    dispatch: Dispatch
    scheduler: CheckinScheduler
    delivered: Counter[int]
    llm: LLM


async def make_pass(url: str, gemini: FakeGemini, count: int, *, poison_send: int | None = None) -> Pass:
    """`count` users due at DUE; the sender raises for `poison_send`."""
    db = Database(url)
    await db.migrate()
    async with db.session() as session:
        for n in range(count):
            user = await users.get_or_create_user(session=session, telegram_id=FIRST + n, chat_id=FIRST + n)
            user.timezone = "Europe/Berlin"
            session.add(user)
            await store.put_schedule(session=session, user_id=user.id or 0, kind="checkin", local_time="08:00",
                                     days=127, next_due_at=DUE)
    settings = make_settings_plain()
    llm = LLM(api_key="test-gemini-key", model="gemini-2.5-flash", base_url=gemini.url, timeout_s=5.0, backoff_s=0.01)
    steps = Steps(llm=llm, tracer=Tracer(settings), db=db, prices=(Decimal("0.3"), Decimal("2.5")))
    dispatch = Dispatch(CheckinCore(db=db, steps=steps, clock=lambda: DUE))
    delivered: Counter[int] = Counter()

    async def send(chat_id: int, telegram_id: int, replies: list[Reply], begin: Begin) -> bool:
        if not await begin():
            return False
        if telegram_id == poison_send:
            raise RuntimeError("a send that blows up")
        delivered[telegram_id] += 1
        return True

    scheduler = CheckinScheduler(dispatch=dispatch, send=send, concurrency=16, batch=16)
    return Pass(db, dispatch, scheduler, delivered, llm)


def make_settings_plain() -> Any:
    """Settings with tracing off (only the Tracer reads them here)."""
    from pipeline.settings import Settings

    return Settings(_env_file=None, telegram_bot_token=TOKEN, gemini_api_key="k", opik_track_disable=True)


async def close(p: Pass) -> None:
    """Release the pass's connections."""
    await p.llm.aclose()
    await p.db.dispose()


async def test_forty_users_one_deletes_mid_pass_thirty_nine_get_theirs(database_url: str, gemini: FakeGemini) -> None:
    """40 users due at once (batches of 16); one is deleted while the check-ins are written: 39 sends, each user
    exactly one, the deleted user none, nothing left claimed."""
    p = await make_pass(database_url, gemini, 40)
    try:
        gemini.latency = 0.5
        writing = asyncio.Event()
        seen: list[Any] = []

        def count(request: Any) -> None:  # answers as usual; says when ten check-ins are being written
            seen.append(request)
            if len(seen) == 10:
                writing.set()

        gemini.responder = count
        passing = asyncio.create_task(p.scheduler.run_due(DUE + timedelta(seconds=20)))
        await asyncio.wait_for(writing.wait(), timeout=10)
        leaver = FIRST + 5  # in the first batch: being written right now
        async with p.db.session() as session:
            user = await users.get_user(session=session, telegram_id=leaver)
            assert user is not None
            await account.delete_user(session=session, user=user)
        stats = await passing
        assert (stats.sent, stats.gone, stats.failed) == (39, 1, 0)
        assert leaver not in p.delivered and set(p.delivered.values()) == {1} and len(p.delivered) == 39
        assert await open_sends(p.db) == []
    finally:
        await close(p)


async def test_a_poison_item_fails_alone(database_url: str, gemini: FakeGemini) -> None:
    """A user whose zone no longer exists (the claim raises) and a send that raises end as failed, with why; the
    other users get their check-in, and the failed send is not left open."""
    p = await make_pass(database_url, gemini, 8, poison_send=FIRST + 3)
    try:
        async with p.db.session() as session:
            await session.execute(update(User).where(User.telegram_id == FIRST + 6).values(timezone="Nowhere/Atlantis"))  # type: ignore[arg-type]
        stats = await p.scheduler.run_due(DUE + timedelta(seconds=20))
        assert stats.sent == 6 and stats.failed == 2
        assert sorted(p.delivered) == [FIRST + n for n in (0, 1, 2, 4, 5, 7)]
        async with p.db.session() as session:
            failed = (await session.scalars(select(CheckinSend).where(CheckinSend.status == "failed"))).all()
        assert [(s.user_id is not None, s.reason) for s in failed] == [(True, "send: RuntimeError")]
        assert await open_sends(p.db) == []
        again = await p.scheduler.run_due(DUE + timedelta(minutes=1))
        assert again.sent == 0 and sum(p.delivered.values()) == 6, "nothing is sent twice"
    finally:
        await close(p)
