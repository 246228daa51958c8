"""Turn benchmarks B1–B4: concurrency against Telegram's cap, CPU per turn, growth, memory.

The bot runs as its own process (`python -m bot`), against the loopback Bot API, Gemini and Opik servers
(each its own process), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, text
from sqlmodel import SQLModel

from benchmarks.loopback import BotProcess, Servers, bot_env, on_each_database, servers
from benchmarks.registry import FLOOR
from storage.db import sync_url, upgrade
from storage.models import Stage

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SEED_BATCH = 5000
# B2's runs: (label, tracing, CPU_AFFINITY, EVENT_LOOP); each runs B2_ROUNDS times, interleaved, and the
# table has the means. "" keeps the harness's own pinning (the bot alone on the last CPU, the load on the
# others: `benchmarks.loopback`), so its figures are its own; "off" is Rein's default outside a benchmark.
B2_CONFIGS = (("off", False, "", "uvloop"), ("on", True, "", "uvloop"),
              ("unpinned", False, "off", "uvloop"), ("asyncio", False, "", "asyncio"))
B2_ROUNDS = 2
B2_FIRST_USER = 221  # B1 uses users 1–220; B2 takes 120 fresh ones per run
SEEDED = B2_FIRST_USER - 1 + len(B2_CONFIGS) * B2_ROUNDS * 120  # users seeded for B1 and B2
TABLES = SQLModel.metadata.tables
# Past turns each seeded user has: the prompt's whole window (HISTORY_TURNS), so a measured turn costs what an
# active user's does; B2's eight turns per user stay below the 2 × window that starts a history summary.
HISTORY = 12


# ----- data ---------------------------------------------------------------------------------------

def seed(database_url: str, *, start: int, count: int, past_turns: int = 0,
         history: int = HISTORY) -> None:
    """Store `count` coaching users (ids start..start+count-1) with a goal, an accepted plan and `history`
    past turns each (a full prompt window, as an active user has); the first user gets `past_turns` more."""
    engine = create_engine(sync_url(database_url))
    now = datetime.now(UTC)
    phases = [{"name": "Base", "start_date": str(date.today()), "end_date": str(date.today() + timedelta(days=60)),
               "focus": "consistency", "weekly_actions": ["3 × 30 min runs", "1 × stretching"]}]
    with engine.begin() as conn:
        for first in range(start, start + count, SEED_BATCH):
            ids = range(first, min(first + SEED_BATCH, start + count))
            conn.execute(insert(TABLES["users"]), [
                {"id": i, "telegram_id": 10_000_000 + i, "chat_id": 10_000_000 + i, "opaque_id": uuid.uuid4().hex,
                 "stage": Stage.COACHING, "active_goal_id": i, "clarify_rounds": 0, "summary": "",
                 "summary_upto_turn_id": 0, "thread_id": f"t{i}", "blocked": False, "thread_closed": False,
                 "created_at": now, "last_active_at": now} for i in ids])
            conn.execute(insert(TABLES["goals"]), [
                {"id": i, "user_id": i, "text": "Run 10 km", "status": "active", "clarifications": [],
                 "created_at": now} for i in ids])
            conn.execute(insert(TABLES["plans"]), [
                {"id": i, "goal_id": i, "version": 1, "status": "accepted", "summary": "Build up to 10 km",
                 "phases": phases, "created_at": now, "accepted_at": now} for i in ids])
            if history:
                conn.execute(insert(TABLES["turns"]), [past_turn(i, n, now) for i in ids for n in range(history)])
        if past_turns:
            conn.execute(insert(TABLES["turns"]), [past_turn(start, n, now) for n in range(past_turns)])
            # A user who talked this much has a summary of it: the coach folds older turns in as they go
            # (pipeline/memory.py), so only the recent window is ever unsummarised.
            newest = conn.execute(text("SELECT MAX(id) FROM turns WHERE user_id = :u"), {"u": start}).scalar()
            conn.execute(text("UPDATE users SET summary = :s, summary_upto_turn_id = :t WHERE id = :u"),
                         {"s": "Runs three times a week; knees sore after long runs. " * 8, "t": newest, "u": start})
        if engine.dialect.name == "postgresql":
            for table in ("users", "goals", "plans", "turns"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"COALESCE((SELECT MAX(id) FROM {table}), 1))"))
    # Planner statistics as a database that grew over time has them, not as a bulk load leaves them
    # (otherwise autovacuum catches up in the middle of a measurement).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


def past_turn(user: int, n: int, at: datetime) -> dict[str, Any]:
    """One stored turn of a seeded user's conversation (user and coach alternate)."""
    return {"user_id": user, "goal_id": user, "role": "user" if n % 2 == 0 else "coach", "kind": "coaching",
            "text": f"past message {n} " + "x" * 80, "answered": True, "created_at": at, "thread_id": f"t{user}"}


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file or a new PostgreSQL database."""
    if kind == "sqlite":
        path = f"/tmp/rein-bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
        return
    name = f"rein_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


ANSWER = re.compile(r"message (\d+)$")  # the loopback Gemini's answer ends with the user's message


def telegram_id(user: int) -> int:
    """The Telegram id the seed gave a user."""
    return 10_000_000 + user


# ----- load ---------------------------------------------------------------------------------------

async def burst(bot_api: str, users: list[int], per_user: int, timeout: float = 300, *,
                pad: str = "") -> dict[str, Any]:
    """Every user sends `per_user` messages at once (each after `pad`); wait until each user's last message is
    answered (Rein answers the messages that waited behind a turn together, in one reply: `delivered` counts
    replies). Wall time, and per-user order: replies in the order of the messages they answer, the last one
    answered."""
    last = per_user - 1
    async with httpx.AsyncClient(base_url=bot_api, timeout=60) as client:
        base = (await client.get("/_fake/sent")).json()["total"]
        started = time.time()
        for n in range(per_user):  # every user's n-th message queued at one moment
            await client.post("/_fake/users_send", json={"messages": [
                {"user_id": telegram_id(u), "text": f"{pad}u{u} message {n}"} for u in users]})
        sent: list[dict[str, Any]] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(users) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            new = (await client.get("/_fake/sent", params={"since": base + len(sent)})).json()["sent"]
            sent += new
            done |= {m["chat_id"] for m in new if m["text"].endswith(f" message {last}")}
    answers = [m for m in sent if "message" in m["text"]]
    replies = [m for m in answers if ANSWER.search(m["text"])]
    errors = len(answers) - len(replies)  # the bot's error texts ("… save or answer that message …")
    order_ok = not errors
    for u in users:
        mine = [int(found.group(1)) for m in replies
                if m["chat_id"] == telegram_id(u) and (found := ANSWER.search(m["text"]))]
        order_ok &= mine == sorted(set(mine)) and mine[-1:] == [last]
    at = max((m["at"] for m in replies), default=time.time())
    return {"wall_s": at - started, "delivered": len(replies), "answered_users": len(done),
            "expected": len(users) * per_user, "order_ok": order_ok, "started": started, "sent": replies,
            "errors": errors}


async def _json(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await client.get(url, params=params)
    if response.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


async def sequential(bot_api: str, gemini: str, user: int, turns: int) -> dict[str, Any]:
    """One user sends a message, waits for the reply, and again; latency per turn and the prompt size."""
    latencies = []
    async with httpx.AsyncClient(base_url=bot_api, timeout=60) as client:
        for n in range(turns):
            base = (await _json(client, "/_fake/sent"))["total"]
            started = time.perf_counter()
            await client.post("/_fake/user_sends", json={"user_id": telegram_id(user), "text": f"u{user} message {n}"})
            for _ in range(100_000):
                if (await _json(client, "/_fake/sent", since=base))["total"] > base:
                    break
                await asyncio.sleep(0.002)
            latencies.append(time.perf_counter() - started)
        prompt = (await client.get(f"{gemini}/_fake/stats")).json()["last_request_bytes"]
    return {"median_ms": statistics.median(latencies) * 1000, "prompt_bytes": prompt}


def set_latency(gemini: str, seconds: float) -> None:
    """Change the Gemini server's answer delay."""
    httpx.post(f"{gemini}/_fake/config", json={"latency": seconds}, timeout=10)


