"""A whole webhook-mode run's log, every logger included (uvicorn's too), holds none of the secrets."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.logs import REDACTED, configure, database_password, settings_secrets
from bot.webhook import SECRET_HEADER, make_runner
from tests.conftest import TOKEN, Harness, create_pg_database, drop_pg_database
from tests.fakes import FakeBotAPI, FakeGemini, Fault
from tests.test_faults import to_coaching
from tests.test_webhook import SECRET, TelegramDelivery, webhook_settings

ANN = 4242_0001
GEMINI_KEY = "AIzaSy-logs-gemini-key-0123456789abcdef"
OPIK_KEY = "opik-logs-key-9f8e7d6c5b4a3210"
DB_PASSWORD = "db-Pass_w0rd-7c1e9a"


@pytest.fixture
async def pg_with_password() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, its URL carrying a password (the local server trusts loopback, so any works)."""
    name, url = await create_pg_database()
    yield url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1)
    await drop_pg_database(name)


@pytest.mark.postgres
async def test_a_whole_webhook_run_logs_no_secret(bot_api: FakeBotAPI, gemini: FakeGemini, opik_stub,
                                                  pg_with_password: str) -> None:
    """Root at DEBUG for a run with faults, refused and malformed requests and readiness checks: Rein's log has
    uvicorn's lines in Rein's format and no token, key, webhook secret or database password."""
    settings = webhook_settings(bot_api, gemini, pg_with_password, gemini_api_key=GEMINI_KEY, opik_api_key=OPIK_KEY,
                                opik_track_disable=False, opik_url_override=opik_stub.url, opik_flush_timeout_s=3,
                                readyz_cache_s=0)
    assert database_password(settings.database_url) == DB_PASSWORD
    secrets = [TOKEN, TOKEN.split(":")[1], GEMINI_KEY, OPIK_KEY, SECRET, DB_PASSWORD]
    out, raw = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = configure("DEBUG", settings_secrets(settings), stream=out)
    raw_handler = logging.StreamHandler(raw)
    root.handlers.insert(0, raw_handler)  # before Rein's handler: sees every record before redaction
    runner = make_runner(settings)
    try:
        await runner.start()
        delivery = TelegramDelivery(bot_api, [runner.url])
        await delivery.start()
        try:
            h = Harness(runner.app, bot_api, gemini)
            await to_coaching(h, ANN)
            await h.say(ANN, "Coaching with every secret around")
            gemini.fail_always = Fault.status(503)
            await h.say(ANN, "Gemini is down now")
            gemini.fail_always = None
            await _refused_and_malformed(runner.port)
            bot_api.fail_next("getMe", 502, "Bad Gateway")
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{runner.health_port}/readyz")).status_code == 503
            for name in ("uvicorn.error", "storage.db", "bot.webhook"):  # any logger, the URL in any form
                logging.getLogger(name).error("connecting to %s failed; key=%s secret=%s", settings.database_url,
                                              GEMINI_KEY, SECRET)
        finally:
            await delivery.stop()
            await runner.stop()
    finally:
        root.removeHandler(handler)
        root.removeHandler(raw_handler)
        root.setLevel(old_level)
    text, raw_text = out.getvalue(), raw.getvalue()
    assert DB_PASSWORD in raw_text and SECRET in raw_text, "the run did log them raw (so the check means something)"
    lines = text.splitlines()
    assert any(" uvicorn.error Invalid HTTP request received." in line and " user=" in line for line in lines), \
        "uvicorn's own lines go through Rein's handler and format"
    assert "webhook.refused" in text and "coach.llm_failed" in text and "readyz.telegram_failing" in text
    assert f"postgres:{REDACTED}@" in text
    leaked = [secret for secret in secrets if secret in text]
    assert leaked == []


async def _refused_and_malformed(port: int) -> None:
    """A POST with a wrong secret, and bytes that are not HTTP at all (uvicorn logs a warning)."""
    async with httpx.AsyncClient() as client:
        wrong = await client.post(f"http://127.0.0.1:{port}/telegram/hook", json={}, headers={SECRET_HEADER: "x" * 40})
        assert wrong.status_code == 403
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
    await writer.drain()
    await reader.read()  # uvicorn answers 400 and closes
    writer.close()
