"""Loopback servers and a bot process for the benchmarks: everything over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "123456:BENCH-token-abcdefghijklmnopqrstuvwxyz"


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    """Block until something listens on the port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


ALL_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
# With two or more CPUs the bot gets the last one to itself and the load (the loopback servers and this
# driver) the others, so the bot's figures are its own and not those of whatever shares its core.
BOT_CPU = ALL_CPUS[-1] if len(ALL_CPUS) > 1 else None


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Run the block (and the servers it starts) off the bot's CPU."""
    if BOT_CPU is None:
        yield
        return
    os.sched_setaffinity(0, set(ALL_CPUS) - {BOT_CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(ALL_CPUS))


def databases() -> list[str]:
    """The databases a benchmark runs on: `REIN_BENCH_DATABASES` (comma-separated), else SQLite and PostgreSQL."""
    return [k.strip() for k in os.environ.get("REIN_BENCH_DATABASES", "sqlite,postgres").split(",")]


def on_each_database(run_on: Callable[[str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A benchmark's rows on every database of `databases()`, in an isolated working directory."""
    with isolated():
        return [r for kind in databases() for r in run_on(kind)]


def all_cpus() -> None:
    """In the bot's child process before exec: every CPU again (CPU_AFFINITY then picks)."""
    if ALL_CPUS:
        os.sched_setaffinity(0, set(ALL_CPUS))


@dataclass
class Servers:
    """URLs of the loopback Bot API, Gemini and Opik servers."""

    bot_api: str
    gemini: str
    opik: str


def _spawn(module: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def servers(*, gemini_latency: float = 0.0) -> Iterator[Servers]:
    """The three loopback servers, each in its own process (the Bot API accepts any chat)."""
    ports = [free_port() for _ in range(3)]
    procs = [
        _spawn("tests.fakes.botapi", "--port", str(ports[0]), "--token", TOKEN, "--any-chat"),
        _spawn("tests.fakes.gemini", "--port", str(ports[1]), "--latency", str(gemini_latency)),
        _spawn("tests.fakes.opik_stub", "--port", str(ports[2])),
    ]
    try:
        for port in ports:
            wait_port(port)
        yield Servers(*(f"http://127.0.0.1:{p}" for p in ports))
    finally:
        stop_all(procs)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate processes and wait for them."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def bot_env(srv: Servers, database_url: str, **extra: str) -> dict[str, str]:
    """The environment `python -m bot` gets: loopback servers, the database, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "GEMINI_", "OPIK_", "DATABASE"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": srv.bot_api,
        "GEMINI_API_KEY": "bench-key",
        "GEMINI_BASE_URL": srv.gemini,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "JUDGE_ENABLED": "false",
        "SAFETY_CLASSIFIER": "false",  # its cost is measured on its own (benchmarks/safety.py)
        "LLM_CALLS_PER_MINUTE": "1000",
        "OPIK_SENTRY_ENABLE": "false",
        "OPIK_ANALYTICS_ENABLE": "false",
        "CPU_AFFINITY": "auto" if BOT_CPU is None else str(BOT_CPU),
        "HEALTH_PORT": "0",  # several bots may run at once: each health server on a free port
    })
    env.update(extra)
    return env


class BotProcess:
    """`python -m bot` (or another bot `command`), started the way users start it, with CPU and memory
    readings from /proc."""

    def __init__(self, env: dict[str, str], *, command: list[str] | None = None) -> None:
        self.env = env
        self.command = command or [sys.executable, "-m", "bot"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_s = 0.0

    def start(self, bot_api: str, timeout: float = 60.0) -> None:
        """Start and wait until the bot polls for updates."""
        before = calls(bot_api, "getUpdates")
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=all_cpus)
        deadline = time.monotonic() + timeout
        while calls(bot_api, "getUpdates") <= before:
            if self.proc.poll() is not None:
                error = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"bot exited: {error}")
            if time.monotonic() > deadline:
                raise RuntimeError("bot did not start polling")
            time.sleep(0.05)
        self.started_s = time.perf_counter() - started

    def cpu_s(self) -> float:
        """User plus system CPU seconds the bot process has used."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        """Resident memory of the bot process in MB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        """SIGTERM, then wait (kill after 20 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def calls(bot_api: str, method: str) -> int:
    """How many times the bot called a Bot API method so far."""
    try:
        stats: dict[str, Any] = httpx.get(f"{bot_api}/_fake/stats", timeout=10).json()
    except httpx.HTTPError:
        return 0
    return int(stats["methods"].get(method, 0))
