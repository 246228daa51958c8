"""Storage and process faults: a PostgreSQL restart, SQLite lock contention, and SIGKILL in the middle of a turn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from glob import glob
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot import texts
from bot.render import encode
from storage import turns, users
from storage.db import Database
from storage.models import Plan, Stage, Turn, User
from tests.conftest import TOKEN, Harness, make_settings, start_bot, stop_bot
from tests.test_faults import to_coaching

ANN = 5301
BOB = 5302
CAROL = 5303
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----- PostgreSQL restarted -----------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl): Debian's newest, else the one on PATH."""
    debian = glob("/usr/lib/postgresql/*/bin/initdb")
    if debian:
        newest = max(debian, key=lambda path: [int(part) for part in re.findall(r"\d+", path)])
        return Path(newest).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """A throw-away PostgreSQL server of our own (never the machine's shared one), stoppable at will.

    initdb refuses to run as root, so as root its programs run as the `postgres` user (whom Debian's
    package creates); for anyone else they run as that user.
    """

    def __init__(self) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            pytest.skip("needs PostgreSQL's server programs (initdb, pg_ctl); `make test` installs them")
        self.bin = bin_dir
        self.as_user = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="rein-pg-", dir="/tmp"))
        if self.as_user:
            shutil.chown(self.dir, self.as_user, self.as_user)
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._run(str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=60, cwd=self.dir,
                       user=self.as_user, group=self.as_user, extra_groups=[] if self.as_user else None)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-o", options, "-l",
                  str(self.dir / "log"), "-w", "-t", "30", "start")

    def stop(self) -> None:
        """Stop the server at once (open connections are cut)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        """Stop (if running) and delete everything."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL on a free port, removed after the test."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.postgres
async def test_postgres_restart_fails_turns_gracefully_and_service_resumes(bot_api, gemini, private_pg) -> None:
    """While PostgreSQL is down, messages and presses get a clear "send it again" reply; afterwards all works."""
    app = await start_bot(make_settings(bot_api, gemini, private_pg.url))
    h = Harness(app, bot_api, gemini)
    try:
        await to_coaching(h, ANN)
        reply = (await h.say(ANN, "Before the outage"))[0]
        await asyncio.to_thread(private_pg.stop)

        down = (await h.say(ANN, "During the outage", timeout=20))[0]
        assert down.text == texts.STORAGE_DOWN
        four = next(d for label, d in reply.buttons() if label == "☆4")
        query = bot_api.user_presses(ANN, reply.message_id, four)
        await h.settled(timeout=30)
        assert query in bot_api.callback_answers, "the spinner stops even though nothing could be stored"
        assert bot_api.messages(ANN)[-1].text == texts.STORAGE_DOWN
        assert (await h.say(ANN, "/plan", timeout=20))[0].text == texts.STORAGE_DOWN
        before = len(bot_api.messages(ANN))
        query = bot_api.user_presses(ANN, reply.message_id, encode("goal_keep", 1))
        await bot_api.wait_messages(ANN, before + 1, timeout=20)
        assert query in bot_api.callback_answers and bot_api.messages(ANN)[-1].text == texts.STORAGE_DOWN

        await asyncio.to_thread(private_pg.start)
        again = (await h.say(ANN, "During the outage", timeout=20))[0]
        assert again.text == "Coach: During the outage"
        async with h.services.db.session() as session:
            user = await users.get_user(session=session, telegram_id=ANN)
            assert user is not None and user.stage == Stage.COACHING
            plans = (await session.scalars(select(Plan))).all()
        assert [p.status for p in plans] == ["accepted"]
        assert len(await h.say(ANN, "/plan", expect=2)) == 2
    finally:
        await stop_bot(app)


# ----- SQLite lock contention ---------------------------------------------------------------------


