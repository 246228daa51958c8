"""S3, bursts read together: 40 users at once each send 15 short messages over 4 s while Gemini takes 1.5 s per
call. Rein answers the first message, and the messages that waited meanwhile together, in one reply each time:
the figures are the LLM calls one burst costs (target ≤ 4) and the time from a user's last message until it is
answered.

The bot runs as its own process (`python -m bot`) against the loopback Bot API, Gemini and Opik servers, on
SQLite and on PostgreSQL (`REIN_BENCH_DATABASES`). Users are seeded in the coaching stage with no past turns,
so no history summary adds a call of its own.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import httpx

from benchmarks.loopback import BotProcess, Servers, bot_env, on_each_database, servers
from benchmarks.turns import burst, database, row, seed, set_latency, telegram_id

USERS = 40
MESSAGES = 15
SPREAD_S = 4.0
LLM_S = 1.5
FIRST_USER = 1
WARM_UP = 20  # other users' single messages first: a new process's first turns are slower


async def bursts(srv: Servers, users: list[int]) -> dict[str, Any]:
    """Every user sends MESSAGES texts spread over SPREAD_S; wait until each user's last one is answered."""
    last = MESSAGES - 1
    async with httpx.AsyncClient(timeout=60) as client:
        asked = (await client.get(f"{srv.gemini}/_fake/stats")).json()["requests"]
        base = (await client.get(f"{srv.bot_api}/_fake/sent")).json()["total"]
        started = time.time()
        sent_at = 0.0
        for n in range(MESSAGES):
            await asyncio.sleep(max(0.0, started + n * SPREAD_S / last - time.time()))
            sent_at = time.time()
            await client.post(f"{srv.bot_api}/_fake/users_send", json={"messages": [
                {"user_id": telegram_id(u), "text": f"u{u} message {n}"} for u in users]})
        replies: list[dict[str, Any]] = []
        answered: dict[int, float] = {}
        deadline = time.monotonic() + 120
        while len(answered) < len(users) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            new = (await client.get(f"{srv.bot_api}/_fake/sent",
                                    params={"since": base + len(replies)})).json()["sent"]
            replies += new
            answered.update({m["chat_id"]: m["at"] for m in new if m["text"].endswith(f" message {last}")})
        calls = (await client.get(f"{srv.gemini}/_fake/stats")).json()["requests"] - asked
    order_ok = True
    for u in users:
        mine = [int(m["text"].rsplit(" ", 1)[1]) for m in replies if m["chat_id"] == telegram_id(u)]
        order_ok &= mine == sorted(set(mine)) and mine[-1:] == [last]
    waits = sorted(at - sent_at for at in answered.values())
    return {"calls_per_user": calls / len(users), "answered": len(answered), "order_ok": order_ok,
            "replies_per_user": len(replies) / len(users),
            "p50_s": statistics.median(waits) if waits else float("nan"),
            "p95_s": waits[int(0.95 * (len(waits) - 1))] if waits else float("nan")}


def run_on(kind: str) -> list[dict[str, Any]]:
    """S3 on one database."""
    users = list(range(FIRST_USER, FIRST_USER + USERS))
    with database(kind) as url, servers() as srv:
        seed(url, start=FIRST_USER, count=USERS + WARM_UP, history=0)
        bot = BotProcess(bot_env(srv, url, LLM_CALLS_PER_MINUTE="12", WEBHOOK_PORT="0"))
        bot.start(srv.bot_api)
        try:
            asyncio.run(burst(srv.bot_api, list(range(FIRST_USER + USERS, FIRST_USER + USERS + WARM_UP)), 1))
            set_latency(srv.gemini, LLM_S)
            result = asyncio.run(bursts(srv, users))
        finally:
            set_latency(srv.gemini, 0.0)
            bot.stop()
    every = result["answered"] == USERS and result["order_ok"]
    return [
        row(f"S3 {kind}: {USERS} users at once, {MESSAGES} messages in {SPREAD_S:.0f} s each, Gemini {LLM_S} s: "
            "LLM calls per burst",
            f"{result['calls_per_user']:.2f} calls ({result['replies_per_user']:.2f} replies) per user; "
            f"last message answered for {result['answered']}/{USERS}, order {'ok' if result['order_ok'] else 'BROKEN'}",
            "≤ 4", result["calls_per_user"] <= 4 and every),
        row(f"S3 {kind}: time from a user's last message to its answer, p50 / p95",
            f"{result['p50_s']:.2f} / {result['p95_s']:.2f} s", "(measured; one LLM call is 1.5 s)", every),
    ]


def run() -> list[dict[str, Any]]:
    """S3 on SQLite and PostgreSQL."""
    return on_each_database(run_on)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
