"""H1: the health server cannot be used against the bot. 40 users chat (each sends a message, waits for the reply,
pauses 2 s, again; Gemini answers in 0.5 s) in six 10-second phases, quiet and flooded in turn (so a drift of the
machine's speed hits both alike); in each flooded phase 1,000 requests (`/readyz` and `/metrics`, alternating,
100 a second) hit the health server. The reply latency of the flooded phases is compared with the quiet ones of the
same run.

The bot runs as its own process (`python -m bot`, polling mode, so the health server is its only server) on its own
CPU; the loopback servers and this driver share the other.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx

from benchmarks.loopback import BotProcess, bot_env, free_port, on_each_database, servers
from benchmarks.turns import database, row, seed, set_latency, telegram_id

USERS = 40
PHASE_S = 10.0
FLOOD = 1000  # requests per flooded phase
PAUSE_S = 2.0  # a user's pause between a reply and their next message (people read, then type)
GEMINI_S = 0.5
PHASES = ("quiet", "flooded") * 3


class Replies:
    """Watches the loopback Bot API's sent messages and hands each to the user waiting for it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.waiting: dict[int, asyncio.Future[float]] = {}
        self.seen = 0

    async def start(self) -> None:
        """Skip what was sent before."""
        self.seen = (await self.client.get("/_fake/sent")).json()["total"]

    def expect(self, chat_id: int) -> asyncio.Future[float]:
        """A future for the arrival time (the Bot API's clock) of the next message to this chat."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[chat_id] = future
        return future

    async def watch(self) -> None:
        """Poll until cancelled."""
        while True:
            sent = (await self.client.get("/_fake/sent", params={"since": self.seen})).json()["sent"]
            self.seen += len(sent)
            for message in sent:
                future = self.waiting.pop(int(message["chat_id"]), None)
                if future is not None and not future.done():
                    future.set_result(float(message["at"]))
            await asyncio.sleep(0.005)


async def chat(client: httpx.AsyncClient, replies: Replies, user: int, until: float, out: list[float]) -> None:
    """One user chatting until `until`: the seconds from each message to its reply."""
    n = 0
    while time.monotonic() < until:
        chat_id = telegram_id(user)
        future = replies.expect(chat_id)
        sent_at = time.time()
        await client.post("/_fake/user_sends", json={"user_id": chat_id, "text": f"u{user} message {n}"})
        out.append(await asyncio.wait_for(future, 60) - sent_at)
        n += 1
        await asyncio.sleep(PAUSE_S)


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    """One GET on a kept-alive connection (plain sockets: a load generator far cheaper than an HTTP client, so
    it keeps its pace on a busy machine); the status."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def flood(port: int, seconds: float, count: int, connections: int = 10) -> dict[str, Any]:
    """`count` GETs spread evenly over `seconds` on `connections` kept-alive connections, /readyz and /metrics
    alternating: statuses, latencies and how long the whole flood took."""
    statuses: list[int] = []
    latencies: list[float] = []
    started = time.monotonic()

    async def connection(first: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(first, count, connections):
                await asyncio.sleep(max(0.0, started + i * seconds / count - time.monotonic()))
                at = time.perf_counter()
                try:
                    statuses.append(await get(reader, writer, "/readyz" if i % 2 == 0 else "/metrics"))
                except (OSError, asyncio.IncompleteReadError):
                    statuses.append(0)
                    return
                latencies.append(time.perf_counter() - at)
        finally:
            writer.close()

    await asyncio.gather(*(connection(n) for n in range(connections)))
    return {"statuses": statuses, "latencies": latencies, "took_s": time.monotonic() - started}


async def phases(bot_api: str, health_port: int) -> dict[str, Any]:
    """The four phases, fresh users in each: reply latencies by kind of phase, and the floods' outcome."""
    latencies: dict[str, list[float]] = {"quiet": [], "flooded": []}
    medians: list[str] = []  # each phase's median, in order: how much the quiet phases alone vary
    statuses: list[int] = []
    health_s: list[float] = []
    took: list[float] = []
    async with httpx.AsyncClient(base_url=bot_api, timeout=60,
                                 limits=httpx.Limits(max_connections=USERS + 10)) as client:
        replies = Replies(client)
        await replies.start()
        watcher = asyncio.create_task(replies.watch())
        try:
            for number, kind in enumerate(PHASES):
                first = 1 + number * USERS
                before = len(latencies[kind])
                until = time.monotonic() + PHASE_S
                users = [chat(client, replies, u, until, latencies[kind]) for u in range(first, first + USERS)]
                if kind == "flooded":
                    flooding = asyncio.create_task(flood(health_port, PHASE_S, FLOOD))
                    await asyncio.gather(*users)
                    flooded = await flooding
                    statuses += flooded["statuses"]
                    health_s += flooded["latencies"]
                    took.append(flooded["took_s"])
                else:
                    await asyncio.gather(*users)
                medians.append(f"{kind[0]} {statistics.median(latencies[kind][before:]) * 1000:.0f}")
        finally:
            watcher.cancel()
    return {"latencies": latencies, "statuses": statuses, "health_s": health_s, "took_s": max(took),
            "medians": medians}


def run_on(kind: str) -> list[dict[str, Any]]:
    """H1 on one database."""
    with database(kind) as url, servers() as srv:
        seed(url, start=1, count=USERS * len(PHASES), history=0)  # fresh users: no history summary mid-run
        port = free_port()
        bot = BotProcess(bot_env(srv, url, HEALTH_PORT=str(port), TELEGRAM_RATE_LIMIT="1000"))
        bot.start(srv.bot_api, timeout=180)  # imports alone take 15 s or more on a busy machine
        try:
            set_latency(srv.gemini, GEMINI_S)
            cpu, started = bot.cpu_s(), time.monotonic()
            result = asyncio.run(phases(srv.bot_api, port))
            result["cpu_s"], result["wall_s"] = bot.cpu_s() - cpu, time.monotonic() - started
        finally:
            set_latency(srv.gemini, 0.0)
            bot.stop()
    quiet, flooded = result["latencies"]["quiet"], result["latencies"]["flooded"]
    q50, f50 = statistics.median(quiet), statistics.median(flooded)
    q95, f95 = (statistics.quantiles(x, n=20)[-1] for x in (quiet, flooded))
    ok = sum(s == 200 for s in result["statuses"])
    ratio = f50 / q50
    health_ms = statistics.median(result["health_s"]) * 1000
    busy = result["cpu_s"] / result["wall_s"]
    return [
        row(f"H1 {kind}: reply latency, 40 users chatting (Gemini {GEMINI_S} s), with 1,000 /readyz + /metrics in "
            "10 s / without (same run, median)",
            f"{f50 * 1000:.0f} / {q50 * 1000:.0f} ms = {ratio:.2f} × (p95 {f95 * 1000:.0f} / {q95 * 1000:.0f} ms; "
            f"{len(flooded)} / {len(quiet)} replies; bot CPU {busy:.0%} busy; by phase (q quiet, f flooded) "
            f"{', '.join(result['medians'])} ms)", "≤ 1.1 ×", ratio <= 1.1),
        row(f"H1 {kind}: the health requests themselves", f"{ok:,} of {len(result['statuses']):,} answered 200, "
            f"median {health_ms:.1f} ms; each flood of {FLOOD:,} took at most {result['took_s']:.1f} s",
            f"all 200 within {PHASE_S * 1.1:.0f} s",
            ok == len(result["statuses"]) and result["took_s"] <= PHASE_S * 1.1),
    ]


def run() -> list[dict[str, Any]]:
    """H1 on SQLite and PostgreSQL."""
    return on_each_database(run_on)
