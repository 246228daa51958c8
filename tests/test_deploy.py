"""Deployment files: compose wiring, the Dockerfile, the systemd unit, and the image's commands run directly.

No container engine runs here, so the image is checked by running what it would run: its CMD, with the
compose environment, from a directory holding only what the Dockerfile copies. Stopping is checked with
SIGTERM on a real `python -m bot` process, in both modes, while a turn is in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import TOKEN
from tests.fakes import FakeBotAPI, FakeGemini, Fault
from tests.test_webhook import SECRET, free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ANN = 5001


def compose() -> dict[str, Any]:
    """deploy/compose.yaml, parsed."""
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (what the image is)."""
    instructions = dockerfile()
    last = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last:]


def exec_form(args: str) -> list[str]:
    """A JSON exec-form argument list (CMD ["python", ...])."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


class MissingVariable(Exception):
    """Compose's `${NAME:?message}` met an unset or empty NAME: compose stops with the message."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?message} interpolation."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        if kind == ":?":
            raise MissingVariable(f"{name}: {rest}")
        return rest

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_compose_runs_the_bot_after_a_healthy_migrated_postgres() -> None:
    """compose.yaml: PostgreSQL with a volume and a health check; migrations, then the bot; .env used."""
    spec = compose()
    services = spec["services"]
    assert set(services) == {"db", "migrate", "bot"}
    db, migrate, bot = services["db"], services["migrate"], services["bot"]
    assert any(v.startswith("pgdata:") and v.endswith("/var/lib/postgresql/data") for v in db["volumes"])
    assert "pgdata" in spec["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate["command"] == ["python", "-m", "alembic", "upgrade", "head"]
    assert bot["depends_on"] == {"db": {"condition": "service_healthy"},
                                 "migrate": {"condition": "service_completed_successfully"}}
    for service in (migrate, bot):
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert service["env_file"] == "../.env"
        url = interpolate(service["environment"]["DATABASE_URL"], {"POSTGRES_PASSWORD": "a-password"})
        assert url.startswith("postgresql+asyncpg://") and "@db:5432/" in url
    assert (DEPLOY / ".." / "deploy" / "Dockerfile").exists()
    port = bot["environment"]["WEBHOOK_PORT"]
    assert any(p.endswith(f":{port}") for p in bot["ports"])
    grace = int(bot["stop_grace_period"].rstrip("s"))
    from pipeline.settings import Settings

    defaults = Settings.model_fields
    stop_needs = defaults["shutdown_timeout_s"].default + defaults["opik_flush_timeout_s"].default + 5  # + drain
    assert grace > stop_needs, "compose waits for the whole graceful stop before SIGKILL"
    text = (DEPLOY / "compose.yaml").read_text()
    assert "opik.sh" in text and "OPIK_URL_OVERRIDE" in text, "shows how to add a self-hosted Opik"


def test_compose_refuses_to_start_without_a_database_password() -> None:
    """Every use of POSTGRES_PASSWORD in compose.yaml stops compose when it is unset or empty; no default exists."""
    text = (DEPLOY / "compose.yaml").read_text()
    uses = re.findall(r"\$\{POSTGRES_PASSWORD[^}]*\}", text)
    assert len(uses) == 2 and all(use.startswith("${POSTGRES_PASSWORD:?") for use in uses), uses
    assert "change-me" not in text
    services = compose()["services"]
    for value in (services["db"]["environment"]["POSTGRES_PASSWORD"], services["bot"]["environment"]["DATABASE_URL"]):
        for env in ({}, {"POSTGRES_PASSWORD": ""}):
            with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
                interpolate(value, env)
    assert "openssl rand" in (ROOT / "docs" / "DEPLOY.md").read_text(), "the guide shows how to make one"


def test_dockerfile_is_multi_stage_non_root_and_runs_python_m_bot() -> None:
    """The image is built in stages, runs `python -m bot` as user rein, copies only what runs, checks /healthz."""
    stages = [args for word, args in dockerfile() if word == "FROM"]
    assert len(stages) >= 2 and all("slim" in s for s in stages)
    final = final_stage()
    words = [word for word, _ in final]
    assert "ENTRYPOINT" not in words
    cmd = exec_form(next(args for word, args in final if word == "CMD"))
    assert cmd == ["python", "-m", "bot"]
    user = [args for word, args in final if word == "USER"]
    assert user == ["rein"] and words.index("USER") < words.index("CMD")
    health = next(args for word, args in final if word == "HEALTHCHECK")
    assert "/healthz" in health and "CMD" in health
    copied = [args.split()[0] for word, args in final if word == "COPY" and "--from" not in args]
    assert sorted(copied) == ["alembic.ini", "bot", "pipeline", "storage"]
    assert all((ROOT / path).exists() for path in copied)
    docs = (ROOT / "docs" / "DEPLOY.md").read_text()
    assert "`python -m bot`" in docs and "user `rein`" in docs, "DEPLOY.md describes the same command and user"


def test_readme_links_the_guide_and_the_guide_names_real_settings() -> None:
    """README links docs/DEPLOY.md; every setting the guide's reference names exists in Settings."""
    from pipeline.settings import Settings

    assert "(docs/DEPLOY.md)" in (ROOT / "README.md").read_text()
    guide = (ROOT / "docs" / "DEPLOY.md").read_text()
    reference = guide.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in reference.splitlines() if line.startswith("| `")]
    named = {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    assert len(named) > 10 and named <= {name.upper() for name in Settings.model_fields}


def test_systemd_unit_runs_the_same_command_with_a_bounded_stop() -> None:
    """rein.service starts `python -m bot` from the virtual environment and gives SIGTERM time to finish."""
    unit = ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "rein.service").read_text())
    service = unit_service()
    assert shlex.split(service["ExecStart"])[1:] == ["-m", "bot"]
    assert service["User"] == "rein" and service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 35
    assert service["EnvironmentFile"].endswith("rein.env") and service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def unit_service() -> Any:
    """The [Service] section of deploy/rein.service (for a repeated key, the last value)."""
    unit = ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "rein.service").read_text())
    return unit["Service"]


