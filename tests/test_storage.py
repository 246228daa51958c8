"""Storage on SQLite and PostgreSQL: migrations, repository functions, deletion and export."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import inspect, select

from storage import account, goals, turns, users
from storage.db import Database, sync_url
from storage.models import Goal, Milestone, Plan, Resolution, Turn, User


@pytest.fixture
async def db(database_url: str):
    """A migrated database."""
    database = Database(database_url)
    await database.migrate()
    yield database
    await database.dispose()


async def test_migrations_create_every_table(db: Database) -> None:
    """Alembic's head revision creates all of Rein's tables."""
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"users", "goals", "resolutions", "plans", "milestones", "turns", "ratings", "alembic_version"} <= tables


async def test_user_is_created_once_with_an_opaque_id(db: Database) -> None:
    """get_or_create_user returns the same row on the second call, with an opaque id and a thread id."""
    async with db.session() as session:
        first = await users.get_or_create_user(session=session, telegram_id=42, chat_id=42, language_code="de")
    async with db.session() as session:
        again = await users.get_or_create_user(session=session, telegram_id=42, chat_id=42)
    assert first.id == again.id
    assert len(first.opaque_id) == 32 and "42" not in first.thread_id[:2]
    assert again.language_code == "de"


async def test_timestamps_round_trip_as_aware_utc(db: Database) -> None:
    """Stored timestamps come back timezone-aware."""
    async with db.session() as session:
        user = await users.get_or_create_user(session=session, telegram_id=7, chat_id=7)
        user_id = user.id
    async with db.session() as session:
        user = (await session.scalars(select(User).where(User.id == user_id))).one()
    assert user.created_at.tzinfo is not None
    assert abs(user.created_at - datetime.now(UTC)).total_seconds() < 60


async def _user_with_plan(db: Database, telegram_id: int) -> tuple[int, int]:
    async with db.session() as session:
        user = await users.get_or_create_user(session=session, telegram_id=telegram_id, chat_id=telegram_id)
        goal = await goals.create_goal(session=session, user=user, text="Run 10 km")
        resolution = await goals.save_resolution(session=session, goal=goal, fields={
            "statement": "Run 10 km by June", "why": "health", "metric": "10 km in one run",
            "deadline": date(2027, 6, 1), "strategy": "build up slowly"})
        plan = await goals.save_plan(session=session, goal=goal, resolution=resolution, summary="s",
                                    phases=[{"name": "Base"}], milestones=[("5 km", date(2027, 2, 1), "5 km")],
                                    trace_id="t1")
        await turns.add_turn(session=session, user=user, role="user", kind="goal", text="Run 10 km")
        assert user.id is not None and plan.id is not None
        return user.id, plan.id


async def test_plans_are_versioned_and_drafts_superseded(db: Database) -> None:
    """A second plan for the goal is version 2 and supersedes the earlier draft; accepting marks it."""
    user_id, first_id = await _user_with_plan(db, 1)
    async with db.session() as session:
        goal = (await session.scalars(select(Goal))).one()
        second = await goals.save_plan(session=session, goal=goal, resolution=None, summary="v2", phases=[],
                                      milestones=[], trace_id=None)
        await goals.accept_plan(session=session, plan=second)
    async with db.session() as session:
        plans = (await session.scalars(select(Plan).order_by(Plan.id))).all()
        assert [(p.version, p.status) for p in plans] == [(1, "superseded"), (2, "accepted")]
        assert await goals.get_plan(session=session, plan_id=first_id, user_id=user_id + 1000) is None


async def test_delete_user_removes_every_row_and_only_theirs(db: Database) -> None:
    """delete_user erases the user's goals, plans, milestones, turns and ratings and leaves others alone."""
    await _user_with_plan(db, 1)
    await _user_with_plan(db, 2)
    async with db.session() as session:
        user = await users.get_user(session=session, telegram_id=1)
        assert user is not None
        await account.delete_user(session=session, user=user)
    async with db.session() as session:
        assert await users.get_user(session=session, telegram_id=1) is None
        for model in (Goal, Plan, Milestone, Turn, Resolution):
            assert len((await session.scalars(select(model))).all()) == 1, model.__name__


async def test_export_contains_everything_about_the_user(db: Database) -> None:
    """export_user returns the user's goals, resolution, plan, milestones and turns as JSON-ready data."""
    await _user_with_plan(db, 1)
    async with db.session() as session:
        user = await users.get_user(session=session, telegram_id=1)
        assert user is not None
        data = await account.export_user(session=session, user=user)
    assert data["goals"][0]["text"] == "Run 10 km"
    assert data["resolutions"][0]["deadline"] == "2027-06-01"
    assert data["milestones"][0]["title"] == "5 km"
    assert data["turns"][0]["text"] == "Run 10 km"


async def test_recent_turns_are_bounded_and_in_order(db: Database) -> None:
    """recent_turns returns the last N turns oldest first; turns_between reads a bounded slice in order."""
    async with db.session() as session:
        user = await users.get_or_create_user(session=session, telegram_id=5, chat_id=5)
        for i in range(30):
            await turns.add_turn(session=session, user=user, role="user", kind="coaching", text=f"m{i}")
    async with db.session() as session:
        recent = await turns.recent_turns(session=session, user_id=user.id or 0, limit=5)
        assert [t.text for t in recent] == ["m25", "m26", "m27", "m28", "m29"]
        older = await turns.turns_between(session=session, user_id=user.id or 0, after_id=0,
                                          before_id=recent[0].id or 0, limit=3)
        assert [t.text for t in older] == ["m0", "m1", "m2"]


def test_sync_url_maps_async_drivers() -> None:
    """Alembic and job stores get synchronous driver URLs for both databases."""
    assert sync_url("sqlite+aiosqlite:///./data/rein.db") == "sqlite:///./data/rein.db"
    assert sync_url("postgresql+asyncpg://u:p@h:5432/d") == "postgresql+psycopg://u:p@h:5432/d"


async def test_migrations_match_the_models(db: Database) -> None:
    """After `upgrade head` the schema has nothing the models lack and lacks nothing they have."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
        return list(compare_metadata(context, SQLModel.metadata))

    async with db.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []
