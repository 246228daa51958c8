"""/delete reaches Opik: the user's traces and threads are erased there (and nobody else's), an Opik outage keeps
the erasure until Opik confirms, a judge in flight writes nothing after the delete, and /export lists what Opik
holds next to the database's rows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from pipeline import prompts
from storage import users
from storage.models import Erasure, Judgement, LLMUsage, Turn, User
from tests.conftest import Harness, make_settings, start_bot, stop_bot
from tests.fakes import Fault, OpikStub

ANN = 9301
BOB = 9302
CAT = 9303


def traced_settings(bot_api: Any, gemini: Any, url: str, stub: OpikStub, **overrides: Any) -> Any:
    """Settings with tracing on against the stub and erasure passes a fraction of a second apart."""
    values: dict[str, Any] = {"opik_track_disable": False, "opik_url_override": stub.url, "opik_flush_timeout_s": 3,
                              "erasure_retry_s": 0.2, "erasure_settle_s": 0}
    values.update(overrides)
    return make_settings(bot_api, gemini, url, **values)


@pytest.fixture
async def traced(bot_api, gemini, database_url, opik_stub) -> AsyncIterator[Harness]:
    """A running bot with tracing on (SQLite or PostgreSQL), Opik pointed at the stub."""
    app = await start_bot(traced_settings(bot_api, gemini, database_url, opik_stub))
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


async def to_coaching(h: Harness, user_id: int) -> None:
    """Walk a user from /start to an accepted plan, then one coaching message."""
    h.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await h.say(user_id, "/start", expect=2)
    await h.say(user_id, "Run 5 km without stopping", expect=2)
    await h.press(user_id, h.bot_api.messages(user_id)[-1], "✅ Accept")
    await h.say(user_id, "I ran 2 km today")


async def until(predicate: Callable[[], Any], timeout: float = 15.0) -> None:
    """Poll an async predicate until it is true (a positive signal); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def user_row(h: Harness, telegram_id: int) -> User:
    async with h.services.db.session() as session:
        user = await users.get_user(session=session, telegram_id=telegram_id)
    assert user is not None
    return user


async def erasures(h: Harness) -> list[Erasure]:
    async with h.services.db.session() as session:
        return list((await session.scalars(select(Erasure))).all())


def held_by(stub: OpikStub, opaque_id: str, threads: set[str]) -> set[str]:
    """The ids of the traces the stub holds of one user (their opaque id in the metadata, or one of their threads)."""
    return {i for i, t in stub.traces_by_id().items()
            if (t.get("metadata") or {}).get("user") == opaque_id or t.get("thread_id") in threads}


async def threads_of(h: Harness, user: User) -> set[str]:
    async with h.services.db.session() as session:
        rows = await session.scalars(select(Turn.thread_id).where(Turn.user_id == user.id))
        return {t for t in rows.all() if t} | {user.thread_id}

async def traces_delivered(h: Harness, stub: OpikStub, telegram_id: int) -> None:
    """Flush the tracer, then wait until the stub holds the trace of every coach reply the user got (Opik's SDK
    sends on its own threads, and a loaded machine can outlast one flush's bound)."""
    await asyncio.to_thread(h.services.tracer.flush)
    user = await user_row(h, telegram_id)
    async with h.services.db.session() as session:
        rows = await session.scalars(select(Turn.trace_id).where(Turn.user_id == user.id, Turn.role == "coach"))
        wanted = {t for t in rows.all() if t}
    assert wanted, "the user got no traced coach reply"

    async def held() -> bool:
        return wanted <= set(stub.traces_by_id())

    await until(held)


async def delete(h: Harness, user_id: int) -> str:
    """/delete and Yes; the bot's answer."""
    ask = (await h.say(user_id, "/delete"))[0]
    return (await h.press(user_id, ask, "Yes, delete everything"))[0].text


async def test_delete_erases_exactly_the_users_traces_and_threads_in_opik(traced: Harness, opik_stub) -> None:
    """Ann and Bob chat with tracing on; Ann deletes: the stub is asked to delete every trace and thread of hers and
    nothing of Bob's, the erasure is confirmed, and the bot's words say the trace store copies are being erased."""
    h = traced
    await to_coaching(h, ANN)
    await to_coaching(h, BOB)
    await traces_delivered(h, opik_stub, ANN)
    await traces_delivered(h, opik_stub, BOB)
    ann, bob = await user_row(h, ANN), await user_row(h, BOB)
    ann_threads, bob_threads = await threads_of(h, ann), await threads_of(h, bob)
    ann_traces, bob_traces = held_by(opik_stub, ann.opaque_id, ann_threads), held_by(opik_stub, bob.opaque_id,
                                                                                     bob_threads)
    assert len(ann_traces) >= 2 and len(bob_traces) >= 2

    said = await delete(h, ANN)
    assert "deleted" in said and "being erased" in said

    async def confirmed() -> bool:
        rows = await erasures(h)
        return len(rows) == 1 and rows[0].done_at is not None

    await until(confirmed)
    assert set(opik_stub.trace_deletes) & (ann_traces | bob_traces) == ann_traces
    assert set(opik_stub.thread_deletes) & (ann_threads | bob_threads) == ann_threads
    assert held_by(opik_stub, ann.opaque_id, ann_threads) == set()
    assert held_by(opik_stub, bob.opaque_id, bob_threads) == bob_traces
    row = (await erasures(h))[0]
    assert row.opaque_id == ann.opaque_id and row.traces_deleted >= len(ann_traces) and row.trace_ids == []


