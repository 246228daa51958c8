"""B0, the stack's floor: what python-telegram-bot, google-genai, SQLAlchemy and Opik cost at their least,
each alone in its own process on the bot's CPU, in the same run as B2 — so B2's figures can be read against
what no change inside Rein can remove.

`python -m benchmarks.floor <part> ...` runs one part in the child process and prints its figure as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.loopback import BOT_CPU, ROOT, TOKEN, BotProcess, all_cpus, databases, isolated, servers
from benchmarks.registry import FLOOR
from benchmarks.turns import burst, database, row, seed

CALLS = 400  # per measured part
SESSIONS = (6, 3)  # a coaching turn's nine statements (tests/test_queries.py), by session
HISTORY = 12  # messages in a coaching prompt's window


def _pin() -> None:
    from bot.affinity import pin

    if BOT_CPU is not None:
        pin(str(BOT_CPU))


def _settings(**values: Any) -> Any:
    from pipeline.settings import Settings

    return Settings(telegram_bot_token=TOKEN, gemini_api_key="bench-key", **values)


def _loop(main: Any) -> Any:
    import uvloop

    return uvloop.run(main)


# ----- the parts, each run in a child process -----------------------------------------------------

def echo_bot(bot_api: str) -> None:
    """An echo bot on python-telegram-bot set up as Rein's (`application_builder`): every text is answered
    with one HTML message carrying the 1–5 rating keyboard."""
    from telegram import Update
    from telegram.constants import ParseMode
    from telegram.ext import ContextTypes, MessageHandler, filters

    from bot.app import application_builder
    from bot.render import keyboard

    markup = keyboard([], rate_turn=1)

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None and update.effective_message is not None
        await context.bot.send_message(update.effective_chat.id, f"re: {update.effective_message.text}",
                                       reply_markup=markup, parse_mode=ParseMode.HTML)

    app = application_builder(_settings(telegram_api_url=bot_api, telegram_rate_limit=1000)).build()
    app.add_handler(MessageHandler(filters.TEXT, echo))
    import uvloop

    uvloop.install()
    app.run_polling()


def _history() -> list[Any]:
    from pipeline.llm import model_content, user_content

    return [user_content(f"message {n} " + "x" * 80) if n % 2 == 0 else model_content(f"answer {n} " + "y" * 200)
            for n in range(HISTORY - 1)] + [user_content("how is my week going?")]


async def _gemini(gemini: str, path: str) -> float:
    from google import genai
    from google.genai import types

    from pipeline.llm import LLM

    llm = LLM(api_key="bench-key", model="gemini-2.5-flash", base_url=gemini)
    client = genai.Client(api_key="bench-key", http_options=types.HttpOptions(base_url=gemini))
    contents, system = _history(), "You are a coach. " * 40
    config = types.GenerateContentConfig(system_instruction=system, temperature=0.7)

    async def one() -> None:
        if path == "sdk":
            await client.aio.models.generate_content(model=llm.model, contents=contents, config=config)
        else:
            await llm.generate(contents, config)

    try:
        await asyncio.gather(*[one() for _ in range(40)])
        started = time.process_time()
        for _ in range(CALLS // 50):
            await asyncio.gather(*[one() for _ in range(50)])
        return (time.process_time() - started) * 1000 / CALLS
    finally:
        await llm.aclose()
        await client.aio.aclose()


async def _statement(url: str) -> float:
    from sqlalchemy import text

    from storage.db import Database

    db = Database(url)
    select_one = text("SELECT 1")

    async def one() -> None:  # a coaching turn's shape: six statements in one session, three in another
        for count in SESSIONS:
            async with db.session() as session:
                for _ in range(count):
                    (await session.execute(select_one)).all()

    try:
        for _ in range(40):
            await one()
        started = time.process_time()
        for _ in range(CALLS):
            await one()
        return (time.process_time() - started) * 1000 / CALLS
    finally:
        await db.dispose()


def _opik(opik_url: str) -> float:
    from pipeline.tracing import Tracer

    tracer = Tracer(_settings(opik_url_override=opik_url, opik_project_name="rein-bench"))
    span_input = {"system": "You are a coach. " * 40, "temperature": 0.7, "schema": None,
                  "messages": [{"role": c.role, "text": c.parts[0].text} for c in _history()]}

    def one(n: int) -> None:
        metadata = {"stage": "coaching", "goal_id": n, "model": "gemini-2.5-flash", "user": "u"}
        with tracer.turn("coach.coaching", thread_id=f"t{n % 50}", input={"message": "how is my week going?"},
                         metadata=metadata, tags=["coaching"]) as trace, \
                tracer.llm_call(model="gemini-2.5-flash", input=span_input) as call:
            call.record("Coach: " + "z" * 300, prompt_tokens=600, output_tokens=80, cost_usd=0.0004,
                        metadata={"finish_reason": "STOP"})
            trace.set_output({"reply": "Coach: " + "z" * 300})

    for n in range(40):
        one(n)
    tracer.flush()
    started = time.process_time()
    for n in range(CALLS):
        one(n)
    tracer.flush()
    return (time.process_time() - started) * 1000 / CALLS


def child(argv: list[str]) -> None:
    """Run one part (in the child process) and print its figure."""
    _pin()
    part, arg = argv[0], argv[1]
    if part == "echo":
        echo_bot(arg)
        return
    figure = {"gemini-sdk": lambda: _loop(_gemini(arg, "sdk")), "gemini-rein": lambda: _loop(_gemini(arg, "rein")),
              "statement": lambda: _loop(_statement(arg)), "opik": lambda: _opik(arg)}[part]()
    print(json.dumps(figure))


# ----- the driver ---------------------------------------------------------------------------------

def _measure(part: str, arg: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.floor", part, arg], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True, preexec_fn=all_cpus, timeout=600)
    return float(done.stdout.strip().splitlines()[-1])


def _echo_cost(bot_api: str) -> float:
    bot = BotProcess({**os.environ, "PYTHONPATH": str(ROOT)},
                     command=[sys.executable, "-m", "benchmarks.floor", "echo", bot_api])
    bot.start(bot_api)
    try:
        asyncio.run(burst(bot_api, list(range(1, 21)), 2))  # warm-up
        cpu = bot.cpu_s()
        result = asyncio.run(burst(bot_api, list(range(21, 121)), 4))
        return (bot.cpu_s() - cpu) * 1000 / result["delivered"]
    finally:
        bot.stop()


def run() -> list[dict[str, Any]]:
    """B0 on this machine: each library's least cost, and what a coaching turn costs at the floor."""
    kinds = databases()
    with isolated(), servers() as srv:
        echo = _echo_cost(srv.bot_api)
        sdk, adapter = _measure("gemini-sdk", srv.gemini), _measure("gemini-rein", srv.gemini)
        opik = _measure("opik", srv.opik)
    statement: dict[str, float] = {}
    for kind in kinds:
        with database(kind) as url:
            seed(url, start=1, count=1, history=0)
            statement[kind] = _measure("statement", url)
    rows = [
        row("B0 python-telegram-bot alone: one text in, one HTML reply with buttons out (echo bot, Rein's "
            "request and limiter settings)", f"{echo:.2f} ms per message", "(floor)", True),
        row(f"B0 google-genai alone: one call with a {HISTORY}-message history, the SDK's public client / through "
            "Rein's adapter (the same public call, plus retries and error mapping)",
            f"{sdk:.2f} / {adapter:.2f} ms", "(floor)", True),
        row("B0 Opik alone: one trace with one LLM span as Rein sends them (SDK in process, flushed)",
            f"{opik:.2f} ms per turn", "(floor)", True),
    ]
    for kind, cost in statement.items():
        # A turn: the update and the reply (the echo), one typing indicator (another send), one Gemini call,
        # the statements.
        floor = 2 * echo + sdk + cost
        FLOOR[kind] = (floor, floor + opik)
        rows.append(row(f"B0 {kind}: SQLAlchemy async, nine trivial statements (SELECT 1) in two sessions "
                        "(a coaching turn's shape)", f"{cost:.2f} ms", "(floor)", True))
        rows.append(row(f"B0 {kind}: a coaching turn at the stack's floor (2 × echo + 1 public Gemini call + the "
                        "nine statements), untraced / traced", f"{floor:.1f} / {floor + opik:.1f} ms", "(floor)",
                        True))
    return rows


if __name__ == "__main__":
    child(sys.argv[1:])
