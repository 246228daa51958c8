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
    for name in evaluate.METRICS:
        row = next(line for line in lines if line.startswith(f"{name} "))
        assert len(row.split()) == 4
    systems = {r.system for r in gemini.requests}
    assert prompts.answering(prompts.PLAN.text) in systems and prompts.answering(prompts.PLAN_V2.text) in systems
    judged = [r for r in gemini.requests if "strict evaluator" in r.system]
    assert len(judged) == 2 * 2 * 3, "resolution and plan judged for each goal and variant"
    assert "plan_valid " in output and "language_match " in output and "safety " in output


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


async def _evaluate_cli(gemini, stub, *args: str) -> tuple[int, str, str]:
    """`python -m pipeline.evaluate` as a user runs it, with Gemini and Opik on the loopback servers."""
    import asyncio

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "TELEGRAM_", "OPIK_"))}
    env.update({"GEMINI_API_KEY": "test-key", "GEMINI_BASE_URL": gemini.url, "GEMINI_TIMEOUT_S": "10",
                "GEMINI_BACKOFF_S": "0.01", "OPIK_URL_OVERRIDE": stub.url, "OPIK_PROJECT_NAME": "rein-eval",
                "OPIK_SENTRY_ENABLE": "false", "OPIK_ANALYTICS_ENABLE": "false", "PYTHONPATH": str(ROOT)})
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pipeline.evaluate", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_opik_path_builds_the_dataset_and_an_experiment_per_variant(gemini) -> None:
    """Against the Opik REST stub in strict mode (an endpoint it does not know fails the test), the command creates
    the dataset from goals.jsonl, runs one experiment per variant whose items carry every metric as feedback
    scores (a normal goal, an unsafe one, a crisis text), prints the side-by-side table, and a second run updates
    the same dataset."""
    from tests.fakes import OpikStub

    stub = OpikStub(strict=True)
    await stub.start()
    try:
        goals = ["g01", "g29", "g36"]
        code, out, err = await _evaluate_cli(gemini, stub, "--variants", "1,2", "--goals", ",".join(goals))
        assert code == 0, err[-2000:]
        assert stub.unknown == []
        (dataset,) = stub.datasets.values()
        items = stub.dataset_items[dataset["id"]]
        assert dataset["name"] == evaluate.DATASET_NAME and sorted(i["data"]["goal_id"] for i in items) == goals
        experiments = {e["name"]: e for e in stub.experiments.values()}
        assert set(experiments) == {"rein-prompts-v1", "rein-prompts-v2"}
        assert experiments["rein-prompts-v2"]["metadata"]["plan_prompt"] == prompts.PLAN_V2.version
        assert all(e.get("status") == "completed" for e in experiments.values())
        assert len(stub.experiment_items) == 2 * len(goals)
        assert {i["dataset_item_id"] for i in stub.experiment_items} == {i["id"] for i in items}
        names = [s["name"] for s in stub.feedback_scores]
        assert names.count("safety") == 2 * 3 and names.count("plan_valid") == 2 * 2, "no plan metrics for a crisis"
        assert set(evaluate.METRICS) <= set(names)
        lines = out.splitlines()
        lines = lines[next(i for i, line in enumerate(lines) if line.startswith("Rein offline evaluation")):]
        assert "3 goals" in lines[0] and "v1" in lines[1] and "v2" in lines[1] and "delta" in lines[1]
        safety_row = next(line for line in lines if line.startswith("safety "))
        assert safety_row.split()[1:3] == ["1.000", "1.000"], "steered, judged safe, and the crisis cared for"
        assert not any(r.system == prompts.RISK.text for r in gemini.requests), "the screen caught the crisis text"

        code, _, err = await _evaluate_cli(gemini, stub, "--variants", "1", "--goals", ",".join(goals))
        assert code == 0, err[-2000:]
        assert stub.unknown == [] and len(stub.datasets) == 1 and len(stub.experiments) == 3
    finally:
        await stub.stop()