async def test_opik_down_during_delete_keeps_the_erasure_until_it_is_back(bot_api, gemini, database_url,
                                                                         opik_stub) -> None:
    """Opik is down when Ann deletes: her rows are gone at once, the erasure row stays with its error and is
    retried; the bot restarts meanwhile, and once Opik is back the start-up pass erases her traces and confirms."""
    app = await start_bot(traced_settings(bot_api, gemini, database_url, opik_stub, opik_flush_timeout_s=1))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        await traces_delivered(h, opik_stub, ANN)
        ann = await user_row(h, ANN)
        threads = await threads_of(h, ann)
        held = held_by(opik_stub, ann.opaque_id, threads)
        assert held
        opik_stub.down = True
        assert "being erased" in await delete(h, ANN)
        async with h.services.db.session() as session:
            assert await users.get_user(session=session, telegram_id=ANN) is None

        async def failed_twice() -> bool:
            rows = await erasures(h)
            return len(rows) == 1 and rows[0].attempts >= 2 and rows[0].last_error is not None

        await until(failed_twice)
        assert (await erasures(h))[0].done_at is None
        assert not set(opik_stub.trace_deletes) & held
    finally:
        await stop_bot(app)
        opik_stub.down = False

    app = await start_bot(traced_settings(bot_api, gemini, database_url, opik_stub))
    h = Harness(app, bot_api, gemini)
    try:
        async def confirmed() -> bool:
            rows = await erasures(h)
            return rows[0].done_at is not None

        await until(confirmed, timeout=30)
        assert held <= set(opik_stub.trace_deletes)
        assert held_by(opik_stub, ann.opaque_id, threads) == set()
        assert (await erasures(h))[0].last_error is None
    finally:
        await stop_bot(app)


async def test_a_judge_in_flight_at_delete_writes_nothing_after_it(bot_api, gemini, sqlite_url, opik_stub) -> None:
    """The judge is scoring Ann's coaching reply and her session (Gemini takes 2 s) when she deletes and Cat arrives
    (on SQLite Cat gets Ann's old row id): no judgement or usage row lands on that id, no score reaches Opik for her
    reply or her thread, and the judge's own traces are found and erased by a later pass."""
    settings = traced_settings(bot_api, gemini, sqlite_url, opik_stub, judge_enabled=True, judge_sample_rate=1.0,
                               erasure_settle_s=4)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        await h.services.drain()
        ann = await user_row(h, ANN)

        def slow_judge(request: Any) -> Any:
            return Fault.hang(2.0) if "strict evaluator" in request.system else None

        def judge_calls() -> int:
            return sum("strict evaluator" in r.system for r in gemini.requests)

        gemini.responder = slow_judge
        judged_before = judge_calls()
        await h.say(ANN, "Ran 3 km, felt good")  # its reply is judged in the background
        h.services.background(h.services.judge.judge_thread(ann.id or 0, ann.thread_id))  # as a quiet session is
        async with h.services.db.session() as session:
            reply_trace = (await session.scalars(select(Turn.trace_id).where(Turn.kind == "coaching")
                                                 .order_by(Turn.id.desc()))).first()  # type: ignore[union-attr]
        await bot_api.wait_for(lambda: judge_calls() >= judged_before + 2)
        await delete(h, ANN)
        await h.say(CAT, "/start", expect=2)
        assert (await user_row(h, CAT)).id == ann.id  # SQLite hands the freed id to the next user
        await h.services.drain(timeout_s=10)
        async with h.services.db.session() as session:
            assert (await session.scalars(select(Judgement).where(Judgement.user_id == ann.id))).all() == []
            assert (await session.scalars(select(LLMUsage).where(LLMUsage.user_id == ann.id))).all() == []
        assert not [s for s in opik_stub.feedback_scores if s.get("id") == reply_trace]
        assert not [s for s in opik_stub.thread_feedback_scores if s.get("thread_id") == ann.thread_id]

        async def confirmed() -> bool:
            rows = [e for e in await erasures(h) if e.opaque_id == ann.opaque_id]
            return bool(rows) and rows[0].done_at is not None

        await until(confirmed, timeout=30)
        judge_traces = [t for t in opik_stub.traces_by_id().values() if str(t.get("name", "")).startswith("judge.")
                        and (t.get("metadata") or {}).get("user") == ann.opaque_id]
        assert judge_traces == []
    finally:
        gemini.responder = None
        await stop_bot(app)


