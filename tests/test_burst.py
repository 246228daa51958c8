"""A burst of messages: stored and read a few at a time, first come first served, none lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline import speaker
from pipeline.conversation import ADMISSION
from tests.conftest import Harness

USERS = [7100 + n for n in range(ADMISSION * 2 + 4)]


async def test_a_burst_is_admitted_in_arrival_order_a_few_at_a_time(harness: Harness,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages of many users at one moment reach the store-and-read step in arrival order, ADMISSION at a
    time, and every user gets an answer."""
    conversation = harness.services.conversation
    read, store = speaker.load_awaiting, conversation._store_text
    admitted: list[int] = []
    inside = peak = 0

    async def first_read(session: Any, who: Any) -> Any:  # the step's first call, right after admission
        nonlocal inside, peak
        admitted.append(who.telegram_id)
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.05)  # long enough that the others pile up behind the gate
        return await read(session, who)

    async def stored(session: Any, who: Any, user: Any, text: str, **kw: Any) -> Any:  # the step's last call
        nonlocal inside
        try:
            return await store(session, who, user, text, **kw)
        finally:
            inside -= 1

    monkeypatch.setattr(speaker, "load_awaiting", first_read)
    monkeypatch.setattr(conversation, "_store_text", stored)
    for user in USERS:  # queued together: one getUpdates batch
        harness.bot_api.user_sends(user, "Learn to swim 400 m")
    for user in USERS:
        await harness.bot_api.wait_messages(user, 1, timeout=20)
    assert admitted == USERS
    assert peak == ADMISSION
    assert all("Sample question" in harness.bot_api.messages(user)[-1].text for user in USERS)