# ----- the benchmarks -----------------------------------------------------------------------------

def row(name: str, figure: str, target: str, holds: bool) -> dict[str, Any]:
    """One line of the table."""
    return {"name": name, "figure": figure, "target": target, "holds": holds}


def b1(srv: Servers, url: str, db: str) -> tuple[list[dict[str, Any]], float]:
    """200 users at once, Gemini at 1.0 s: wall time over the ideal, at 30/s and at 1,000/s."""
    rows = []
    rss_after = 0.0
    for rate, ideal, target in ((30.0, max(1.0, 200 / 30), 1.2), (1000.0, 1.0, 1.5)):
        bot = BotProcess(bot_env(srv, url, TELEGRAM_RATE_LIMIT=str(rate)))
        bot.start(srv.bot_api)
        try:
            set_latency(srv.gemini, 1.0)
            result = asyncio.run(burst(srv.bot_api, list(range(1, 201)), 1))
            order = asyncio.run(burst(srv.bot_api, list(range(201, 221)), 5))
            ratio = result["wall_s"] / ideal
            ok = result["delivered"] == 200 and order["order_ok"] and order["answered_users"] == 20
            rows.append(row(f"B1 {db}: 200 users, Gemini 1.0 s, limit {rate:.0f}/s",
                            f"{result['wall_s']:.2f} s = {ratio:.2f} × ideal {ideal:.2f} s; "
                            f"per-user order {'ok' if order['order_ok'] else 'BROKEN'}",
                            f"≤ {target} × ideal", ratio <= target and ok))
            rss_after = max(rss_after, bot.rss_mb())
        finally:
            set_latency(srv.gemini, 0.0)
            bot.stop()
    return rows, rss_after


