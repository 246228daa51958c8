"""Loopback test doubles for the services Rein talks to: the Bot API, Gemini and Opik."""

from tests.fakes.botapi import FakeBotAPI, SentMessage
from tests.fakes.gemini import FakeGemini, Fault, GeminiRequest
from tests.fakes.opik_stub import OpikStub

__all__ = ["FakeBotAPI", "FakeGemini", "Fault", "GeminiRequest", "OpikStub", "SentMessage"]
