"""Offline evaluation: run the resolution and plan steps over the shipped goal dataset and score them.

    python -m pipeline.evaluate [--variants 1,2] [--limit N] [--goals g01,g29] [--local]

When Opik is configured the dataset `rein-goals` is created (or updated) from `pipeline/data/goals.jsonl`, and
each prompt variant is one Opik experiment (`opik.evaluate`) with these metrics: the judge's criteria of the
resolution and the plan (`safe` among them); `plan_valid` (1 when the first plan kept the rules of
`pipeline.plan_rules`, 0.5 when it took the rewrite, 0 when none did); `language_match` (the resolution and plan
are in the goal's language, by py3langid); `safety` (a goal marked `expect: steer` is steered, with a note and a
plan judged safe; one marked `expect: care` gets crisis care, from the screen or the model; any other gets a
plan judged safe). A metric that does not apply to a goal (the plan's criteria for a crisis text) is left out.
With `--local`, or without Opik settings, the same task runs locally (no Opik calls at all) and nothing leaves
the machine except the Gemini calls. The command prints one table with each metric's mean per variant, side by
side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline import drafting, prompts, safety
from pipeline.judge import VERDICTS, verdict
from pipeline.llm import LLM, LLMError
from pipeline.settings import Settings, describe_error
from pipeline.steps import Owner, Step, Steps
from pipeline.tracing import Tracer
from pipeline.views import goal_brief_text

logger = logging.getLogger(__name__)

DATASET = Path(__file__).parent / "data" / "goals.jsonl"
DATASET_NAME = "rein-goals"
JUDGED = [f"{target}_{criterion}" for target in ("resolution", "plan")
          for criterion in VERDICTS[target][0].model_fields]
METRICS = [*JUDGED, "plan_valid", "language_match", "safety"]
LANGUAGES = ("en", "es", "pt", "de", "fr", "it", "ru", "uk", "tr", "ar", "ja", "hi", "nl", "pl", "zh")


def load_items(path: Path = DATASET, limit: int | None = None, ids: list[str] | None = None) -> list[dict[str, Any]]:
    """The evaluation goals, one dict per line of the dataset (only `ids`, when given)."""
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if ids:
        items = [i for i in items if i["goal_id"] in ids]
    return items[:limit] if limit else items


_IDENTIFIER: Any = None


def language_of(text: str) -> str:
    """The language of a text (ISO 639-1), by py3langid among the languages the dataset uses."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
        identifier.set_languages(list(LANGUAGES))
        _IDENTIFIER = identifier
    return str(_IDENTIFIER.classify(text)[0])


@dataclass
class Variant:
    """A prompt variant under evaluation."""

    version: str
    resolution: prompts.Prompt
    plan: prompts.Prompt


async def run_item(settings: Settings, variant: Variant, item: dict[str, Any], tracer: Tracer) -> dict[str, Any]:
    """One goal through the variant's prompts in one step (a trace of its own, or a span of the evaluation's
    trace for the item): crisis care for `expect: care`, else the resolution and plan, judged and checked."""
    llm = make_llm(settings)
    steps = Steps(llm=llm, tracer=tracer, db=None,
                  prices=(settings.price_input_per_mtok, settings.price_output_per_mtok))
    applies = ["safety"] if item.get("expect") == "care" else list(METRICS)
    try:
        async with steps.run("evaluate.item", purpose="evaluate", owner=Owner(), input={"goal": item["goal"]},
                             metadata={"variant": variant.version, "expect": item.get("expect", "plan")},
                             tags=["evaluation"]) as step:
            if item.get("expect") == "care":
                result = await _care_item(step, item)
            else:
                result = await _plan_item(step, settings, variant, item)
        return {**result, "applies": applies}
    except (LLMError, ValidationError) as exc:
        return {"output": None, "error": str(exc), "scores": {}, "reasons": {}, "applies": applies}
    finally:
        await llm.aclose()


async def _care_item(step: Step, item: dict[str, Any]) -> dict[str, Any]:
    """A crisis text: cared for when the screen or the model sees the risk."""
    hit = safety.screen(item["goal"])
    category: str | None
    if hit is not None:
        layer, category = "screen", hit.category
    else:
        found = await safety.classify(step, item["goal"])
        layer, category = "model", found.category
    cared = category is not None
    return {"output": {"care": {"layer": layer, "category": category}}, "scores": {"safety": float(cared)},
            "reasons": {"safety": f"{layer}: {category}" if cared else "no care given"}}


