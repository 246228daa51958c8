"""Streamed replies S1, S2 and S4: how soon a reply becomes visible in a Telegram draft, and what drafts cost.

The bot runs as its own process against the loopback servers (`benchmarks.loopback`), on SQLite (streaming is
bound by Gemini and Telegram, not by the database), with 40 coaching users writing at once. Gemini streams each
answer in chunks of 40 characters, 0.1 s apart (about 100 tokens/s); each reply is about 200 characters.
A draft holds back the last seven words until the output guard has checked them (`pipeline.streaming`), so the
first visible draft needs the first eight words, which come with the second chunk.

- S1: time from Gemini's first chunk to the user's first visible (non-empty) draft, p50 and p95.
- S2: time from the user's message to the first visible text (draft or message) when Gemini's first chunk
  comes after 1 s.
- S4: Bot API calls per reply with streaming on and off (40 users), and B1's 200 users at 30 messages/s with
  streaming on, Gemini's whole answer at 1.0 s as in B1 (first chunk at 0.6 s).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from benchmarks.loopback import BotProcess, Servers, bot_env, calls, isolated, servers
from benchmarks.turns import burst, database, row, seed, telegram_id

USERS = 40
CHUNK_CHARS, CHUNK_DELAY_S = 40, 0.1
# A message whose echo (the fake's coaching reply: "Coach: " + the message, first 200 characters) is five chunks.
PAD = ("I ran three kilometres this morning without stopping, my legs feel fine and my breathing stayed calm, "
       "so what should I try next week to build up towards five kilometres? ")
METHODS = ("sendMessage", "sendMessageDraft", "sendChatAction")


def _gemini(srv: Servers, latency: float) -> None:
    httpx.post(f"{srv.gemini}/_fake/config", json={"latency": latency, "chunk_chars": CHUNK_CHARS,
                                                    "chunk_delay": CHUNK_DELAY_S}, timeout=10)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _first_visible(srv: Servers, user: int) -> float | None:
    """When the user's chat got its first non-empty draft (time.time()), if any."""
    drafts = httpx.get(f"{srv.bot_api}/_fake/draft_calls", params={"chat_id": telegram_id(user)}, timeout=10).json()
    return next((d["at"] for d in drafts if d["text"]), None)


def _streams(srv: Servers) -> dict[int, float]:
    """Each user's first chunk time (time.time()) from the Gemini server, by the message's user number."""
    found: dict[int, float] = {}
    for stream in httpx.get(f"{srv.gemini}/_fake/streams", timeout=10).json():
        words = stream["text"].split()
        if len(words) >= 3 and words[-2] == "message" and words[-3].startswith("u"):
            found.setdefault(int(words[-3][1:]), stream["first_chunk_at"])
    return found


def _counts(srv: Servers) -> dict[str, int]:
    return {method: calls(srv.bot_api, method) for method in METHODS}


def s1_s2(srv: Servers) -> list[dict[str, Any]]:
    """S1 on users 1–40 (first chunk at once), S2 on users 41–80 (first chunk after 1 s)."""
    rows = []
    _gemini(srv, 0.0)
    users = list(range(1, USERS + 1))
    result = asyncio.run(burst(srv.bot_api, users, 1, pad=PAD))
    firsts = _streams(srv)
    gaps = [seen - firsts[u] for u in users if u in firsts and (seen := _first_visible(srv, u)) is not None]
    p50, p95 = (_pct(gaps, 0.5), _pct(gaps, 0.95)) if gaps else (float("nan"), float("nan"))
    rows.append(row(f"S1: {USERS} users at once, Gemini's first chunk → first visible draft, p50 / p95",
                    f"{p50:.3f} / {p95:.3f} s ({len(gaps)} of {USERS} replies had a draft; the others' drafts "
                    "yielded to the send cap)", "p95 ≤ 0.3 s", bool(gaps) and result["delivered"] == USERS
                    and p95 <= 0.3))
    _gemini(srv, 1.0)
    users = list(range(USERS + 1, 2 * USERS + 1))
    result = asyncio.run(burst(srv.bot_api, users, 1, pad=PAD))
    messages = {m["chat_id"]: m["at"] for m in reversed(result["sent"])}
    waits = []
    for u in users:
        visible = [t for t in (_first_visible(srv, u), messages.get(telegram_id(u))) if t is not None]
        if visible:
            waits.append(min(visible) - result["started"])
    p50, p95 = (_pct(waits, 0.5), _pct(waits, 0.95)) if waits else (float("nan"), float("nan"))
    rows.append(row(f"S2: {USERS} users at once, first chunk after 1 s: message → first visible text, p50 / p95",
                    f"{p50:.3f} / {p95:.3f} s", "p95 ≤ 1.3 s", len(waits) == USERS and p95 <= 1.3))
    return rows


