"""Per-user sliding windows: the flood guard on LLM turns (one flooding user can't starve Gemini for everyone)
and the count of messages that decides when a flood is worth a word to the user."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """`allowed`: the turn may call the LLM now; otherwise it may in `retry_after_s` seconds."""

    allowed: bool
    retry_after_s: float = 0.0


class SlidingWindow:
    """At most `limit` events per key in any `window_s` seconds."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._hits: dict[int, deque[float]] = {}

    def check(self, key: int) -> Decision:
        """Count one event for `key` if there is room; otherwise say when there will be."""
        now = self.clock()
        if len(self._hits) > 10_000:
            self.forget_idle()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        if len(hits) < self.limit:
            hits.append(now)
            return Decision(allowed=True)
        return Decision(allowed=False, retry_after_s=max(0.0, self.window_s - (now - hits[0])))

    def refund(self, key: int) -> None:
        """Take back the newest counted event of `key` (its call failed: it must not count)."""
        hits = self._hits.get(key)
        if hits:
            hits.pop()

    def wait_s(self, key: int) -> float:
        """Seconds until `key` has room in the window: 0 when it has room now (nothing is counted)."""
        now = self.clock()
        hits = [t for t in self._hits.get(key, ()) if now - t < self.window_s]
        if len(hits) < self.limit:
            return 0.0
        return max(0.0, self.window_s - (now - hits[-self.limit]))

    def full(self, key: int) -> bool:
        """True while `key` has no room left in the window (nothing is counted)."""
        now = self.clock()
        hits = self._hits.get(key)
        return hits is not None and len([t for t in hits if now - t < self.window_s]) >= self.limit

    def forget_idle(self) -> None:
        """Drop keys with no event in the window (keeps memory bounded)."""
        now = self.clock()
        for key in [k for k, hits in self._hits.items() if not hits or now - hits[-1] >= self.window_s]:
            self._hits.pop(key, None)

    def __len__(self) -> int:
        return len(self._hits)


class FloodNotice:
    """Counts each user's messages; more than `limit` in `window_s` seconds is a flood far beyond human typing,
    worth one notice per window (the messages themselves are all kept and answered)."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = SlidingWindow(limit, window_s, clock)
        self._told: dict[int, float] = {}

    def note(self, key: int) -> bool:
        """Count one message of `key`; True when it is the first over the limit in this window (tell them)."""
        if self.window.check(key).allowed:
            return False
        now = self.window.clock()
        if now - self._told.get(key, -self.window.window_s) < self.window.window_s:
            return False
        if len(self._told) > 10_000:
            self._told = {k: t for k, t in self._told.items() if now - t < self.window.window_s}
        self._told[key] = now
        return True
