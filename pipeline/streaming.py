"""Showing a reply while it is written, independent of Telegram: the draft sink the bot implements, and the preview
that feeds it only text the output guard passes.

The guard blocks a reply that shares `SHINGLE_WORDS` consecutive words with a system prompt. A draft therefore
holds back the last `SHINGLE_WORDS - 1` words it has received: any word shown has every run of that length around
it complete and checked, so no word of a blocked run is ever shown, not even for an instant. Once the text so far
leaks, the preview shows nothing more (the final message is the guard's refusal).
"""

from __future__ import annotations

import logging
from typing import Protocol

from pipeline.guard import OutputGuard
from pipeline.replies import Reply

logger = logging.getLogger(__name__)


class DraftSink(Protocol):
    """Where a reply in progress is shown (the bot's Telegram drafts); every method returns at once or soon and
    never raises."""

    def show(self, text: str) -> None:
        """The reply so far (plain text); the sink decides when to show it."""

    def status(self, text: str) -> None:
        """A status line shown at once while a step without streamed text works ("Drafting your plan…")."""

    async def send(self, replies: list[Reply]) -> None:
        """Send finished replies now, before the step ends (the resolution before the plan)."""


class Preview:
    """Collects a streamed answer and offers the sink the longest prefix the guard lets through."""

    def __init__(self, sink: DraftSink, guard: OutputGuard | None) -> None:
        self.sink = sink
        self.guard = guard
        self.text = ""
        self.shown = 0  # characters of `text` offered so far
        self.blocked = False

    def feed(self, piece: str) -> None:
        """One more piece of the answer."""
        self.text += piece
        if self.blocked:
            return
        if self.guard is None:
            visible = self.text
        else:
            prefix = self.guard.safe_prefix(self.text)
            if prefix is None:
                self.blocked = True
                logger.info("stream.draft_withheld chars=%d", len(self.text))
                return
            visible = prefix
        visible = visible.rstrip()
        if len(visible) > self.shown:
            self.shown = len(visible)
            self.sink.show(visible)