async def test_sqlite_concurrent_writers_and_a_held_write_lock_lose_nothing(bot_api, gemini, sqlite_url) -> None:
    """Another process holding SQLite's write lock and writers in parallel: every turn waits, none fails."""
    app = await start_bot(make_settings(bot_api, gemini, sqlite_url))
    h = Harness(app, bot_api, gemini)
    other = Database(sqlite_url)
    try:
        for user in (ANN, BOB, CAROL):
            await h.say(user, "/start", expect=2)
        path = sqlite_url.split(":///", 1)[1]
        holder = sqlite3.connect(path, timeout=30, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # a writer elsewhere holds the lock...
        holder.execute("UPDATE users SET summary = 'held' WHERE telegram_id = ?", (ANN,))
        release = threading.Timer(0.8, holder.commit)  # ...for 0.8 s
        release.start()

        async def outside_writer(n: int) -> None:
            async with other.session() as session:
                user = await users.get_or_create_user(session=session, telegram_id=9000 + n, chat_id=9000 + n)
                for i in range(5):
                    await turns.add_turn(session=session, user=user, role="user", kind="coaching", text=f"w{i}")

        for user in (ANN, BOB, CAROL):
            bot_api.user_sends(user, f"goal of {user}")
        await asyncio.gather(*(outside_writer(n) for n in range(10)))
        for user in (ANN, BOB, CAROL):
            await bot_api.wait_messages(user, 3, timeout=20)
        release.join()
        holder.close()
        async with h.services.db.session() as session:
            user_turns = await session.scalar(select(func.count()).select_from(Turn).where(Turn.role == "user"))
            user_count = await session.scalar(select(func.count()).select_from(User))
        assert user_turns == 3 + 50 and user_count == 13
        assert all(m.buttons() for user in (ANN, BOB, CAROL) for m in bot_api.messages(user)[2:])
    finally:
        await other.dispose()
        await stop_bot(app)


# ----- SIGKILL in the middle of a turn ------------------------------------------------------------


def _http(url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


class Processes:
    """The Bot API and Gemini fakes and the bot, each its own process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.api_port, self.gemini_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.gemini = f"http://127.0.0.1:{self.gemini_port}"
        self.db_path = tmp / "rein.db"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.bot: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=env or os.environ.copy())
        self.procs.append(proc)
        return proc

    def start_fakes(self) -> None:
        self._spawn(["-m", "tests.fakes.botapi", "--port", str(self.api_port), "--token", TOKEN], "botapi.log")
        self._spawn(["-m", "tests.fakes.gemini", "--port", str(self.gemini_port)], "gemini.log")
        self.wait(lambda: self._alive(f"{self.api}/_fake/stats") and self._alive(f"{self.gemini}/_fake/stats"))

    def start_bot(self, **extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPIK_", "TELEGRAM_", "GEMINI_"))}
        env.update(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_URL=self.api, GEMINI_API_KEY="k",
                   GEMINI_BASE_URL=self.gemini, GEMINI_TIMEOUT_S="60", DATABASE_URL=f"sqlite+aiosqlite:///{self.db_path}",
                   OPIK_TRACK_DISABLE="true", JUDGE_ENABLED="false", SAFETY_CLASSIFIER="false", LOG_LEVEL="INFO",
                   OPIK_SENTRY_ENABLE="false", OPIK_ANALYTICS_ENABLE="false", WEBHOOK_PORT="0",
                   HEALTH_PORT="0")
        env.update(extra)
        self.bot = self._spawn(["-m", "bot"], "bot.log", env)

    def kill_bot(self) -> None:
        assert self.bot is not None
        self.bot.send_signal(signal.SIGKILL)
        self.bot.wait(10)

    @staticmethod
    def _alive(url: str) -> bool:
        try:
            _http(url)
        except OSError:
            return False
        return True

    def wait(self, predicate: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                path = self.tmp / "bot.log"
                log = path.read_text(errors="replace")[-3000:] if path.exists() else ""
                raise TimeoutError(f"condition not met in {timeout}s; bot log tail:\n{log}")
            time.sleep(0.05)

    def messages(self, user: int) -> list[dict[str, Any]]:
        return list(_http(f"{self.api}/_fake/messages?chat_id={user}"))

    def say(self, user: int, text: str, expect: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        before = len(self.messages(user))
        _http(f"{self.api}/_fake/user_sends", {"user_id": user, "text": text})
        self.wait(lambda: len(self.messages(user)) >= before + expect, timeout)
        return self.messages(user)[before:]

    def press(self, user: int, message: dict[str, Any], label: str, expect: int = 1) -> list[dict[str, Any]]:
        rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
        data = next(b["callback_data"] for row in rows for b in row if b["text"].startswith(label))
        before = len(self.messages(user))
        _http(f"{self.api}/_fake/user_presses", {"user_id": user, "message_id": message["message_id"], "data": data})
        self.wait(lambda: len(self.messages(user)) >= before + expect)
        return self.messages(user)[before:]

    def counts(self) -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as conn:
            return list(conn.execute(sql).fetchall())

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    """The fakes started as their own processes; everything killed at the end."""
    procs = Processes(tmp_path)
    try:
        await asyncio.to_thread(procs.start_fakes)
        yield procs
    finally:
        procs.stop_all()


def _sigkill_scenario(p: Processes) -> None:
    p.start_bot()
    p.wait(lambda: bool(p.query("SELECT 1 FROM sqlite_master WHERE name='users'")) if p.db_path.exists() else False)
    p.say(ANN, "/start", expect=2)
    _http(f"{p.gemini}/_fake/queue", [{"enough_information": True, "missing": [], "question": ""}])
    plan = p.say(ANN, "Swim 1 km by summer", expect=2)[-1]
    p.press(ANN, plan, "✅ Accept")
    reply = p.say(ANN, "Swam 200 m today")[0]
    p.press(ANN, reply, "☆4", expect=0)
    p.wait(lambda: p.query("SELECT value FROM ratings") == [(4,)])
    before = p.counts()

    _http(f"{p.gemini}/_fake/config", {"latency": 60})  # the next Gemini call hangs...
    asked = _http(f"{p.gemini}/_fake/stats")["requests"]
    _http(f"{p.api}/_fake/user_sends", {"user_id": ANN, "text": "Interrupted message"})
    p.wait(lambda: _http(f"{p.gemini}/_fake/stats")["requests"] > asked)  # ...while the turn is in flight
    p.kill_bot()
    _http(f"{p.gemini}/_fake/config", {"latency": 0})

    after = p.counts()
    assert after["turns"] == before["turns"] + 1, "the interrupted message was stored before the LLM call"
    assert {t: n for t, n in after.items() if t != "turns"} == {t: n for t, n in before.items() if t != "turns"}
    assert p.query("SELECT stage FROM users") == [("coaching",)]
    assert p.query("SELECT status FROM plans") == [("accepted",)]
    assert p.query("SELECT value FROM ratings") == [(4,)]
    assert p.query("SELECT text, answered FROM turns WHERE role='user' ORDER BY id DESC LIMIT 1") == [
        ("Interrupted message", 0)]

    p.start_bot()  # a restart: the interrupted message is answered by itself; then the user writes again
    p.wait(lambda: any((m.get("text") or "") == "Coach: Interrupted message" for m in p.messages(ANN)))
    p.say(ANN, "/start")
    p.wait(lambda: any((m.get("text") or "").startswith("Welcome back") for m in p.messages(ANN)))
    _http(f"{p.api}/_fake/user_sends", {"user_id": ANN, "text": "Interrupted message, again"})
    p.wait(lambda: any((m.get("text") or "") == "Coach: Interrupted message, again" for m in p.messages(ANN)))
    texts_seen = [m.get("text") or "" for m in p.messages(ANN)]
    assert texts_seen.count("Coach: Interrupted message, again") == 1
    assert texts_seen.count("Coach: Interrupted message") == 1, "the interrupted message is answered once"
    assert p.query("SELECT value FROM ratings") == [(4,)]
    assert p.query("SELECT status FROM plans") == [("accepted",)]


async def test_sigkill_mid_turn_keeps_stage_plan_and_ratings_and_the_user_can_resend(processes: Processes) -> None:
    """`python -m bot` killed with SIGKILL while Gemini thinks: on restart everything is intact, the interrupted
    message is answered once by itself, and a resend works."""
    await asyncio.to_thread(_sigkill_scenario, processes)


def _opik_unreachable_scenario(p: Processes) -> tuple[float, float, float]:
    p.start_bot(OPIK_TRACK_DISABLE="false", OPIK_URL_OVERRIDE=f"http://127.0.0.1:{free_port()}/api",
                OPIK_FLUSH_TIMEOUT_S="3")
    p.wait(lambda: bool(p.query("SELECT 1 FROM sqlite_master WHERE name='users'")) if p.db_path.exists() else False)
    p.say(ANN, "/start", expect=2)
    _http(f"{p.gemini}/_fake/queue", [{"enough_information": True, "missing": [], "question": ""}])
    plan = p.say(ANN, "Stretch every morning", expect=2)[-1]
    p.press(ANN, plan, "✅ Accept")
    latencies = []
    for n in range(5):
        started = time.monotonic()
        assert p.say(ANN, f"stretched {n}")[0]["text"] == f"Coach: stretched {n}"
        latencies.append(time.monotonic() - started)
    assert p.bot is not None
    started = time.monotonic()
    p.bot.send_signal(signal.SIGTERM)
    p.bot.wait(30)
    return sorted(latencies)[len(latencies) // 2], max(latencies), time.monotonic() - started


async def test_opik_unreachable_from_the_start_costs_no_turn_time_and_shutdown_is_bounded(
    processes: Processes, record_property: Any
) -> None:
    """`python -m bot` with Opik's URL pointing at a closed port answers at once and stops within the flush bound."""
    median, worst, shutdown = await asyncio.to_thread(_opik_unreachable_scenario, processes)
    record_property("median_turn_ms", round(median * 1000))
    record_property("shutdown_s", round(shutdown, 2))
    print(f"opik unreachable: median turn {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms, "
          f"SIGTERM to exit {shutdown:.2f} s")
    assert median < 1.0, "a turn does not wait for Opik"
    assert shutdown < 3 + 10, "OPIK_FLUSH_TIMEOUT_S=3 bounds the flush at shutdown"
    assert processes.bot is not None and processes.bot.returncode is not None