def test_systemd_unit_is_hardened_to_an_exposure_of_2_5_or_less() -> None:
    """rein.service sets UMask 0077, no capabilities, a system-call filter and a memory cap; where systemd-analyze
    exists, `systemd-analyze security --offline=true` rates it 2.5 or lower."""
    service = unit_service()
    assert service["UMask"] == "0077" and service["CapabilityBoundingSet"] == ""
    assert service["MemoryMax"] and service["SystemCallErrorNumber"] == "EPERM"
    assert "@system-service" in (DEPLOY / "rein.service").read_text()
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    result = subprocess.run([tool, "security", "--offline=true", str(DEPLOY / "rein.service")],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {result.stderr.strip()[:200]}")
    found = re.search(r"Overall exposure level for rein\.service: (\d+\.\d+)", result.stdout)
    assert found is not None, result.stdout[-2000:] + result.stderr[-2000:]
    exposure = float(found.group(1))
    print(f"\nsystemd-analyze security: {exposure}")
    assert exposure <= 2.5, result.stdout


def test_every_dependency_has_an_upper_bound() -> None:
    """pyproject.toml bounds every runtime and dev dependency from above (the lock pins; bounds cap `make lock`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = project["project"]["dependencies"] + project["dependency-groups"]["dev"]
    assert len(requirements) > 20
    unbounded = [r for r in requirements if not re.search(r"<\s*[0-9]", r.split(";")[0])]
    assert unbounded == []


def test_make_and_the_image_install_from_the_same_lock_with_the_same_uv() -> None:
    """`make` syncs .venv from uv.lock; the image syncs from the same uv.lock (no dev group), with the same uv."""
    makefile = (ROOT / "Makefile").read_text()
    uv_version = re.search(r"^UV_VERSION := (\S+)$", makefile, re.M)
    assert uv_version is not None and "sync --locked" in makefile
    build = [(word, args) for word, args in dockerfile() if word in ("ARG", "COPY", "RUN")]
    assert ("ARG", f"UV_VERSION={uv_version.group(1)}") in build
    assert ("COPY", "pyproject.toml uv.lock ./") in build
    sync = next(args for word, args in build if word == "RUN" and "uv sync" in args)
    assert "--locked" in sync and "--no-dev" in sync
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!uv.lock" in ignore and "!pyproject.toml" in ignore
    assert (ROOT / "uv.lock").is_file()


def test_ensure_postgres_script_is_still_there() -> None:
    """deploy/ensure-postgres.sh (used by `make test`) is executable and checks the server is ready."""
    script = DEPLOY / "ensure-postgres.sh"
    assert os.access(script, os.X_OK) and "pg_isready" in script.read_text()


# ------------------------------------------------------------------ the image's commands, run directly


def image_dir(tmp_path: Path) -> Path:
    """A directory laid out like the image's /app: only what the Dockerfile copies."""
    app = tmp_path / "app"
    app.mkdir()
    for word, args in final_stage():
        if word == "COPY" and "--from" not in args:
            source = args.split()[0]
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, app / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / source, app / source)
    return app