def b2(srv: Servers, url: str, db: str) -> list[dict[str, Any]]:
    """Gemini answers at once: turns/s and bot CPU ms per turn, tracing on and off, and (for the record)
    with the process free to move between CPUs (CPU_AFFINITY=off) or on the standard event loop. Means of
    `B2_ROUNDS` interleaved runs."""
    runs: dict[str, list[tuple[float, float]]] = {}
    errors = 0  # error texts instead of answers, over every run
    for n, (label, tracing, affinity, loop) in enumerate(B2_CONFIGS * B2_ROUNDS):  # interleaved: drift hits all
        first = B2_FIRST_USER + n * 120  # fresh users each run: no history summaries mid-measurement
        extra = {"TELEGRAM_RATE_LIMIT": "1000", "EVENT_LOOP": loop, **({"CPU_AFFINITY": affinity} if affinity else {})}
        if tracing:
            extra.update(OPIK_URL_OVERRIDE=srv.opik, OPIK_PROJECT_NAME="rein-bench")
        bot = BotProcess(bot_env(srv, url, **extra))
        bot.start(srv.bot_api)
        try:
            asyncio.run(burst(srv.bot_api, list(range(first, first + 20)), 2))  # warm-up
            cpu = bot.cpu_s()
            result = asyncio.run(burst(srv.bot_api, list(range(first + 20, first + 120)), 4))
            used = bot.cpu_s() - cpu
            runs.setdefault(label, []).append((result["delivered"] / result["wall_s"],
                                               used * 1000 / result["delivered"]))
            errors += result["errors"]
        finally:
            bot.stop()
    figures = {label: (statistics.mean(r[0] for r in done), statistics.mean(r[1] for r in done))
               for label, done in runs.items()}
    (tps_off, cpu_off), (tps_on, cpu_on) = figures["off"], figures["on"]
    (tps_free, cpu_free), (tps_std, cpu_std) = figures["unpinned"], figures["asyncio"]
    overhead = cpu_on / cpu_off - 1
    rows = [
        row(f"B2 {db}: turns/s (tracing off / on); error replies over all runs",
            f"{tps_off:.0f} / {tps_on:.0f}; {errors}", "0 errors", errors == 0),
        row(f"B2 {db}: bot CPU per coaching turn, tracing off / on", f"{cpu_off:.1f} / {cpu_on:.1f} ms",
            "(measured)", True),
        row(f"B2 {db}: tracing overhead (CPU)", f"{overhead:+.0%}", "(reported)", True),
    ]
    if db in FLOOR:
        floor, floor_traced = FLOOR[db]
        ratio, ratio_traced = cpu_off / floor, cpu_on / floor_traced
        rows.append(row(f"B2 {db}: CPU per coaching turn over B0's floor (public paths, same run), untraced / "
                        "traced", f"{cpu_off:.1f} / {floor:.1f} ms = {ratio:.2f} ×; {cpu_on:.1f} / "
                        f"{floor_traced:.1f} ms = {ratio_traced:.2f} ×", "≤ 2.0 ×", ratio <= 2.0))
    else:
        rows.append(row(f"B2 {db}: CPU per coaching turn over B0's floor", "B0 not measured in this run "
                        "(python -m benchmarks floor turns)", "≤ 2.0 ×", False))
    rows += [
        row(f"B2 {db}: tracing off, CPU_AFFINITY=off, free to share the load's CPUs (turns/s, CPU per turn)",
            f"{tps_free:.0f}/s, {cpu_free:.1f} ms = {cpu_free / cpu_off:.2f} × alone on one CPU", "(measured)",
            True),
        row(f"B2 {db}: tracing off, EVENT_LOOP=asyncio (turns/s, CPU per turn)",
            f"{tps_std:.0f}/s, {cpu_std:.1f} ms = {cpu_std / cpu_off:.2f} × uvloop", "(measured)", True),
    ]
    return rows


