"""Offline evaluation: the shipped dataset, both prompt variants, judged against the loopback Gemini."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline import evaluate, prompts
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]


def test_dataset_has_diverse_goals() -> None:
    """At least 25 goals across health, study, career, money and habits, vague and precise, 5+ not in English."""
    items = evaluate.load_items()
    assert len(items) >= 25
    assert {"health", "study", "career", "money", "habits"} <= {i["category"] for i in items}
    assert {"vague", "precise"} == {i["kind"] for i in items}
    assert sum(i["language"] != "en" for i in items) >= 5
    assert len({i["goal_id"] for i in items}) == len(items)


async def test_two_variants_are_compared_side_by_side(bot_api, gemini, sqlite_url) -> None:
    """Running both prompt variants prints every judge criterion with one column per variant and a delta."""
    import asyncio

    settings = make_settings(bot_api, gemini, sqlite_url)
    output = await asyncio.to_thread(evaluate.run, settings, variants=["1", "2"], limit=3, local=True)
    lines = output.splitlines()
    assert "3 goals" in lines[0] and "v1" in lines[1] and "v2" in lines[1] and "delta" in lines[1]
    for target, criterion in evaluate.METRICS:
        row = next(line for line in lines if line.startswith(f"{target}_{criterion} "))
        assert len(row.split()) == 4
    systems = {r.system for r in gemini.requests}
    assert prompts.PLAN.text in systems and prompts.PLAN_V2.text in systems
    judged = [r for r in gemini.requests if "strict evaluator" in r.system]
    assert len(judged) == 2 * 2 * 3, "resolution and plan judged for each goal and variant"


async def test_failed_items_count_as_zero(bot_api, gemini, sqlite_url) -> None:
    """When Gemini fails for every call, every criterion's mean is 0 and the command still prints its table."""
    import asyncio

    from tests.fakes import Fault

    gemini.fail_always = Fault.status(400)
    settings = make_settings(bot_api, gemini, sqlite_url)
    output = await asyncio.to_thread(evaluate.run, settings, variants=["1"], limit=2, local=True)
    assert "mean" in output and all(line.split()[-1] == "0.000" for line in output.splitlines()[3:])


def test_unknown_variant_is_refused() -> None:
    """The command names unknown variants and exits 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "TELEGRAM_"))}
    result = subprocess.run([sys.executable, "-m", "pipeline.evaluate", "--variants", "9"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown variant(s) 9" in result.stderr


def test_every_dataset_line_is_json() -> None:
    """Each line of the dataset parses and has a goal."""
    for line in evaluate.DATASET.read_text(encoding="utf-8").splitlines():
        assert json.loads(line)["goal"]