def image_env(database_url: str, bot_api: FakeBotAPI, gemini: FakeGemini, **extra: str) -> dict[str, str]:
    """The environment a compose container gets: the image's ENV, .env (from .env.example), compose's values."""
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "OPIK_SENTRY_ENABLE", "OPIK_ANALYTICS_ENABLE")}
    for word, args in final_stage():
        if word == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", args):
                env[name] = value
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    env.update(TELEGRAM_BOT_TOKEN=TOKEN, GEMINI_API_KEY="test-key", TELEGRAM_API_URL=bot_api.url,
               GEMINI_BASE_URL=gemini.url, GEMINI_BACKOFF_S="0.05", OPIK_TRACK_DISABLE="true")
    for name, value in compose()["services"]["bot"]["environment"].items():
        env[name] = interpolate(str(value), {"POSTGRES_PASSWORD": "a-password"})
    env["DATABASE_URL"] = database_url  # the compose URL names the `db` container; here it is the local server
    env["WEBHOOK_LISTEN"] = env["HEALTH_LISTEN"] = "127.0.0.1"  # a container's 0.0.0.0; here the host's loopback
    env["WEBHOOK_PORT"] = str(free_port())
    env["HEALTH_PORT"] = str(free_port())
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # `python` = this environment's
    env.update(extra)
    return env


class BotProcess:
    """`python -m bot` (the image's CMD) as a child process."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.argv, self.cwd, self.env, self.log = argv, cwd, env, log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        """Its webhook server."""
        return f"http://127.0.0.1:{self.env['WEBHOOK_PORT']}"

    @property
    def health(self) -> str:
        """Its health server."""
        return f"http://127.0.0.1:{self.env['HEALTH_PORT']}"

    async def start(self) -> None:
        """Start it, output to the log file."""
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(*self.argv, cwd=self.cwd, env=self.env, stdout=out,
                                                             stderr=asyncio.subprocess.STDOUT)

    def output(self) -> str:
        """What it logged."""
        return self.log.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until /readyz answers 200."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise AssertionError(f"exited {self.proc.returncode}:\n{self.output()[-3000:]}")
                try:
                    if (await client.get(f"{self.health}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"not ready:\n{self.output()[-3000:]}")

    async def terminate(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM; the exit code and how long it took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        """Make sure it is gone."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (what compose gives the bot)."""
    from tests.conftest import create_pg_database, drop_pg_database

    name, url = await create_pg_database()
    yield url
    await drop_pg_database(name)


