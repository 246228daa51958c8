"""The one path every LLM call takes: clarify, resolution, plan, coaching, check-ins and their replies, weekly
reviews, history summaries, the judge and the offline evaluation.

`Steps.run` opens one step: it applies the per-user flood guard when the step answers a user, opens the
step's trace in the user's Opik thread (or a span, when a trace is already open in the task, as in an
evaluation), gives every Gemini call its own LLM span with the text, tokens and estimated cost (a streamed call
also its time to the first chunk and its total time), and stores
the tokens and cost of every call in `llm_usage` (so `/stats` sees all of them). Whatever goes wrong inside
leaves as an `LLMError` with a kind the user-facing text is chosen by.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from google.genai import types
from pydantic import BaseModel, ValidationError

from pipeline import logcontext
from pipeline.guard import OutputGuard
from pipeline.llm import LLM, Answer, LLMError, parse, schema_config, text_config
from pipeline.ratelimit import SlidingWindow
from pipeline.streaming import DraftSink, Preview
from pipeline.tracing import Tracer, TurnTrace
from storage.db import Database
from storage.models import LLMUsage

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)


class Flooded(LLMError):
    """The user is over the per-user cap on LLM turns; there is room again in `retry_after_s` seconds."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("flooded")
        self.retry_after_s = retry_after_s


def estimate_cost(prompt_tokens: int, output_tokens: int, prices: tuple[Decimal, Decimal]) -> float:
    """USD for the tokens at (input, output) prices per million tokens."""
    total = Decimal(prompt_tokens) * prices[0] + Decimal(output_tokens) * prices[1]
    return float(total / Decimal(1_000_000))


@dataclass(frozen=True)
class Owner:
    """Whom a step works for: their row id (usage), opaque id (logs, traces), Opik thread and, when the step
    answers a message of theirs, their Telegram id (the flood guard's key)."""

    user_id: int | None = None
    opaque_id: str = ""
    thread_id: str | None = None
    answers: int | None = None


@dataclass
class Step:
    """One open step: its calls, its trace, and the usage rows not stored yet."""

    steps: Steps
    purpose: str
    owner: Owner
    trace: TurnTrace
    _rows: list[LLMUsage] = field(default_factory=list)

    @property
    def trace_id(self) -> str | None:
        """The step's Opik trace id (None when tracing is off)."""
        return self.trace.id

    async def text(self, *, system: str, contents: list[types.Content], temperature: float = 0.7,
                   drafts: DraftSink | None = None, guard: OutputGuard | None = None) -> str:
        """A free-text answer (never empty). With `drafts`, it is streamed and shown there while it is written
        (only what `guard` passes)."""
        preview = Preview(drafts, guard) if drafts is not None else None
        answer = await self._call(contents, text_config(system, temperature), schema=None,
                                  on_text=preview.feed if preview is not None else None)
        text = answer.text.strip()
        if not text:
            raise LLMError("empty", "no text in the answer")
        return text

    async def structured(self, schema: type[T], *, system: str, contents: list[types.Content],
                         temperature: float = 0.4) -> T:
        """An answer parsed into `schema`; output that fails validation is asked for once more."""
        config = schema_config(schema, system, temperature)
        last_error = ""
        for _ in range(2):
            answer = await self._call(contents, config, schema=schema.__name__)
            try:
                return parse(schema, answer)
            except ValidationError as exc:
                last_error = str(exc).splitlines()[0]
                logger.warning("llm.invalid_output schema=%s error=%s", schema.__name__, last_error)
        raise LLMError("invalid", last_error)

    def take_usage(self) -> list[LLMUsage]:
        """The usage rows of the calls so far, for the caller to store in its own transaction (once)."""
        rows, self._rows = self._rows, []
        return rows

    def set_output(self, output: dict[str, Any]) -> None:
        """What the step produced, on its trace."""
        self.trace.set_output(output)

    async def _call(self, contents: list[types.Content], config: types.GenerateContentConfig, *,
                    schema: str | None, on_text: Callable[[str], None] | None = None) -> Answer:
        llm, tracer = self.steps.llm, self.steps.tracer
        traced = _span_input(contents, config, schema) if tracer.enabled else {}
        with tracer.llm_call(model=llm.model, input=traced) as span:
            started = time.perf_counter()
            if on_text is None:
                answer = await llm.generate(contents, config)
            else:
                answer = await llm.stream(contents, config, on_text)
            metadata: dict[str, Any] = {"finish_reason": answer.finish_reason}
            if answer.first_chunk_s is not None:
                metadata.update(streamed=True, time_to_first_chunk_s=round(answer.first_chunk_s, 4),
                                total_s=round(time.perf_counter() - started, 4))
            usage = answer.usage
            cost = estimate_cost(usage.prompt_tokens, usage.output_tokens, self.steps.prices)
            span.record(answer.text, prompt_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens,
                        cost_usd=cost, metadata=metadata)
        self._rows.append(LLMUsage(user_id=self.owner.user_id, purpose=self.purpose, model=usage.model,
                                   prompt_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens,
                                   cost_usd=cost))
        return answer


