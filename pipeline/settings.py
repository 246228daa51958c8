"""Rein's one settings object, read from the environment and `.env`."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{32,256}$")
MAKE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

# Where to get each required setting; used in the one-line start-up error.
HINTS: dict[str, str] = {
    "telegram_bot_token": "create a bot with @BotFather and copy its token",
    "gemini_api_key": "create a key at https://aistudio.google.com/apikey",
}


def _int_list(value: object) -> object:
    if isinstance(value, str):
        return [int(part) for part in re.split(r"[,\s]+", value.strip()) if part]
    return value


class Settings(BaseSettings):
    """Every setting Rein reads; names match the environment variables (upper case)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    telegram_bot_token: SecretStr
    telegram_api_url: str = "https://api.telegram.org"
    telegram_rate_limit: float = Field(30.0, gt=0, description="Messages per second the bot may send")
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = Field(None, validate_default=True)
    webhook_listen: str = Field("127.0.0.1", description="Address of the webhook server (webhook mode)")
    webhook_port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    health_listen: str = Field("127.0.0.1", description="Address of the /healthz, /readyz and /metrics server")
    health_port: int = Field(8081, ge=0, le=65535, description="0 picks a free port")
    readyz_cache_s: float = Field(5.0, ge=0, le=60, description="Seconds one /readyz check answers for")
    leader_retry_s: float = Field(5.0, gt=0, le=25, description="Seconds between tries for the scheduler lock")
    shutdown_timeout_s: float = Field(20.0, ge=0, description="Seconds a stop waits for turns in flight")

    gemini_api_key: SecretStr
    gemini_model: str = "gemini-2.5-flash"
    gemini_base_url: str | None = None
    gemini_timeout_s: float = Field(30.0, gt=0)
    gemini_attempts: int = Field(3, ge=1, le=10)
    gemini_backoff_s: float = Field(1.0, ge=0)

    database_url: str = "sqlite+aiosqlite:///./data/rein.db"

    opik_api_key: SecretStr | None = None
    opik_workspace: str | None = None
    opik_project_name: str = "rein"
    opik_url_override: str | None = None
    opik_track_disable: bool = False
    opik_flush_timeout_s: float = Field(10.0, ge=0)
    rating_sync_interval_s: float = Field(60.0, gt=0)
    erasure_retry_s: float = Field(60.0, gt=0, description="Seconds between passes erasing a deleted user in Opik")
    erasure_settle_s: float = Field(300.0, ge=0, description="An erasure is confirmed by a search this long after")
    typing_delay_s: float = Field(0.3, ge=0, description="Show typing only when an answer takes longer")
    streaming: bool = Field(True, description="Show replies in a Telegram draft while they are written")
    draft_interval_s: float = Field(0.4, ge=0.05, le=10, description="Least time between two drafts in a chat")
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    cpu_affinity: str = Field("off", pattern=r"^(auto|off|\d+(,\d+)*)$",
                              description="auto: one CPU per process; off; or CPU numbers like 0,1")
    judge_enabled: bool = True
    judge_sample_rate: float = Field(0.2, ge=0, le=1, description="Share of coaching replies the judge scores")
    session_quiet_minutes: float = Field(30.0, gt=0, description="Quiet time after which a session is scored")
    plan_safe_threshold: float = Field(0.5, ge=0, le=1, description="Lower safe scores: plan rewritten")
    safety_classifier: bool = Field(True, description="The model classifies each text for risk beside its reply")
    safety_classify_timeout_s: float = Field(8.0, gt=0, description="Longest wait for that classification")
    care_gentle_hours: float = Field(72.0, ge=0, description="The coach stays gentle this long after crisis care")
    media_max_seconds: int = Field(600, ge=1, description="Longest voice note or audio file Rein listens to")
    media_max_bytes: int = Field(14 * 1024 * 1024, ge=1, le=20 * 1024 * 1024,
                                 description="Largest voice note, audio file or photo Rein downloads (Bot API: 20 MB)")

    admin_user_ids: Annotated[list[int], NoDecode] = []
    allowed_user_ids: Annotated[list[int], NoDecode] = []
    max_messages_per_day: int = Field(500, ge=1, description="Texts stored per user per UTC day; then one notice")
    export_cooldown_s: float = Field(300.0, ge=0, description="Seconds between two /export of one user")
    export_part_bytes: int = Field(45_000_000, ge=4096, le=50_000_000, description="Largest /export document")
    llm_calls_per_minute: int = Field(12, ge=1, description="Per-user cap on LLM turns per minute")
    flood_messages_per_minute: int = Field(30, ge=1, description="More messages a minute get one notice")
    recover_within_hours: float = Field(24.0, ge=0, description="Unanswered messages this recent: answered at start")
    history_turns: int = Field(12, ge=2, description="Recent turns sent verbatim to the coach")
    max_clarify_rounds: int = Field(3, ge=0, le=3)
    checkin_scheduler: bool = Field(True, description="Run the check-in scheduler (on the leader replica)")
    checkin_grace_s: float = Field(7200.0, ge=0, description="A check-in missed while down is sent if this late")
    checkin_quiet_hours: str = Field("22:00-07:00", description="Default local quiet hours (HH:MM-HH:MM)")
    checkin_review_time: str = Field("19:00", description="Local time of the Sunday weekly review")
    checkin_poll_s: float = Field(60.0, gt=0, description="Seconds between looks for schedules changed elsewhere")
    checkin_concurrency: int = Field(32, ge=1, le=1000, description="Check-ins written and sent at once")
    # USD per million tokens (input, output) for models Opik does not price.
    price_input_per_mtok: Decimal = Decimal("0.30")
    price_output_per_mtok: Decimal = Decimal("2.50")
    log_level: str = "INFO"

    @field_validator("admin_user_ids", "allowed_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        return _int_list(value)

    @field_validator("checkin_quiet_hours", "checkin_review_time")
    @classmethod
    def _clock_times(cls, value: str) -> str:
        from pipeline.schedule import ScheduleError, parse_range, parse_time

        try:
            parse_range(value) if "-" in value else parse_time(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("telegram_bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not _TOKEN_RE.match(value.get_secret_value()):
            raise ValueError("does not look like a bot token (digits, a colon, then letters)")
        return value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (Telegram calls it)")
        return value.strip()

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        secret = value.get_secret_value() if value is not None else ""
        if not secret:
            if info.data.get("telegram_webhook_url"):
                raise ValueError(f"is required with TELEGRAM_WEBHOOK_URL (make one: {MAKE_SECRET})")
            return None
        if len(secret) < 32:
            raise ValueError(f"is {len(secret)} characters long; it needs at least 32 (make one: {MAKE_SECRET})")
        if not _SECRET_RE.match(secret):
            raise ValueError(f"must be 32-256 characters of A-Z a-z 0-9 _ - (make one: {MAKE_SECRET})")
        return value

    @field_validator("health_port")
    @classmethod
    def _own_health_port(cls, value: int, info: ValidationInfo) -> int:
        webhook_port = info.data.get("webhook_port")
        if info.data.get("telegram_webhook_url") and value and value == webhook_port:
            raise ValueError("must differ from WEBHOOK_PORT: health and metrics have their own server")
        return value

    @field_validator("gemini_api_key")
    @classmethod
    def _key_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("is empty")
        return value

    @field_validator("telegram_api_url", "gemini_base_url", "opik_url_override")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def tracing_enabled(self) -> bool:
        """Tracing is on when Opik is configured (a key or a local server) and not disabled."""
        if self.opik_track_disable:
            return False
        key = self.opik_api_key.get_secret_value() if self.opik_api_key else ""
        return bool(key or self.opik_url_override)

    def sqlite_path(self) -> Path | None:
        """The SQLite file the database URL points at, if any."""
        if not self.database_url.startswith("sqlite"):
            return None
        _, _, rest = self.database_url.partition(":///")
        return Path(rest) if rest and rest != ":memory:" else None


def describe_error(error: ValidationError) -> str:
    """One line naming the first bad setting and where to get it."""
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "settings"
    env = name.upper()
    if first["type"] == "missing" or first.get("input") in ("", None):
        hint = HINTS.get(name, "set it in .env (see .env.example)")
        return f"{env} is not set: {hint}"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{env} is invalid: {message} (see .env.example)"
