"""Check-in benchmarks: fan-out through the loopback Bot API, and start-up/memory with 100,000 users scheduled.

The loopback Bot API and Gemini servers run as separate processes (``python -m tests.fakes.botapi`` and
``python -m tests.fakes.gemini``); the bot is the real Application (rate limiter included) on a SQLite file.
The start-up figures come from a fresh child process (``python -m benchmarks.checkins startup ...``), so its
resident memory is the bot's alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import SQLModel

from benchmarks.loopback import ROOT, TOKEN, servers

TABLES = SQLModel.metadata.tables
RATE_USERS = int(os.environ.get("REIN_BENCH_RATE_USERS", "1000"))
FANOUT_USERS = int(os.environ.get("REIN_BENCH_FANOUT_USERS", "10000"))
SCALE_USERS = int(os.environ.get("REIN_BENCH_SCALE_USERS", "100000"))
RAISED_LIMIT = 100_000.0
FIRST_ID = 50_000_000


def _settings(bot_url: str, gemini_url: str, database_url: str, rate: float) -> Any:
    from pipeline.settings import Settings

    return Settings(_env_file=None, telegram_bot_token=TOKEN, telegram_api_url=bot_url,
                    gemini_api_key="bench-key", gemini_base_url=gemini_url, database_url=database_url,
                    opik_track_disable=True, telegram_rate_limit=rate, checkin_scheduler=False,
                    checkin_concurrency=64, log_level="WARNING")


def seed(database_url: str, users: int, due: datetime, *, first_id: int = FIRST_ID) -> None:
    """`users` users with a check-in due at `due` (UTC zone, no quiet hours), written in bulk."""
    from sqlalchemy import create_engine, insert, select

    from storage.db import sync_url, upgrade
    from storage.models import CheckinPrefs, CheckinSchedule, User

    upgrade(database_url)
    engine = create_engine(sync_url(database_url))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        start = conn.execute(select(TABLES["users"].c.id).order_by(TABLES["users"].c.id.desc()).limit(1)).scalar() or 0
        chunk = 5000
        for offset in range(0, users, chunk):
            batch = range(offset, min(users, offset + chunk))
            rows = []
            for i in batch:
                opaque = uuid.uuid4().hex
                user = User(telegram_id=first_id + i, chat_id=first_id + i, opaque_id=opaque,
                            thread_id=f"{opaque[:12]}-{opaque[12:24]}", timezone="UTC", stage="coaching")
                rows.append(user.model_dump(exclude={"id"}))
            conn.execute(insert(TABLES["users"]), rows)
            ids = range(start + offset + 1, start + offset + 1 + len(batch))
            conn.execute(insert(TABLES[CheckinSchedule.__tablename__]), [
                {"user_id": uid, "kind": "checkin", "local_time": due.strftime("%H:%M"), "days": 127,
                 "next_due_at": due, "created_at": now, "updated_at": now} for uid in ids])
            conn.execute(insert(TABLES[CheckinPrefs.__tablename__]), [
                {"user_id": uid, "quiet_start": "00:00", "quiet_end": "00:00", "paused": False,
                 "updated_at": now} for uid in ids])
    engine.dispose()


async def _fanout(bot_url: str, gemini_url: str, users: int, rate: float, first_id: int) -> dict[str, Any]:
    """Run one scheduler pass over `users` check-ins due now; return timing and delivery counts."""
    import aiohttp

    from bot.app import build_application

    folder = tempfile.mkdtemp(prefix="rein-bench-")
    database_url = f"sqlite+aiosqlite:///{folder}/rein.db"
    due = datetime.now(UTC).replace(second=0, microsecond=0)
    await asyncio.to_thread(seed, database_url, users, due, first_id=first_id)
    async with aiohttp.ClientSession() as http:
        before = await (await http.get(f"{bot_url}/_fake/stats")).json()
    app = build_application(_settings(bot_url, gemini_url, database_url, rate))
    await app.initialize()
    assert app.post_init is not None
    await app.post_init(app)
    try:
        assert app.bot_data.services is not None
        scheduler = app.bot_data.services.checkins.scheduler
        assert scheduler is not None
        started = time.perf_counter()
        stats = await scheduler.run_due(due + timedelta(seconds=30))
        elapsed = time.perf_counter() - started
        again = await scheduler.run_due(due + timedelta(seconds=59))
    finally:
        assert app.post_shutdown is not None
        await app.post_shutdown(app)
        await app.shutdown()
    async with aiohttp.ClientSession() as http:
        after = await (await http.get(f"{bot_url}/_fake/stats")).json()
        gate = asyncio.Semaphore(32)

        async def count(chat: int) -> int:
            async with gate, http.get(f"{bot_url}/_fake/messages", params={"chat_id": str(chat)}) as response:
                return len(await response.json())

        per_chat = await asyncio.gather(*(count(first_id + i) for i in range(users)))
    sends = after["methods"].get("sendMessage", 0) - before["methods"].get("sendMessage", 0)
    return {"users": users, "seconds": elapsed, "sent": stats.sent, "failed": stats.failed,
            "second_pass_sent": again.sent, "send_calls": sends, "exactly_once": all(n == 1 for n in per_chat),
            "rate": users / elapsed}


def _startup_child(database_url: str, bot_url: str, gemini_url: str) -> dict[str, Any]:
    """In a fresh process: start the bot's services and the scheduler; time, memory, and one reschedule."""
    started = time.perf_counter()

    async def main() -> dict[str, Any]:
        from bot.app import build_application
        from pipeline.speaker import Speaker

        settings = _settings(bot_url, gemini_url, database_url, 30.0).model_copy(update={"checkin_scheduler": True})
        app = build_application(settings)
        await app.initialize()
        assert app.post_init is not None
        await app.post_init(app)
        svc = app.bot_data.services
        assert svc is not None
        scheduler = svc.checkins.scheduler
        assert scheduler is not None and scheduler.running, "on SQLite this process leads, so the scheduler runs"
        ready = time.perf_counter() - started
        rss = _rss_mb()
        costs = []
        for i in range(200):
            who = Speaker(telegram_id=FIRST_ID + i, chat_id=FIRST_ID + i)
            t0 = time.perf_counter()
            await svc.checkins.prefs.command(who, "07:30" if i % 2 else "19:15 mon,wed,fri")
            costs.append(time.perf_counter() - t0)
        pass_t0 = time.perf_counter()
        idle = await scheduler.run_due(datetime.now(UTC) - timedelta(days=1))
        idle_pass = time.perf_counter() - pass_t0
        assert app.post_shutdown is not None
        await app.post_shutdown(app)
        await app.shutdown()
        return {"startup_s": ready, "rss_mb": rss, "peak_mb": _rss_mb("VmHWM"),
                "reschedule_ms": statistics.median(costs) * 1000, "idle_pass_ms": idle_pass * 1000,
                "idle_seen": idle.seen}

    return asyncio.run(main())


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _startup(bot_url: str, gemini_url: str, users: int) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="rein-bench-")
    database_url = f"sqlite+aiosqlite:///{folder}/rein.db"
    seed(database_url, users, datetime.now(UTC) + timedelta(days=1))
    out = subprocess.run([sys.executable, "-m", "benchmarks.checkins", "startup", database_url, bot_url, gemini_url],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=600, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _apscheduler_jobs(users: int) -> dict[str, float]:
    """For comparison: the alternative not taken, one APScheduler date job per user in memory."""
    code = (
        "import time,asyncio,datetime as d\n"
        "from apscheduler.schedulers.asyncio import AsyncIOScheduler\n"
        "from apscheduler.triggers.date import DateTrigger\n"
        "def rss():\n"
        "    return [int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmRSS')][0]/1024\n"
        "async def job(uid): pass\n"
        "async def main():\n"
        "    base=rss(); s=AsyncIOScheduler(timezone=d.UTC); s.start(); t=time.perf_counter()\n"
        "    when=d.datetime.now(d.UTC)+d.timedelta(days=1)\n"
        f"    for i in range({users}): s.add_job(job, DateTrigger(run_date=when+d.timedelta(seconds=i)), args=[i],"
        " id=str(i))\n"
        "    print(time.perf_counter()-t, rss()-base); s.shutdown(wait=False)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    seconds, megabytes = (float(x) for x in out.stdout.split())
    return {"seconds": seconds, "mb": megabytes}


def run() -> list[dict[str, Any]]:
    """Every check-in figure as rows: name, figure, target, holds."""
    rows: list[dict[str, Any]] = []
    with servers() as srv:
        bot_url, gemini_url = srv.bot_api, srv.gemini
        limited = asyncio.run(_fanout(bot_url, gemini_url, RATE_USERS, 30.0, FIRST_ID))
        fraction = limited["rate"] / 30.0
        rows.append({"name": f"fan-out {RATE_USERS:,} due in one minute at the 30/s limit: delivery rate",
                     "figure": f"{limited['rate']:.1f}/s = {fraction:.2f} of the limit ({limited['seconds']:.1f} s)",
                     "target": ">= 0.95 of 30/s", "holds": fraction >= 0.95})
        rows.append(_once(f"fan-out {RATE_USERS:,} at 30/s: delivered exactly once", limited))
        raised = asyncio.run(_fanout(bot_url, gemini_url, FANOUT_USERS, RAISED_LIMIT, FIRST_ID + 1_000_000))
        rows.append({"name": f"fan-out {FANOUT_USERS:,} due in one minute, limit raised: raw capacity",
                     "figure": f"{raised['rate']:.0f}/s ({raised['seconds']:.1f} s)", "target": "(measured)",
                     "holds": raised["failed"] == 0})
        rows.append(_once(f"fan-out {FANOUT_USERS:,}, limit raised: delivered exactly once", raised))
        scale = _startup(bot_url, gemini_url, SCALE_USERS)
    rows.append({"name": f"start-up with {SCALE_USERS:,} users scheduled (process start to scheduler armed)",
                 "figure": f"{scale['startup_s']:.2f} s", "target": "< 10 s", "holds": scale["startup_s"] < 10})
    rows.append({"name": f"resident memory with {SCALE_USERS:,} users scheduled (after start; peak)",
                 "figure": f"{scale['rss_mb']:.0f} MB; peak {scale['peak_mb']:.0f} MB", "target": "< 300 MB",
                 "holds": scale["peak_mb"] < 300})
    rows.append({"name": "reschedule one user (/checkin HH:MM days, median of 200)",
                 "figure": f"{scale['reschedule_ms']:.1f} ms", "target": "(measured)", "holds": True})
    rows.append({"name": f"scheduler pass with nothing due, {SCALE_USERS:,} schedules",
                 "figure": f"{scale['idle_pass_ms']:.1f} ms", "target": "(measured)", "holds": scale["idle_seen"] == 0})
    jobs = _apscheduler_jobs(SCALE_USERS)
    rows.append({"name": f"for comparison: {SCALE_USERS:,} APScheduler date jobs in memory (not used)",
                 "figure": f"{jobs['seconds']:.1f} s to add, +{jobs['mb']:.0f} MB", "target": "(reference)",
                 "holds": True})
    return rows


def _once(name: str, result: dict[str, Any]) -> dict[str, Any]:
    ok = (result["exactly_once"] and result["sent"] == result["users"] == result["send_calls"]
          and result["second_pass_sent"] == 0 and result["failed"] == 0)
    figure = (f"{result['sent']:,} sent, {result['send_calls']:,} sendMessage calls, "
              f"{result['failed']} failed, {result['second_pass_sent']} on a second pass")
    return {"name": name, "figure": figure, "target": "each user exactly 1", "holds": ok}


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "startup":
        print(json.dumps(_startup_child(*sys.argv[2:5])))
    else:
        from benchmarks.__main__ import print_table

        print_table(run())
