"""The /progress chart: render time per chart, and the bot's resident memory after 100 charts (B4's limit).

`python -m benchmarks chart` prints the rows; `python -m benchmarks.chart --samples docs/images` writes the
sample charts the README shows (one per script: Latin, Cyrillic, Arabic).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loopback import ROOT, BotProcess, bot_env, isolated, servers
from benchmarks.turns import database, row, seed, telegram_id

RENDERS = 30  # charts drawn for the median
CHARTS = 100  # /progress commands before the memory reading
RSS_LIMIT_MB = 300  # B4's limit (benchmarks/turns.py)
MONDAY = date(2026, 10, 12)
RATES = [None, 0.2, 0.5, 1.0, 0.75, None, 0.33, 0.86]
SAMPLES = {  # locale: (goal, next milestone), as a user of that script would write them
    "en": ("Run a 10k by June without stopping, three times a week", "First 5 km without a break"),
    "ru": ("Пробежать 10 км к июню без остановок", "Первые 5 км без остановки"),
    "ar": ("أن أركض عشرة كيلومترات بحلول يونيو", "أول خمسة كيلومترات دون توقف"),
}

# Run in a fresh interpreter, so the first chart pays for importing matplotlib as the bot's first /progress does.
TIMING = """
import json, statistics, sys, time
from benchmarks.chart import sample
from pipeline.chart import render
started = time.perf_counter()
render(sample("en"), "en")
first = time.perf_counter() - started
times = []
for n in range(int(sys.argv[1])):
    code = ("en", "ru", "ar")[n % 3]
    started = time.perf_counter()
    render(sample(code), code)
    times.append(time.perf_counter() - started)
print(json.dumps({"first_s": first, "median_ms": statistics.median(times) * 1000}))
"""


def sample(code: str) -> Any:
    """The sample chart of a locale: eight weeks with two empty ones, a streak of 3, a milestone ahead."""
    from pipeline.chart import ChartSpec

    goal, milestone = SAMPLES[code]
    return ChartSpec(goal=goal, weeks=[(MONDAY + timedelta(weeks=i), r) for i, r in enumerate(RATES)], streak=3,
                     milestone=(milestone, MONDAY + timedelta(weeks=9, days=3)))


def write_samples(folder: Path) -> list[Path]:
    """Render each locale's sample chart in that locale into `folder`/chart-<locale>.png."""
    from pipeline.chart import render
    from pipeline.i18n import use_locale

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for code in SAMPLES:
        with use_locale(code):
            path = folder / f"chart-{code}.png"
            path.write_bytes(render(sample(code), code))
        paths.append(path)
    return paths


def render_times() -> dict[str, float]:
    """The first chart (with matplotlib's import) and the median of RENDERS more, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", TIMING, str(RENDERS)], cwd=ROOT, check=True, capture_output=True,
                         text=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def progress_commands(bot_api: str, user: int, count: int) -> None:
    """A user sends /progress `count` times, each after the chart before it arrived (a sendPhoto call)."""
    async with httpx.AsyncClient(base_url=bot_api, timeout=60) as client:
        for _ in range(count):
            base = await photos(client)
            await client.post("/_fake/user_sends", json={"user_id": telegram_id(user), "text": "/progress"})
            deadline = time.monotonic() + 60
            while await photos(client) <= base:
                if time.monotonic() > deadline:
                    raise RuntimeError("no chart within 60 s")
                await asyncio.sleep(0.005)


async def photos(client: httpx.AsyncClient) -> int:
    """How many photos the bot has sent so far."""
    stats: dict[str, Any] = (await client.get("/_fake/stats")).json()
    return int(stats["methods"].get("sendPhoto", 0))


def bot_memory() -> tuple[float, float, float]:
    """The bot's RSS idle, after its first chart, and after CHARTS charts (MB), on SQLite."""
    with isolated(), database("sqlite") as url, servers() as srv:
        seed(url, start=1, count=1)
        bot = BotProcess(bot_env(srv, url))
        bot.start(srv.bot_api)
        try:
            time.sleep(1)
            idle = bot.rss_mb()
            asyncio.run(progress_commands(srv.bot_api, 1, 1))
            first = bot.rss_mb()
            asyncio.run(progress_commands(srv.bot_api, 1, CHARTS - 1))
            return idle, first, bot.rss_mb()
        finally:
            bot.stop()


def run() -> list[dict[str, Any]]:
    """Render time per chart, and the bot's memory after 100 /progress charts."""
    times = render_times()
    idle, first, after = bot_memory()
    return [
        row("render time per chart (median of 30: en, ru, ar)", f"{times['median_ms']:.0f} ms", "(measured)", True),
        row("the first chart of a process (imports matplotlib)", f"{times['first_s']:.2f} s", "(measured)", True),
        row(f"bot RSS after {CHARTS} /progress charts (idle; after the first)",
            f"{after:.0f} MB ({idle:.0f} MB; {first:.0f} MB)", f"≤ {RSS_LIMIT_MB} MB (B4)", after <= RSS_LIMIT_MB),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--samples"]:
        for written in write_samples(Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images")):
            print(written)
    else:
        print(json.dumps(run(), indent=2))