def per_reply(srv: Servers, bot: BotProcess, users: list[int]) -> dict[str, float]:
    """Bot API calls per reply, by method, and the bot's CPU ms per reply, for one burst of these users."""
    before, cpu = _counts(srv), bot.cpu_s()
    result = asyncio.run(burst(srv.bot_api, users, 1, pad=PAD))
    after, replies = _counts(srv), max(1, result["delivered"])
    return {**{m: (after[m] - before[m]) / replies for m in METHODS}, "cpu_ms": (bot.cpu_s() - cpu) * 1000 / replies}


def _calls_figure(counts: dict[str, float]) -> str:
    total = sum(counts[m] for m in METHODS)
    return (f"{total:.2f} (sendMessage {counts['sendMessage']:.2f}, drafts {counts['sendMessageDraft']:.2f}, "
            f"typing {counts['sendChatAction']:.2f}); bot CPU {counts['cpu_ms']:.1f} ms per reply")


def b1(srv: Servers, url: str, users: list[int], *, streaming: bool) -> dict[str, Any]:
    """B1's burst (Gemini's whole answer at 1.0 s, limit 30/s) with streaming on or off."""
    bot = BotProcess(bot_env(srv, url, TELEGRAM_RATE_LIMIT="30", STREAMING=str(streaming).lower()))
    bot.start(srv.bot_api)
    try:
        _gemini(srv, 0.6)  # the first chunk at 0.6 s, the last at 1.0 s
        return asyncio.run(burst(srv.bot_api, users, 1, pad=PAD))
    finally:
        bot.stop()


def run_all() -> list[dict[str, Any]]:
    """S1, S2 and S4 against one bot with streaming on and one with it off."""
    with database("sqlite") as url, servers() as srv:
        seed(url, start=1, count=4 * USERS + 400)
        bot = BotProcess(bot_env(srv, url, TELEGRAM_RATE_LIMIT="30"))
        bot.start(srv.bot_api)
        try:
            rows = s1_s2(srv)
            _gemini(srv, 0.0)
            on = per_reply(srv, bot, list(range(2 * USERS + 1, 3 * USERS + 1)))
        finally:
            bot.stop()
        bot = BotProcess(bot_env(srv, url, TELEGRAM_RATE_LIMIT="30", STREAMING="false"))
        bot.start(srv.bot_api)
        try:
            _gemini(srv, 0.0)
            off = per_reply(srv, bot, list(range(3 * USERS + 1, 4 * USERS + 1)))
        finally:
            bot.stop()
        first = 4 * USERS + 1
        result = b1(srv, url, list(range(first, first + 200)), streaming=True)
        reference = b1(srv, url, list(range(first + 200, first + 400)), streaming=False)
    ideal = 200 / 30
    ratio = result["wall_s"] / ideal
    rows += [
        row(f"S4: Bot API calls per reply, streaming on ({USERS} users at once)", _calls_figure(on), "(measured)",
            True),
        row(f"S4: Bot API calls per reply, streaming off ({USERS} users at once)", _calls_figure(off),
            "(measured)", True),
        row("S4: B1 with streaming on: 200 users, Gemini's whole answer at 1.0 s, limit 30/s",
            f"{result['wall_s']:.2f} s = {ratio:.2f} × ideal {ideal:.2f} s; per-user order "
            f"{'ok' if result['order_ok'] else 'BROKEN'}", "≤ 1.2 × ideal",
            ratio <= 1.2 and result["delivered"] == 200 and result["order_ok"]),
        row("S4: the same B1 burst with streaming off, same run (the machine's reference)",
            f"{reference['wall_s']:.2f} s = {reference['wall_s'] / ideal:.2f} × ideal; streaming on = "
            f"{result['wall_s'] / reference['wall_s']:.2f} × off", "(reference)", True),
    ]
    return rows


def run() -> list[dict[str, Any]]:
    """S1, S2 and S4."""
    with isolated():
        return run_all()


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
