"""Upgrading: a database at the first release's schema (0001) holding data reaches head without losing rows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, select, text

from storage.db import Database, alembic_config, sync_url, upgrade
from storage.models import Goal, Rating, Turn, User

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


def _head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db")).get_current_head()
    assert head is not None
    return head


def _fill_release_0001(url: str) -> None:
    """Rows as the 0001 release wrote them (its columns only)."""
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO users (id, telegram_id, chat_id, opaque_id, language_code, stage, active_goal_id, "
            "clarify_rounds, summary, summary_upto_turn_id, thread_id, timezone, blocked, pending_rating_id, "
            "created_at, last_active_at) VALUES (1, 4200000001, 4200000001, 'u-1', 'en', 'coaching', 1, 2, "
            "'summary so far', 0, 'thread-1', NULL, false, NULL, :now, :now)"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO goals (id, user_id, text, status, clarifications, created_at) "
            "VALUES (1, 1, 'Run 5 km', 'active', '[]', :now)"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO turns (id, user_id, goal_id, role, kind, text, trace_id, answered, created_at) VALUES "
            "(1, 1, 1, 'user', 'message', 'I ran 3 km', NULL, true, :now), "
            "(2, 1, 1, 'coach', 'coaching', 'Well done', 'trace-2', false, :now)"), {"now": NOW})
        conn.execute(text(
            "INSERT INTO ratings (id, user_id, turn_id, value, reason, reason_asked, synced, created_at, updated_at) "
            "VALUES (1, 1, 2, 5, NULL, false, true, :now, :now)"), {"now": NOW})
        if engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them, as the app would
            for table in ("users", "goals", "turns", "ratings"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 10)"))
    engine.dispose()


def _version(url: str) -> str:
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        version = conn.scalar(text("SELECT version_num FROM alembic_version"))
    engine.dispose()
    return str(version)


async def test_upgrade_from_release_0001_keeps_the_data(database_url: str) -> None:
    """`alembic upgrade head` (what `make migrate` runs) brings a 0001 database with data to head, rows intact."""
    upgrade(database_url, "0001")
    _fill_release_0001(database_url)
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT,
                                     env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert _version(database_url) == _head()

    db = Database(database_url)
    try:
        async with db.session() as session:
            user = (await session.scalars(select(User))).one()
            assert (user.telegram_id, user.stage, user.summary, user.thread_id) == (4200000001, "coaching",
                                                                                    "summary so far", "thread-1")
            assert user.thread_closed is False and user.created_at == NOW
            assert [t.text for t in (await session.scalars(select(Turn).order_by(Turn.id))).all()] == [
                "I ran 3 km", "Well done"]
            assert (await session.scalars(select(Goal))).one().text == "Run 5 km"
            assert (await session.scalars(select(Rating))).one().value == 5
            session.add(Turn(user_id=user.id or 0, goal_id=1, role="user", kind="message", text="after the upgrade"))
        await db.migrate()  # start-up on a current schema changes nothing
        assert _version(database_url) == _head()
    finally:
        await db.dispose()


async def test_start_up_migrates_a_database_that_is_behind(database_url: str) -> None:
    """Database.migrate (run at every start) upgrades a 0001 database to head by itself."""
    upgrade(database_url, "0001")
    _fill_release_0001(database_url)
    db = Database(database_url)
    try:
        await db.migrate()
        assert _version(database_url) == _head()
        async with db.session() as session:
            assert (await session.scalars(select(User))).one().opaque_id == "u-1"
    finally:
        await db.dispose()