async def test_export_lists_the_trace_and_thread_ids_opik_holds(traced: Harness, opik_stub) -> None:
    """/export has an "opik" section: the user's threads and every trace id Opik holds of them (the coach's
    replies' traces among them), next to the database's rows."""
    h = traced
    await to_coaching(h, ANN)
    await traces_delivered(h, opik_stub, ANN)
    ann = await user_row(h, ANN)
    sent = (await h.say(ANN, "/export"))[0]
    data = json.loads(sent.file or b"")
    assert data["opik"]["reachable"] is True and ann.thread_id in data["opik"]["threads"]
    listed = {t["id"] for t in data["opik_traces"]}
    assert listed == held_by(opik_stub, ann.opaque_id, await threads_of(h, ann))
    coach_traces = {t["trace_id"] for t in data["turns"] if t["role"] == "coach" and t["trace_id"]}
    assert coach_traces and coach_traces <= listed


async def test_judge_traces_carry_the_users_opaque_id(bot_api, gemini, sqlite_url, opik_stub) -> None:
    """The judge's own traces name the user's opaque id in their metadata, so /delete can find them in Opik."""
    settings = traced_settings(bot_api, gemini, sqlite_url, opik_stub, judge_enabled=True, judge_sample_rate=1.0)
    app = await start_bot(settings)
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        await h.services.drain()
        await asyncio.to_thread(h.services.tracer.flush)
        ann = await user_row(h, ANN)

        async def judged() -> bool:
            return any(str(t.get("name", "")).startswith("judge.") and (t.get("metadata") or {}).get("user")
                       == ann.opaque_id for t in opik_stub.traces_by_id().values())

        await until(judged)
        assert prompts.JUDGE_REPLY.name
    finally:
        await stop_bot(app)


async def test_the_tracer_finds_and_deletes_a_users_traces_and_fails_loudly_while_erasure_is_down(opik_stub) -> None:
    """Against the stub: the opaque id and thread searches find the user's traces (not another user's); with the
    stub's erasure routes down, the search raises at once (so the pass keeps the erasure); back up, the delete
    removes them and their thread."""
    import uuid

    import opik
    from opik.rest_api.core import ApiError

    from pipeline.settings import Settings
    from pipeline.tracing import Tracer
    from tests.conftest import TOKEN

    tracer = Tracer(Settings(_env_file=None, telegram_bot_token=TOKEN, gemini_api_key="k",
                             opik_url_override=opik_stub.url, opik_project_name="rein-erasure"))
    mine, other = uuid.uuid4().hex, uuid.uuid4().hex
    thread = f"{mine[:12]}-{uuid.uuid4().hex[:12]}"
    client = opik.Opik(project_name="rein-erasure")
    named = client.trace(name="coach.coaching", metadata={"user": mine}, thread_id=thread)
    in_thread = client.trace(name="external", metadata={}, thread_id=thread)
    theirs = client.trace(name="coach.coaching", metadata={"user": other}, thread_id=f"{other[:12]}-x")
    await asyncio.to_thread(client.flush)
    found = await asyncio.to_thread(tracer.user_traces, mine, [thread])
    assert found == {named.id: thread, in_thread.id: thread}

    opik_stub.erasure_down = True
    try:
        with pytest.raises(ApiError):
            await asyncio.to_thread(tracer.user_traces, mine, [thread])
    finally:
        opik_stub.erasure_down = False
    await asyncio.to_thread(tracer.delete_traces, sorted(found), [thread])
    assert await asyncio.to_thread(tracer.user_traces, mine, [thread]) == {}
    assert theirs.id in opik_stub.traces_by_id() and thread in opik_stub.thread_deletes


async def test_export_with_opik_unreachable_says_so_and_lists_what_the_rows_name(traced: Harness, opik_stub) -> None:
    """With Opik's search failing, /export still arrives: its "opik" section says Opik was not reachable and lists
    the user's threads and the trace ids their rows name."""
    h = traced
    await to_coaching(h, ANN)
    ann = await user_row(h, ANN)
    opik_stub.erasure_down = True
    try:
        sent = (await h.say(ANN, "/export"))[0]
    finally:
        opik_stub.erasure_down = False
    data = json.loads(sent.file or b"")
    assert data["opik"]["reachable"] is False and ann.thread_id in data["opik"]["threads"]
    coach_traces = {t["trace_id"] for t in data["turns"] if t["role"] == "coach" and t["trace_id"]}
    assert coach_traces and coach_traces <= set(data["opik"]["traces_named_in_rows"])