@pytest.mark.postgres
async def test_image_commands_work_with_the_compose_environment(tmp_path, pg_url, bot_api, gemini) -> None:
    """From the image's files only: compose's migrate command, then CMD; HEALTHCHECK passes; SIGTERM exits 0."""
    app = image_dir(tmp_path)
    env = image_env(pg_url, bot_api, gemini)
    migrate = await asyncio.create_subprocess_exec(*compose()["services"]["migrate"]["command"], cwd=app, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(migrate.communicate(), 120)
    assert migrate.returncode == 0, out.decode()

    cmd = exec_form(next(args for word, args in final_stage() if word == "CMD"))
    bot = BotProcess(cmd, app, env, tmp_path / "bot.log")
    await bot.start()
    try:
        await bot.wait_ready()
        health = exec_form(next(args for word, args in final_stage() if word == "HEALTHCHECK").split("CMD", 1)[1])
        check = await asyncio.create_subprocess_exec(*health, cwd=app, env=env)
        assert await asyncio.wait_for(check.wait(), 30) == 0, "the image's HEALTHCHECK command passes"
        sent = await _say(bot_api, ANN, "/start", 2)
        assert "Rein" in sent[0].text
        code, _ = await bot.terminate()
        assert code == 0, bot.output()[-3000:]
        assert "bot.stop_done" in bot.output() and "Traceback" not in bot.output()
        assert TOKEN.split(":")[1] not in bot.output(), "the bot token never reaches the log"
    finally:
        bot.kill()


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_sigterm_finishes_the_turn_in_flight(mode, tmp_path, sqlite_url, bot_api, gemini) -> None:
    """SIGTERM during a slow turn: no new updates are taken, the reply still goes out, then a clean exit 0."""
    extra = {"SHUTDOWN_TIMEOUT_S": "10"}
    if mode == "webhook":
        extra.update(TELEGRAM_WEBHOOK_SECRET=SECRET)
    env = image_env(sqlite_url, bot_api, gemini, **extra)
    if mode == "webhook":
        env["TELEGRAM_WEBHOOK_URL"] = f"http://127.0.0.1:{env['WEBHOOK_PORT']}/telegram"
    bot = BotProcess([sys.executable, "-m", "bot"], ROOT, env, tmp_path / "bot.log")
    await bot.start()
    try:
        await bot.wait_ready()
        await _say(bot_api, ANN, "/start", 2, webhook=bot if mode == "webhook" else None)
        gemini.responder = lambda req: Fault.hang(0.9)
        at_work = len(bot_api.chat_actions(ANN)) + len(bot_api.drafts(ANN))  # typing, or a draft
        update = bot_api.user_sends(ANN, "Learn to juggle")
        if mode == "webhook":
            await _post(bot, update)
        await bot_api.wait_for(lambda: len(bot_api.chat_actions(ANN)) + len(bot_api.drafts(ANN)) > at_work, timeout=10)
        code, seconds = await bot.terminate()
        assert code == 0, bot.output()[-3000:]
        assert len(bot_api.messages(ANN)) == 3, "the turn in flight was answered before the exit"
        assert seconds < 10 + 5, f"the stop is bounded (took {seconds:.1f} s)"
        if mode == "polling":
            late = bot_api.user_sends(ANN, "after the stop")
            assert late in bot_api.queued_updates(), "an update sent after the stop stays with Telegram"
        assert "bot.stop_done" in bot.output()
    finally:
        bot.kill()
    print(f"\n{mode}: SIGTERM to exit with a turn in flight: {seconds:.2f} s")


async def _post(bot: BotProcess, update: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{bot.base}/telegram", json=update,
                                     headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert response.status_code == 200


async def _say(bot_api: FakeBotAPI, user_id: int, text: str, expect: int, *,
               webhook: BotProcess | None = None) -> list[Any]:
    before = len(bot_api.messages(user_id))
    update = bot_api.user_sends(user_id, text)
    if webhook is not None:
        await _post(webhook, update)
    await bot_api.wait_messages(user_id, before + expect, timeout=30)
    return bot_api.messages(user_id)[before:]


# The kernel's own memory-deny-write-execute (prctl PR_SET_MDWE, Linux 6.3+: kept across exec): what the unit's
# MemoryDenyWriteExecute= asks of systemd. Exit 77 when this kernel lacks it.
MDWE_BOT = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.executable, [sys.executable, "-m", "bot"])
"""


async def test_the_bot_runs_without_writable_executable_memory(tmp_path, sqlite_url, bot_api, gemini) -> None:
    """With writable-and-executable memory refused (MemoryDenyWriteExecute), the bot plans, coaches, draws /progress
    and stops cleanly."""
    bot = BotProcess([sys.executable, "-c", MDWE_BOT], ROOT, image_env(sqlite_url, bot_api, gemini),
                     tmp_path / "bot.log")
    await bot.start()
    try:
        try:
            await bot.wait_ready()
        except AssertionError:
            if bot.proc is not None and bot.proc.returncode == 77:
                pytest.skip("this kernel has no PR_SET_MDWE")
            raise
        await _say(bot_api, ANN, "/start", 2)
        question = (await _say(bot_api, ANN, "Learn to juggle", 1))[0]
        _, plan = await _press(bot_api, ANN, question, "Skip", 2)
        await _press(bot_api, ANN, plan, "✅ Accept", 1)
        chart = (await _say(bot_api, ANN, "/progress", 1))[0]
        assert chart.file, "the chart (matplotlib) was drawn and sent"
        reply = (await _say(bot_api, ANN, "Juggled three balls for ten minutes", 1))[0]
        assert reply.text
        code, _ = await bot.terminate()
        assert code == 0 and "Traceback" not in bot.output(), bot.output()[-3000:]
    finally:
        bot.kill()


async def _press(bot_api: FakeBotAPI, user_id: int, message: Any, label: str, expect: int) -> list[Any]:
    data = next(d for text, d in message.buttons() if text.startswith(label))
    before = len(bot_api.messages(user_id))
    bot_api.user_presses(user_id, message.message_id, data)
    await bot_api.wait_messages(user_id, before + expect, timeout=30)
    return bot_api.messages(user_id)[before:]
