"""Crisis detection's cost and accuracy: the screen per message (a typical one and a 4,096-character one), its
misses and false alarms on the reviewed phrase table, what the model's classification beside each reply adds to
a coaching turn (the bot as its own process, Gemini at 0.5 s, classifier off and on), and how fast a crisis
text is answered while Gemini fails every call."""

from __future__ import annotations

import asyncio
import csv
import statistics
import time
import timeit
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loopback import BotProcess, bot_env, isolated, servers
from benchmarks.turns import database, row, seed, sequential, set_latency, telegram_id
from pipeline import safety

TABLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "crisis_phrases.tsv"
TYPICAL = "Ran 5 km on Monday but skipped Wednesday, knees a bit sore. What should I change this week?"
CRISIS = "Honestly I don't see the point of anything anymore. I want to end my life."
GEMINI_S = 0.5
TURNS = 6  # per configuration: with the seeded window of 12 turns, no history summary starts


def screen_us(text: str, number: int) -> float:
    """Median microseconds of one screen call over five rounds."""
    rounds = [timeit.timeit(lambda: safety.screen(text), number=number) / number for _ in range(5)]
    return statistics.median(rounds) * 1e6


def table_figures() -> tuple[int, int, int, int]:
    """(phrases, languages, false negatives, false positives) of the screen on the phrase table."""
    lines = [line for line in TABLE.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    misses = sum(r["truth"] == "risk" and safety.screen(r["text"]) is None for r in rows)
    alarms = sum(r["truth"] == "safe" and safety.screen(r["text"]) is not None for r in rows)
    return len(rows), len({r["lang"] for r in rows}), misses, alarms


async def crisis_ms(bot_api: str, user: int) -> float:
    """Milliseconds from a crisis text to the bot's reply."""
    async with httpx.AsyncClient(base_url=bot_api, timeout=60) as client:
        base = (await client.get("/_fake/sent")).json()["total"]
        started = time.perf_counter()
        await client.post("/_fake/user_sends", json={"user_id": telegram_id(user), "text": CRISIS})
        for _ in range(1_000_000):  # polled like `sequential` does: the reply is on another server
            if (await client.get("/_fake/sent", params={"since": base})).json()["total"] > base:
                break
            await asyncio.sleep(0.002)
        return (time.perf_counter() - started) * 1000


def run() -> list[dict[str, Any]]:
    """The rows of the table."""
    rows = []
    typical = screen_us(TYPICAL, 500)
    rows.append(row("screen: one typical message (90 characters)", f"{typical:.0f} µs", "≤ 2,000 µs",
                    typical <= 2000))
    long = screen_us("I want to get fit and run further every week. " * 89, 5) / 1000
    rows.append(row("screen: a 4,096-character message", f"{long:.1f} ms", "≤ 50 ms", long <= 50))
    phrases, languages, misses, alarms = table_figures()
    rows.append(row(f"screen: phrase table ({phrases} phrases, {languages} languages)",
                    f"{misses} false negatives (left to the model), {alarms} false positives",
                    "≤ 2 false positives", alarms <= 2))
    with isolated(), servers() as srv, database("sqlite") as url:
        seed(url, start=1, count=3)
        medians = {}
        for user, classifier in ((1, "false"), (2, "true")):
            bot = BotProcess(bot_env(srv, url, SAFETY_CLASSIFIER=classifier))
            bot.start(srv.bot_api)
            try:
                set_latency(srv.gemini, GEMINI_S)
                asyncio.run(sequential(srv.bot_api, srv.gemini, user, 1))  # warm-up
                medians[classifier] = asyncio.run(sequential(srv.bot_api, srv.gemini, user, TURNS))["median_ms"]
            finally:
                set_latency(srv.gemini, 0.0)
                bot.stop()
        added = medians["true"] - medians["false"]
        rows.append(row(f"model classification beside a coaching turn (Gemini {GEMINI_S} s, median of {TURNS})",
                        f"{medians['false']:.0f} ms off, {medians['true']:.0f} ms on: {added:+.0f} ms",
                        "≤ +250 ms", added <= 250))
        bot = BotProcess(bot_env(srv, url, SAFETY_CLASSIFIER="true"))
        bot.start(srv.bot_api)
        try:
            httpx.post(f"{srv.gemini}/_fake/config", json={"fail_always": {"fault": "status", "code": 503}},
                       timeout=10)
            crisis = asyncio.run(crisis_ms(srv.bot_api, 3))
        finally:
            httpx.post(f"{srv.gemini}/_fake/config", json={"fail_always": None}, timeout=10)
            bot.stop()
        rows.append(row("crisis text answered with Gemini failing every call", f"{crisis:.0f} ms", "≤ 10,000 ms",
                        crisis <= 10_000))
    return rows
