"""Webhook mode in-process: the conversation tests of polling mode, the secret, health, readiness and metrics.

Telegram's side is played by `TelegramDelivery`: it takes the updates the loopback Bot API queued for a
user and POSTs them to the bot's webhook with the secret header, one chat at a time, each after the
previous was answered (Telegram's way; chats in parallel). The bot's calls still go to the loopback Bot API.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.webhook import ALLOWED_UPDATES, SECRET_HEADER, Runner, make_runner
from storage import inbox
from tests import test_flow, test_media
from tests.conftest import Harness, make_settings
from tests.fakes import FakeBotAPI, FakeGemini, Fault

SECRET = "webhook-secret_0123456789-abcdefghijklmnop"
ANN = 3001


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chat_of(update: dict[str, Any]) -> int:
    """The chat an update belongs to (0 when it has none)."""
    for key in ("message", "edited_message", "my_chat_member"):
        if key in update:
            return int(update[key]["chat"]["id"])
    if "callback_query" in update:
        return int(update["callback_query"]["message"]["chat"]["id"])
    return 0


class TelegramDelivery:
    """Posts the loopback Bot API's queued updates to webhook URLs the way Telegram does."""

    def __init__(self, bot_api: FakeBotAPI, urls: list[str], secret: str = SECRET) -> None:
        self.bot_api = bot_api
        self.urls = urls
        self.secret = secret
        self.responses: list[tuple[int, int]] = []  # (update_id, HTTP status)
        self._sent_up_to = 0
        self._queues: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._client = httpx.AsyncClient(timeout=60)
        self._turn = 0

    async def start(self) -> None:
        """Start watching for queued updates."""
        self._tasks.append(asyncio.create_task(self._watch()))

    async def stop(self) -> None:
        """Stop delivering (again: nothing)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    async def _watch(self) -> None:
        while True:
            for update in self.bot_api.queued_updates():
                if update["update_id"] <= self._sent_up_to:
                    continue
                self._sent_up_to = update["update_id"]
                chat = chat_of(update)
                if chat not in self._queues:
                    self._queues[chat] = asyncio.Queue()
                    self._tasks.append(asyncio.create_task(self._deliver(self._queues[chat])))
                self._queues[chat].put_nowait(update)
            await asyncio.sleep(0.005)

    async def _deliver(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            update = await queue.get()
            url = self.urls[self._turn % len(self.urls)]  # several replicas: spread like a load balancer
            self._turn += 1
            response = await self._client.post(url, json=update, headers={SECRET_HEADER: self.secret})
            self.responses.append((update["update_id"], response.status_code))


def webhook_settings(bot_api: FakeBotAPI, gemini: FakeGemini, database_url: str, **overrides: Any) -> Any:
    """Settings for webhook mode on a free loopback port."""
    port = free_port()
    values: dict[str, Any] = {
        "telegram_webhook_url": f"http://127.0.0.1:{port}/telegram/hook",
        "telegram_webhook_secret": SECRET,
        "webhook_listen": "127.0.0.1",
        "webhook_port": port,
        "health_port": free_port(),
        "shutdown_timeout_s": 5.0,
    }
    values.update(overrides)
    return make_settings(bot_api, gemini, database_url, **values)


@contextlib.asynccontextmanager
async def webhook_bot(settings: Any, bot_api: FakeBotAPI) -> AsyncIterator[tuple[Runner, TelegramDelivery]]:
    """A running bot in webhook mode with Telegram's delivery in front of it."""
    runner = make_runner(settings)
    await runner.start()
    delivery = TelegramDelivery(bot_api, [runner.url])
    await delivery.start()
    try:
        yield runner, delivery
    finally:
        await delivery.stop()
        await runner.stop()
    assert all(status == 200 for _, status in delivery.responses), delivery.responses


@pytest.fixture
async def harness(bot_api: FakeBotAPI, gemini: FakeGemini, sqlite_url: str) -> AsyncIterator[Harness]:
    """The polling tests' harness, but the bot runs in webhook mode and updates arrive by POST."""
    async with webhook_bot(webhook_settings(bot_api, gemini, sqlite_url), bot_api) as (runner, _):
        yield Harness(runner.app, bot_api, gemini)


