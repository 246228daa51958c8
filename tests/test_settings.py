"""Settings and start-up: required values, malformed values, one clear line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.settings import Settings, describe_error

ROOT = Path(__file__).resolve().parents[1]


def _run_bot(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "GEMINI_", "OPIK_"))}
    clean.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "bot"], cwd=cwd, env=clean, capture_output=True, text=True,
                          timeout=60)


def test_missing_token_stops_start_up_with_one_line(tmp_path: Path) -> None:
    """Without TELEGRAM_BOT_TOKEN the bot exits 2 with one line naming it and @BotFather, no traceback."""
    result = _run_bot({}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rein: TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and copy its token"
    ]


def test_missing_gemini_key_is_named(tmp_path: Path) -> None:
    """With a token but no GEMINI_API_KEY, the line names the key and where to get it."""
    result = _run_bot({"TELEGRAM_BOT_TOKEN": "123:abcdefghijklmnopqrstuvwxyz"}, tmp_path)
    assert result.returncode == 2
    assert "GEMINI_API_KEY is not set" in result.stderr and "Traceback" not in result.stderr


def test_malformed_token_is_named(tmp_path: Path) -> None:
    """A token that is not a bot token is reported as invalid."""
    result = _run_bot({"TELEGRAM_BOT_TOKEN": "not-a-token", "GEMINI_API_KEY": "k"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("rein: TELEGRAM_BOT_TOKEN is invalid")


def test_dotenv_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from .env in the working directory, lists split on commas."""
    (tmp_path / ".env").write_text(
        "TELEGRAM_BOT_TOKEN=1:abcdefghijklmnopqrstuvwxyz\nGEMINI_API_KEY=k\nADMIN_USER_IDS=1, 2\nGEMINI_BASE_URL=\n"
    )
    monkeypatch.chdir(tmp_path)
    for name in ("TELEGRAM_BOT_TOKEN", "GEMINI_API_KEY", "ADMIN_USER_IDS", "GEMINI_BASE_URL", "OPIK_URL_OVERRIDE",
                 "OPIK_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.admin_user_ids == [1, 2]
    assert settings.gemini_base_url is None
    assert settings.tracing_enabled is False


def test_env_example_lists_every_setting() -> None:
    """.env.example names every field of Settings, each with a comment line above it."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    assert names == {name.upper() for name in Settings.model_fields}
    for index, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[index - 1].startswith("#"), f"{line} has no explanation"


def test_bad_url_is_reported() -> None:
    """A Bot API URL without a scheme is a clear error naming the variable."""
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, telegram_bot_token="1:abcdefghijklmnopqrstuvwxyz", gemini_api_key="k",
                 telegram_api_url="api.telegram.org")
    assert describe_error(info.value).startswith("TELEGRAM_API_URL is invalid")


def test_pipeline_and_storage_never_import_telegram() -> None:
    """The coaching logic and storage stay free of Telegram: no module under them imports telegram."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("pipeline", "storage")
        for path in (ROOT / folder).rglob("*.py")
        if any(line.strip().startswith(("import telegram", "from telegram")) for line in path.read_text().splitlines())
    ]
    assert offenders == []


def _affinity_after(choice: str) -> tuple[str, list[int], list[int]]:
    """In a fresh process: what `pin(choice)` returned, and the CPUs of its main and of a later thread."""
    code = (
        "import os, threading, json\n"
        "from bot.affinity import pin\n"
        f"got = pin({choice!r})\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.extend(sorted(os.sched_getaffinity(0)))); t.start(); t.join()\n"
        "print(json.dumps([sorted(got) if got else None, sorted(os.sched_getaffinity(0)), seen]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    import json

    got, main, thread = json.loads(result.stdout)
    return got, main, thread


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_cpu_affinity_auto_keeps_the_process_and_its_later_threads_on_one_cpu() -> None:
    """CPU_AFFINITY=auto pins the process to one of its CPUs (when it has several); threads inherit it."""
    allowed = sorted(os.sched_getaffinity(0))
    got, main, thread = _affinity_after("auto")
    if len(allowed) < 2:
        assert got is None and main == allowed
        return
    assert got is not None and len(got) == 1 and got[0] in allowed
    assert main == got and thread == got


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_cpu_affinity_off_or_unavailable_cpus_change_nothing() -> None:
    """`off` leaves the affinity alone, and so does a list naming only CPUs the process may not use."""
    allowed = sorted(os.sched_getaffinity(0))
    assert _affinity_after("off") == (None, allowed, allowed)
    assert _affinity_after("4096") == (None, allowed, allowed)
    with pytest.raises(ValidationError):
        Settings(telegram_bot_token="123:abcdefghijklmnopqrstuvwxyz", gemini_api_key="k",  # type: ignore[arg-type]
                 cpu_affinity="half")


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_event_loop_setting_picks_the_loop_the_bot_runs_on(kind: str) -> None:
    """EVENT_LOOP=uvloop runs the bot's coroutine on uvloop; EVENT_LOOP=asyncio on the standard loop."""
    import asyncio

    from bot.__main__ import run_loop

    seen: list[str] = []

    async def probe() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    run_loop(probe(), kind)
    assert len(seen) == 1
    assert seen[0].startswith("uvloop") if kind == "uvloop" else seen[0].startswith("asyncio")


def test_a_webhook_secret_shorter_than_32_characters_is_refused_with_how_to_make_one() -> None:
    """TELEGRAM_WEBHOOK_SECRET under 32 characters stops start-up with a line saying how to make a good one."""
    base = {"telegram_bot_token": "1:abcdefghijklmnopqrstuvwxyz", "gemini_api_key": "k",
            "telegram_webhook_url": "https://rein.example.com/telegram"}
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, **base, telegram_webhook_secret="x")
    line = describe_error(info.value)
    assert line.startswith("TELEGRAM_WEBHOOK_SECRET is invalid: is 1 characters long; it needs at least 32")
    assert "secrets.token_urlsafe(32)" in line
    import secrets

    made = secrets.token_urlsafe(32)
    assert Settings(_env_file=None, **base, telegram_webhook_secret=made).telegram_webhook_secret is not None


def test_listen_addresses_default_to_loopback_and_health_has_its_own_port() -> None:
    """The webhook and health servers listen on 127.0.0.1 by default; in webhook mode they cannot share a port."""
    base = {"telegram_bot_token": "1:abcdefghijklmnopqrstuvwxyz", "gemini_api_key": "k"}
    settings = Settings(_env_file=None, **base)
    assert (settings.webhook_listen, settings.health_listen) == ("127.0.0.1", "127.0.0.1")
    assert settings.health_port != settings.webhook_port
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, **base, telegram_webhook_url="https://rein.example.com/t",
                 telegram_webhook_secret="s" * 32, webhook_port=9000, health_port=9000)
    assert describe_error(info.value).startswith("HEALTH_PORT is invalid: must differ from WEBHOOK_PORT")
