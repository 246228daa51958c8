"""Rein's coaching pipeline: prompts, the LLM adapter, tracing and the coach itself (no Telegram here)."""