# The same conversation tests as polling mode: every test_flow test that needs only the harness runs here again.
for _name, _test in vars(test_flow).copy().items():
    if _name.startswith("test_") and list(inspect.signature(_test).parameters) == ["harness"]:
        globals()[_name] = _test


async def test_a_text_and_a_voice_note_stored_together_are_answered_once(harness: Harness) -> None:
    """Webhook mode: a text and a voice note waiting in the inbox behind a turn get one answer reading both."""
    await test_media.test_a_text_and_a_voice_note_that_waited_together_get_one_answer_that_reads_both(harness)


async def test_a_text_stored_before_a_refused_voice_note_is_still_answered(harness: Harness) -> None:
    """Webhook mode: the text waiting in the inbox before a refused voice note is answered after the refusal."""
    await test_media.test_a_text_followed_by_a_refused_voice_note_is_still_answered(harness)


async def test_conversation_in_webhook_mode(harness: Harness) -> None:
    """start → goal → question → skip → plan → accept → coaching works with updates POSTed to the webhook."""
    await harness.say(ANN, "/start", expect=2)
    question = (await harness.say(ANN, "Learn to swim"))[0]
    resolution, plan = await harness.press(ANN, question, "Skip", expect=2)
    assert "Your resolution" in resolution.text and "Your plan" in plan.text
    accepted = (await harness.press(ANN, plan, "✅ Accept"))[0]
    assert "Plan accepted" in accepted.text
    reply = (await harness.say(ANN, "I went to the pool today"))[0]
    assert reply.text.startswith("Coach")
    assert harness.bot_api.calls_to("getUpdates") == [], "webhook mode never polls"


async def test_webhook_is_registered_with_secret_and_update_types(harness: Harness) -> None:
    """setWebhook carries the URL, the secret token and the update types Rein handles."""
    calls = harness.bot_api.calls_to("setWebhook")
    assert len(calls) == 1
    params = calls[0]["params"]
    assert params["url"].endswith("/telegram/hook") and params["secret_token"] == SECRET
    assert sorted(calls[0]["parsed"]["allowed_updates"]) == sorted(ALLOWED_UPDATES)


async def test_requests_without_the_right_secret_are_refused(bot_api, gemini, sqlite_url) -> None:
    """A POST with no or a wrong X-Telegram-Bot-Api-Secret-Token gets 403 and is not handled."""
    settings = webhook_settings(bot_api, gemini, sqlite_url)
    runner = make_runner(settings)
    await runner.start()
    try:
        update = bot_api.user_sends(ANN, "/start")
        async with httpx.AsyncClient() as client:
            missing = await client.post(runner.url, json=update)
            wrong = await client.post(runner.url, json=update, headers={SECRET_HEADER: "not-the-secret"})
            garbage = await client.post(runner.url, content=b"{", headers={SECRET_HEADER: SECRET})
        assert (missing.status_code, wrong.status_code, garbage.status_code) == (403, 403, 400)
        # A refused request is answered before anything is stored or queued: nothing can be handled later.
        async with runner.app.bot_data.services.db.session() as session:
            assert await inbox.count(session=session) == 0
        assert runner.app.update_queue.qsize() == 0 and runner.app.update_processor.processed == 0
        assert bot_api.messages(ANN) == []
    finally:
        await runner.stop()


