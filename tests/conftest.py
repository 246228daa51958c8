"""Shared fixtures: loopback Bot API, Gemini and Opik servers, databases, and a running bot."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

# Opik must never reach the internet or spend seconds at exit: telemetry off before anything imports it.
os.environ["OPIK_SENTRY_ENABLE"] = "false"
os.environ["OPIK_ANALYTICS_ENABLE"] = "false"
os.environ.setdefault("OPIK_PROJECT_NAME", "rein-test")
for _name in ("TELEGRAM_BOT_TOKEN", "GEMINI_API_KEY", "DATABASE_URL", "OPIK_API_KEY", "OPIK_WORKSPACE"):
    os.environ.pop(_name, None)

from bot.app import build_application  # noqa: E402
from bot.services import Services  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from tests.fakes import FakeBotAPI, FakeGemini, OpikStub  # noqa: E402

TOKEN = "123456:TEST-token-abcdefghijklmnopqrstuvwxyz"
PG_ADMIN_URL = os.environ.get("REIN_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def opik_stub() -> Iterator[OpikStub]:
    """One Opik stand-in for the whole run, in its own thread; Opik's SDK points at it."""
    stub = OpikStub()
    stub.start_in_thread()
    os.environ["OPIK_URL_OVERRIDE"] = stub.url
    yield stub
    stub.stop_thread()


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotAPI]:
    """The loopback Bot API server; a test fails if the bot broke any of Telegram's rules."""
    server = FakeBotAPI(TOKEN)
    await server.start()
    yield server
    await server.stop()
    assert server.errors == [], f"the bot broke Telegram's rules: {server.errors}"


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    """The loopback Gemini server."""
    server = FakeGemini()
    await server.start()
    yield server
    await server.stop()


async def create_pg_database() -> tuple[str, str]:
    import asyncpg

    name = f"rein_t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_pg_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database on the local server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/rein.db"
        return
    name, url = await create_pg_database()
    yield url
    await drop_pg_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A SQLite database file in the test's own folder."""
    return f"sqlite+aiosqlite:///{tmp_path}/rein.db"


def make_settings(bot_api: FakeBotAPI, gemini: FakeGemini, database_url: str, **overrides: Any) -> Settings:
    """Settings pointing at the loopback servers, with fast retries."""
    values: dict[str, Any] = {
        "telegram_bot_token": TOKEN,
        "telegram_api_url": bot_api.url,
        "gemini_api_key": "test-gemini-key",
        "gemini_base_url": gemini.url,
        "gemini_timeout_s": 3.0,
        "gemini_backoff_s": 0.01,
        "database_url": database_url,
        "opik_track_disable": True,
        "judge_enabled": False,
        "safety_classifier": False,  # layer 2 adds a Gemini call per text: on in the tests that pin it
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Harness:
    """A running bot plus the servers around it, with helpers to act as users."""

    app: Any
    bot_api: FakeBotAPI
    gemini: FakeGemini
    created_before: int = 0  # updates produced before this bot started (another bot handled them)

    @property
    def services(self) -> Services:
        """The bot's services."""
        services = self.app.bot_data.services
        assert services is not None
        return services

    async def settled(self, timeout: float = 10.0) -> None:
        """Every update users have produced so far has been handled by the bot: a positive signal (the bot's
        count of handled updates), never a fixed sleep; after it, "the bot sent nothing more" means something."""
        order = self.app.update_processor
        await order.wait_processed(self.bot_api.updates_created - self.created_before, timeout)

    async def say(self, user_id: int, text: str, *, expect: int = 1, timeout: float = 10.0, **kw: Any) -> list[Any]:
        """Send text as a user; wait for `expect` new bot messages in that chat and return them."""
        before = len(self.bot_api.messages(user_id))
        self.bot_api.user_sends(user_id, text, **kw)
        await self.bot_api.wait_messages(user_id, before + expect, timeout=timeout)
        return self.bot_api.messages(user_id)[before:]

    async def press(self, user_id: int, message: Any, label_prefix: str, *, expect: int = 1,
                    timeout: float = 10.0) -> list[Any]:
        """Press the button whose label starts with `label_prefix` on a bot message."""
        data = next(d for label, d in message.buttons() if label.startswith(label_prefix))
        before = len(self.bot_api.messages(user_id))
        self.bot_api.user_presses(user_id, message.message_id, data)
        await self.bot_api.wait_messages(user_id, before + expect, timeout=timeout)
        return self.bot_api.messages(user_id)[before:]


async def start_bot(settings: Settings) -> Any:
    """Build and start the real Application, polling the loopback Bot API."""
    app = build_application(settings)
    await app.initialize()
    assert app.post_init is not None
    await app.post_init(app)
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    return app


async def stop_bot(app: Any) -> None:
    """Stop polling, the application, and close its services."""
    if app.updater is not None and app.updater.running:
        await app.updater.stop()
    if app.running:
        await app.stop()
    if app.post_shutdown is not None:
        await app.post_shutdown(app)
    await app.shutdown()


@pytest.fixture
async def harness(bot_api: FakeBotAPI, gemini: FakeGemini, sqlite_url: str) -> AsyncIterator[Harness]:
    """A running bot on SQLite against the loopback servers."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url))
    yield Harness(app, bot_api, gemini)
    await stop_bot(app)


class Clock:
    """A clock a test moves by hand (the check-ins' `clock`)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def user_snapshot(h: Harness, user_id: int) -> dict[str, Any]:
    """Everything stored about a user (their /export), minus the activity timestamp that any press moves."""
    from storage import account, users

    async with h.services.db.session() as session:
        user = await users.get_user(session=session, telegram_id=user_id)
        assert user is not None
        data = await account.export_user(session=session, user=user)
    data["user"].pop("last_active_at", None)
    return data