def cost_per_turn(srv: Servers, url: str, user: int, turns: int = 60) -> tuple[float, dict[str, Any], float]:
    """Bot CPU ms per turn of one user's sequential turns (after a short warm-up), the last turn's
    figures, and the idle RSS measured before the load."""
    bot = BotProcess(bot_env(srv, url, TELEGRAM_RATE_LIMIT="1000"))
    bot.start(srv.bot_api)
    try:
        time.sleep(1)
        idle_rss = bot.rss_mb()
        asyncio.run(sequential(srv.bot_api, srv.gemini, user, 5))
        cpu = bot.cpu_s()
        result = asyncio.run(sequential(srv.bot_api, srv.gemini, user, turns))
        return (bot.cpu_s() - cpu) * 1000 / turns, result, idle_rss
    finally:
        bot.stop()


def b3_b4(srv: Servers, url: str, db: str, small_url: str, rss_after_b1: float) -> list[dict[str, Any]]:
    """The same turn with 10,000 and 100,000 users stored and for a user with 10,000 past turns, each against
    the same turn in a database holding one user, measured just before it (the machine's speed drifts over
    a run); memory idle with 100,000 users."""
    rows = []
    stored = SEEDED
    idle_rss = 0.0
    costs: dict[str, tuple[float, float]] = {}
    for total in (10_000, 100_000):
        seed(url, start=stored + 1, count=total - stored, history=0)
        stored = total
        small, _, _ = cost_per_turn(srv, small_url, 1)
        cost, _, idle_rss = cost_per_turn(srv, url, 1)
        costs[f"{total:,} users stored"] = (cost, small)
    seed(url, start=stored + 1, count=1, past_turns=10_000, history=0)
    small, _, _ = cost_per_turn(srv, small_url, 1)
    cost, heavy, _ = cost_per_turn(srv, url, stored + 1)
    costs["a user with 10,000 past turns"] = (cost, small)
    for label, (cost, small) in costs.items():
        ratio = cost / small
        rows.append(row(f"B3 {db}: CPU per turn, {label}", f"{cost:.1f} ms = {ratio:.2f} × (1 user stored: "
                        f"{small:.1f} ms)", "flat (≤ 1.3 ×)", ratio <= 1.3))
    rows.append(row(f"B3 {db}: prompt size, user with 10,000 past turns", f"{heavy['prompt_bytes']:,} bytes",
                    "bounded (≤ 32 kB)", heavy["prompt_bytes"] <= 32_000))
    rows.append(row(f"B4 {db}: RSS idle, 100,000 users stored", f"{idle_rss:.0f} MB", "≤ 300 MB", idle_rss <= 300))
    rows.append(row(f"B4 {db}: RSS after B1", f"{rss_after_b1:.0f} MB", "≤ 300 MB", rss_after_b1 <= 300))
    return rows


def run_on(kind: str) -> list[dict[str, Any]]:
    """Every turn benchmark on one database (and a second one holding a single user, B3's reference)."""
    with database(kind) as url, database(kind) as small_url, servers() as srv:
        seed(small_url, start=1, count=1)
        seed(url, start=1, count=SEEDED)
        parts = os.environ.get("REIN_BENCH_TURNS", "b1,b2,b3").split(",")  # e.g. "b1" to re-run B1 alone
        rows, rss = b1(srv, url, kind)
        if "b1" not in parts:
            rows = []
        if "b2" in parts:
            rows += b2(srv, url, kind)
        if "b3" in parts:
            rows += b3_b4(srv, url, kind, small_url, rss)
    return rows


def run() -> list[dict[str, Any]]:
    """B1–B4 on SQLite and PostgreSQL."""
    return on_each_database(run_on)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