async def test_health_readiness_and_metrics(harness: Harness) -> None:
    """/healthz is up, /readyz checks database and Telegram, /metrics counts turns, LLM calls and ratings."""
    await harness.say(ANN, "/start", expect=2)
    harness.gemini.queue({"enough_information": True, "missing": [], "question": ""})
    await harness.say(ANN, "Walk 10,000 steps a day", expect=2)
    await harness.press(ANN, harness.bot_api.messages(ANN)[-1], "✅ Accept")
    reply = (await harness.say(ANN, "I walked 8,000 today"))[0]
    star = next(d for _, d in reply.buttons() if d.startswith("r:") and d.endswith(":4"))
    query_id = harness.bot_api.user_presses(ANN, reply.message_id, star)
    await harness.bot_api.wait_for(lambda: query_id in harness.bot_api.callback_answers)

    base = f"http://127.0.0.1:{harness.services.settings.health_port}"
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{base}/healthz")
        ready = await client.get(f"{base}/readyz")
        metrics = await client.get(f"{base}/metrics")
    assert health.status_code == 200 and health.text == "ok"
    assert ready.status_code == 200 and ready.json() == {"database": "ok", "telegram": "ok"}
    assert metrics.headers["content-type"].startswith("text/plain")
    values = _samples(metrics.text)
    assert values['rein_turns_total{outcome="ok"}'] >= 4
    assert values['rein_llm_requests_total{outcome="ok"}'] >= 3
    assert values["rein_llm_latency_seconds_count"] >= 3
    assert values['rein_ratings_total{stars="4"}'] == 1
    assert values["rein_update_queue_depth"] == 0 and values["rein_turns_in_flight"] == 0
    assert values["rein_scheduler_leader"] == 1
    assert "rein_checkins_sent_total" in values


async def test_llm_errors_are_counted(harness: Harness) -> None:
    """A Gemini failure shows up in /metrics as an error with its HTTP status."""
    await harness.say(ANN, "/start", expect=2)
    harness.gemini.fail_always = Fault.status(503)
    await harness.say(ANN, "Finish my thesis")
    harness.gemini.fail_always = None
    async with httpx.AsyncClient() as client:
        metrics = await client.get(f"http://127.0.0.1:{harness.services.settings.health_port}/metrics")
    values = _samples(metrics.text)
    assert values['rein_llm_errors_total{error="http_503"}'] >= 1
    assert values['rein_llm_requests_total{outcome="error"}'] >= 1


async def test_readiness_fails_when_telegram_does_not_answer(bot_api, gemini, sqlite_url) -> None:
    """/readyz answers 503 naming Telegram when getMe fails, while /healthz stays 200."""
    settings = webhook_settings(bot_api, gemini, sqlite_url)
    runner = make_runner(settings)
    await runner.start()
    try:
        bot_api.fail_next("getMe", 502, "Bad Gateway", times=3)
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://127.0.0.1:{settings.health_port}/readyz")
            health = await client.get(f"http://127.0.0.1:{settings.health_port}/healthz")
        assert ready.status_code == 503 and ready.json()["telegram"] == "failing"
        assert ready.json()["database"] == "ok" and health.status_code == 200
    finally:
        await runner.stop()


async def test_stop_finishes_the_turn_in_flight(bot_api, gemini, sqlite_url) -> None:
    """A stop during a slow Gemini call still sends that turn's answer, then refuses new connections."""
    settings = webhook_settings(bot_api, gemini, sqlite_url)
    runner = make_runner(settings)
    await runner.start()
    delivery = TelegramDelivery(bot_api, [runner.url])
    await delivery.start()
    try:
        h = Harness(runner.app, bot_api, gemini)
        await h.say(ANN, "/start", expect=2)
        gemini.responder = lambda req: Fault.hang(0.8)
        at_work = len(bot_api.chat_actions(ANN)) + len(bot_api.drafts(ANN))  # typing, or a draft
        bot_api.user_sends(ANN, "Learn the violin")
        await bot_api.wait_for(lambda: len(bot_api.chat_actions(ANN)) + len(bot_api.drafts(ANN)) > at_work)
        await runner.stop()
        assert len(bot_api.messages(ANN)) == 3, "the turn in flight was finished before the stop completed"
        await delivery.stop()
        late = bot_api.user_sends(ANN, "too late")
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(runner.url, json=late, headers={SECRET_HEADER: SECRET})
    finally:
        await delivery.stop()
        await runner.stop()
    assert all(status == 200 for _, status in delivery.responses)


def _samples(exposition: str) -> dict[str, float]:
    """Prometheus text format as {"name{labels}": value}."""
    out: dict[str, float] = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