class Steps:
    """Opens steps; one per process, shared by the coach, the check-ins, the judge and the evaluation."""

    def __init__(self, *, llm: LLM, tracer: Tracer, db: Database | None, prices: tuple[Decimal, Decimal],
                 flood: SlidingWindow | None = None) -> None:
        self.llm = llm
        self.tracer = tracer
        self.db = db
        self.prices = prices
        self.flood = flood

    def flooded(self, telegram_id: int) -> bool:
        """Whether the user has no LLM call left in the flood guard's window (nothing is counted)."""
        return self.flood is not None and self.flood.full(telegram_id)

    def room_in(self, telegram_id: int) -> float:
        """Seconds until the flood guard has room for one more of the user's LLM calls (0: room now)."""
        return self.flood.wait_s(telegram_id) if self.flood is not None else 0.0

    @contextlib.asynccontextmanager
    async def run(self, name: str, *, purpose: str, owner: Owner, input: dict[str, Any],
                  metadata: dict[str, Any] | None = None, tags: list[str] | None = None) -> AsyncIterator[Step]:
        """One step: flood guard (when it answers the user), trace, usage; raises `LLMError` (or `Flooded`)."""
        counted = False
        if owner.answers is not None and self.flood is not None:
            decision = self.flood.check(owner.answers)
            if not decision.allowed:
                logger.info("llm.flooded purpose=%s retry_after_s=%.1f", purpose, decision.retry_after_s)
                raise Flooded(decision.retry_after_s)
            counted = True
        meta = {"model": self.llm.model, "user": owner.opaque_id, **(metadata or {})}
        step: Step | None = None
        try:
            with self.tracer.turn(name, thread_id=owner.thread_id, input=input, metadata=meta,
                                  tags=tags or [purpose]) as trace:
                logcontext.set_trace(trace.id)
                step = Step(self, purpose, owner, trace)
                yield step
        except LLMError:
            if counted and self.flood is not None and owner.answers is not None:
                self.flood.refund(owner.answers)  # a failed call never counts against the user
            raise
        finally:
            if step is not None:
                await self._store(step.take_usage())

    async def _store(self, rows: list[LLMUsage]) -> None:
        """Store usage rows the step's caller did not take (a failure must not lose what was spent)."""
        if not rows or self.db is None:
            return
        try:
            async with self.db.session() as session:
                session.add_all(rows)
        except Exception:
            logger.warning("llm.usage_not_saved purpose=%s", rows[0].purpose, exc_info=True)


def _span_input(contents: list[types.Content], config: types.GenerateContentConfig,
                schema: str | None) -> dict[str, Any]:
    """What a traced call was asked, as plain strings: the system prompt, the messages, the settings."""
    return {
        "system": config.system_instruction,
        "messages": [{"role": c.role, "text": "".join(p.text or "" for p in c.parts or [])} for c in contents],
        "temperature": config.temperature,
        "schema": schema,
    }