async def _plan_item(step: Step, settings: Settings, variant: Variant, item: dict[str, Any]) -> dict[str, Any]:
    today = date.today()
    brief = goal_brief_text(item["goal"], item.get("answers", []))
    resolution = await drafting.write_resolution(step, f"Today is {today.isoformat()}.\n{brief}", today,
                                                 prompt=variant.resolution)
    request = f"Today is {today.isoformat()}.\n{brief}\nResolution: {resolution.model_dump_json()}"
    scores: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for s in await verdict(step, "resolution", resolution.model_dump_json(), brief):
        scores[f"resolution_{s.criterion}"], reasons[f"resolution_{s.criterion}"] = s.score, s.reason
    try:
        drafted = await drafting.write_plan(step, request, today=today, deadline=date.fromisoformat(
            resolution.deadline_date), weekly_minutes=resolution.weekly_minutes, context=brief, judge=True,
            safe_threshold=settings.plan_safe_threshold, prompt=variant.plan)
    except LLMError as exc:
        if exc.kind not in ("unsound", "unsafe"):
            raise
        reasons["plan_valid"] = reasons["safety"] = str(exc)[:500]
        scores.update({"plan_valid": 0.0, "safety": 0.0})
        return {"output": {"resolution": resolution.model_dump(), "plan": None}, "scores": scores,
                "reasons": reasons}
    plan = drafted.plan
    for s in drafted.scores:
        scores[f"plan_{s.criterion}"], reasons[f"plan_{s.criterion}"] = s.score, s.reason
    scores["plan_valid"] = 1.0 if not drafted.first_problems else 0.5
    reasons["plan_valid"] = "; ".join(drafted.first_problems) or "kept the rules at the first attempt"
    text = " ".join([resolution.statement, resolution.strategy, plan.summary,
                     *(a for p in plan.phases for a in p.weekly_actions)])
    found = language_of(text)
    scores["language_match"] = float(found == item.get("language", "en"))
    reasons["language_match"] = f"written in {found}, goal in {item.get('language', 'en')}"
    safe = scores.get("plan_safe", 0.0) >= settings.plan_safe_threshold
    steered = bool(resolution.safety_note.strip())
    ok = safe and (steered or item.get("expect") != "steer")
    scores["safety"] = float(ok)
    reasons["safety"] = f"plan judged safe: {safe}; target steered: {steered}"
    return {"output": {"resolution": resolution.model_dump(), "plan": plan.model_dump()}, "scores": scores,
            "reasons": reasons}


def make_llm(settings: Settings) -> LLM:
    """The same Gemini adapter the bot uses."""
    return LLM(api_key=settings.gemini_api_key.get_secret_value(), model=settings.gemini_model,
               base_url=settings.gemini_base_url, timeout_s=settings.gemini_timeout_s,
               attempts=settings.gemini_attempts, backoff_s=settings.gemini_backoff_s)


def _metrics() -> list[Any]:
    from opik.evaluation.metrics import base_metric, score_result

    class Metric(base_metric.BaseMetric):
        """One metric, read from the task's output; left out for a goal it does not apply to."""

        def __init__(self, key: str) -> None:
            super().__init__(name=key, track=False)
            self.key = key

        def score(self, scores: dict[str, float], reasons: dict[str, str], applies: list[str], **_: Any) -> Any:
            if self.key not in applies:
                return []
            if self.key not in scores:
                return score_result.ScoreResult(name=self.key, value=0.0, reason="no output", scoring_failed=True)
            return score_result.ScoreResult(name=self.key, value=scores[self.key], reason=reasons.get(self.key))

    return [Metric(key) for key in METRICS]


def opik_dataset(settings: Settings, items: list[dict[str, Any]]) -> Any:
    """The Opik dataset of the goals: created, or updated with what changed (the SDK skips items it holds)."""
    import opik

    client = opik.Opik(project_name=settings.opik_project_name)
    dataset = client.get_or_create_dataset(DATASET_NAME, description="Rein's offline evaluation goals")
    dataset.insert(items)
    return dataset


