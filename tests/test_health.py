"""Health and metrics on their own server: the webhook port serves only the webhook, and a flood of /readyz costs
one check at a time, on connections of its own, cached for READYZ_CACHE_S."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from bot.webhook import Runner, make_runner
from tests.fakes import FakeBotAPI, FakeGemini
from tests.test_webhook import webhook_settings


class Checkouts:
    """Connections an engine hands out: how many now, the most at once, and in all."""

    def __init__(self, engine: Any) -> None:
        self.now = self.peak = self.total = 0
        event.listen(engine.sync_engine, "checkout", self._out)
        event.listen(engine.sync_engine, "checkin", self._in)

    def _out(self, *_: Any) -> None:
        self.now += 1
        self.total += 1
        self.peak = max(self.peak, self.now)

    def _in(self, *_: Any) -> None:
        self.now -= 1


@contextlib.asynccontextmanager
async def running(bot_api: FakeBotAPI, gemini: FakeGemini, database_url: str, **overrides: Any
                  ) -> AsyncIterator[Runner]:
    """A bot in webhook mode with these settings, stopped afterwards."""
    runner = make_runner(webhook_settings(bot_api, gemini, database_url, **overrides))
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


def health(runner: Runner, path: str) -> str:
    """A URL on the health server."""
    return f"http://127.0.0.1:{runner.health_port}{path}"


async def test_the_webhook_port_serves_only_the_webhook(bot_api, gemini, sqlite_url) -> None:
    """/healthz, /readyz and /metrics answer on HEALTH_PORT; on the webhook's port they are not found."""
    async with running(bot_api, gemini, sqlite_url) as runner:
        await _only_the_webhook(runner)


async def _only_the_webhook(runner: Runner) -> None:
    assert runner.port and runner.health_port and runner.port != runner.health_port
    async with httpx.AsyncClient() as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(f"http://127.0.0.1:{runner.port}{path}")).status_code == 404, path
            assert (await client.get(health(runner, path))).status_code == 200, path
        assert (await client.get(f"http://127.0.0.1:{runner.health_port}{runner.path}")).status_code == 404


async def test_a_readyz_flood_runs_one_check_on_its_own_connections(bot_api, gemini, database_url) -> None:
    """200 concurrent /readyz while getMe is slow: one database check and one getMe, none from the turns' pool."""
    async with running(bot_api, gemini, database_url, readyz_cache_s=5.0) as runner:
        await _flood(runner, bot_api)


async def _flood(runner: Runner, bot_api: FakeBotAPI) -> None:
    svc = runner.app.bot_data.services
    assert svc is not None
    probe, turns_pool = Checkouts(runner.health.readiness.engine), Checkouts(svc.db.engine)
    assert runner.health.readiness.bot is not runner.app.bot, "getMe never goes through the reply client"
    bot_api.delays["getMe"] = 0.5
    getme_before = len(bot_api.calls_to("getMe"))
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200), timeout=30) as client:
        answers = await asyncio.gather(*(client.get(health(runner, "/readyz")) for _ in range(200)))
    # One check answered them all (200 normally; 503 if a loaded machine made it exceed its 3 s, for all alike).
    assert len({(a.status_code, a.text) for a in answers}) == 1 and answers[0].status_code in (200, 503)
    assert len(bot_api.calls_to("getMe")) - getme_before == 1 and bot_api.peak_in_flight["getMe"] == 1
    assert (probe.total, probe.peak) == (1, 1), "one database check for the whole flood"
    assert turns_pool.total == 0, "no connection taken from the pool turns use"


async def test_readyz_answers_from_its_cache_until_it_expires(bot_api, gemini, database_url) -> None:
    """A failing getMe is reported for READYZ_CACHE_S without asking again; after that a new check says ready."""
    async with running(bot_api, gemini, database_url, readyz_cache_s=1.0) as runner:
        await _cache_expiry(runner, bot_api)


async def _cache_expiry(runner: Runner, bot_api: FakeBotAPI) -> None:
    probe = Checkouts(runner.health.readiness.engine)
    getme = len(bot_api.calls_to("getMe"))
    bot_api.fail_next("getMe", 502, "Bad Gateway")
    async with httpx.AsyncClient(timeout=30) as client:
        first = await client.get(health(runner, "/readyz"))
        cached = await client.get(health(runner, "/readyz"))
        assert first.status_code == cached.status_code == 503
        assert cached.json() == {"database": "ok", "telegram": "failing"}
        assert len(bot_api.calls_to("getMe")) - getme == 1 and probe.total == 1, "the second answer was cached"
        await asyncio.sleep(1.1)  # let the cache expire
        fresh = await client.get(health(runner, "/readyz"))
    assert fresh.status_code == 200 and fresh.json() == {"database": "ok", "telegram": "ok"}
    assert len(bot_api.calls_to("getMe")) - getme == 2 and probe.total == 2


async def test_readyz_says_stopping_while_the_bot_stops(bot_api: FakeBotAPI, gemini: FakeGemini,
                                                        sqlite_url: str) -> None:
    """During a stop the health server still answers, /readyz with 503 "stopping", until the stop is done."""
    runner = make_runner(webhook_settings(bot_api, gemini, sqlite_url))
    await runner.start()
    url = health(runner, "/readyz")
    stopping = asyncio.create_task(runner.stop())
    try:
        await asyncio.sleep(0)  # the stop has begun
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.get(url)
        assert answer.status_code == 503 and answer.json()["state"] == "stopping"
    finally:
        await stopping
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)
