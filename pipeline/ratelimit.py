"""A per-user sliding window on LLM turns, so one flooding user can't starve Gemini for everyone."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """`allowed`: the turn may call the LLM; `notify`: tell the user to slow down (once per window)."""

    allowed: bool
    notify: bool = False
    retry_after_s: float = 0.0


class SlidingWindow:
    """At most `limit` turns per user in any `window_s` seconds; one slow-down notice per window."""

    def __init__(self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._hits: dict[int, deque[float]] = {}
        self._notified_at: dict[int, float] = {}

    def check(self, key: int) -> Decision:
        """Count one turn for `key` if there is room; otherwise say whether to send the notice."""
        now = self.clock()
        if len(self._hits) > 10_000:
            self.forget_idle()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        if len(hits) < self.limit:
            hits.append(now)
            return Decision(allowed=True)
        retry_after = self.window_s - (now - hits[0])
        last = self._notified_at.get(key)
        if last is not None and now - last < self.window_s:
            return Decision(allowed=False, notify=False, retry_after_s=retry_after)
        self._notified_at[key] = now
        return Decision(allowed=False, notify=True, retry_after_s=retry_after)

    def refund(self, key: int) -> None:
        """Take back the newest counted turn of `key` (its call failed: it must not count)."""
        hits = self._hits.get(key)
        if hits:
            hits.pop()

    def full(self, key: int) -> bool:
        """True while `key` has no room left in the window (nothing is counted)."""
        now = self.clock()
        hits = self._hits.get(key)
        return hits is not None and len([t for t in hits if now - t < self.window_s]) >= self.limit

    def forget_idle(self) -> None:
        """Drop users with no turn in the window (keeps memory bounded)."""
        now = self.clock()
        for key in [k for k, hits in self._hits.items() if not hits or now - hits[-1] >= self.window_s]:
            self._hits.pop(key, None)
            if now - self._notified_at.get(key, -self.window_s) >= self.window_s:
                self._notified_at.pop(key, None)

    def __len__(self) -> int:
        return len(self._hits)