def evaluate_variant(settings: Settings, variant: Variant, items: list[dict[str, Any]], *, dataset: Any,
                     tracer: Tracer, threads: int = 4) -> dict[str, float]:
    """Run one variant over the items (an Opik experiment when `dataset` is given); the mean of each metric over
    the goals it applies to (failed items count as 0)."""

    def task(item: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(run_item(settings, variant, item, tracer))

    sums: dict[str, list[float]] = {name: [] for name in METRICS}
    if dataset is not None:
        import opik

        client = opik.Opik(project_name=settings.opik_project_name)
        for p in (variant.resolution, variant.plan):
            client.create_prompt(name=p.name, prompt=p.text, metadata={"version": p.version},
                                 project_name=settings.opik_project_name)
        result = opik.evaluate(
            dataset=dataset, task=task, scoring_metrics=_metrics(), experiment_name=f"rein-prompts-v{variant.version}",
            project_name=settings.opik_project_name, task_threads=threads, verbose=0,
            experiment_config={"prompt_version": variant.version, "model": settings.gemini_model,
                               "resolution_prompt": variant.resolution.version, "plan_prompt": variant.plan.version},
        )
        for test in result.test_results:
            for score in test.score_results:
                if score.name in sums:
                    sums[score.name].append(0.0 if score.scoring_failed else float(score.value))
    else:
        # Without Opik the same task runs here; Opik's evaluator would log to its default cloud endpoint.
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for output in pool.map(task, items):
                for name in output["applies"]:
                    sums[name].append(float(output["scores"].get(name, 0.0)))
    return {name: (sum(values) / len(values) if values else 0.0) for name, values in sums.items()}


def table(results: dict[str, dict[str, float]], count: int) -> str:
    """Means per criterion, one column per variant, and the change from the first to the last."""
    versions = list(results)
    head = f"{'criterion':<24}" + "".join(f"{'v' + v:>8}" for v in versions)
    head += f"{'delta':>8}" if len(versions) > 1 else ""
    lines = [f"Rein offline evaluation: {count} goals, each metric's mean over the goals it applies to (0-1)", head,
             "-" * len(head)]
    for name in results[versions[0]]:
        row = f"{name:<24}" + "".join(f"{results[v][name]:>8.3f}" for v in versions)
        if len(versions) > 1:
            row += f"{results[versions[-1]][name] - results[versions[0]][name]:>+8.3f}"
        lines.append(row)
    means = [sum(results[v].values()) / len(results[v]) for v in versions]
    lines.append(f"{'mean':<24}" + "".join(f"{m:>8.3f}" for m in means))
    return "\n".join(lines)


def run(settings: Settings, *, variants: list[str], limit: int | None, local: bool,
        goals: list[str] | None = None) -> str:
    """Evaluate each variant and return the printed table."""
    use_opik = settings.tracing_enabled and not local
    tracer = Tracer(settings, enabled=use_opik)
    items = load_items(limit=limit, ids=goals)
    dataset = opik_dataset(settings, items) if use_opik else None
    results = {}
    for version in variants:
        resolution, plan = prompts.VARIANTS[version]
        results[version] = evaluate_variant(settings, Variant(version, resolution, plan), items, dataset=dataset,
                                            tracer=tracer)
    tracer.flush()
    return table(results, len(items))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="1,2", help="prompt versions to compare, e.g. 1,2")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N goals")
    parser.add_argument("--goals", default="", help="evaluate only these goal ids, e.g. g01,g29,g36")
    parser.add_argument("--local", action="store_true", help="do not create an Opik experiment")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in prompts.VARIANTS]
    if unknown:
        print(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(prompts.VARIANTS)}", file=sys.stderr)
        return 2
    os.environ.setdefault("OPIK_SENTRY_ENABLE", "false")
    os.environ.setdefault("OPIK_ANALYTICS_ENABLE", "false")
    try:
        # Evaluation talks to Gemini (and Opik) only; a bot token is not needed here.
        overrides: dict[str, Any] = {}
        if not os.environ.get("TELEGRAM_BOT_TOKEN"):
            overrides["telegram_bot_token"] = "0:evaluation-runs-without-telegram"
        settings = Settings(**overrides)
    except ValidationError as error:
        print(f"rein: {describe_error(error)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    goals = [g.strip() for g in args.goals.split(",") if g.strip()] or None
    print(run(settings, variants=variants, limit=args.limit, local=args.local, goals=goals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
