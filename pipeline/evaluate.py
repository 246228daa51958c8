"""Offline evaluation: run the resolution and plan steps over the shipped goal dataset and judge them.

    python -m pipeline.evaluate [--variants 1,2] [--limit N] [--local]

Each prompt variant is one Opik experiment (`opik.evaluate` over the `rein-goals` dataset) when Opik is
configured; with `--local`, or without Opik settings, the same task runs locally (no Opik calls at all) and
nothing leaves the machine except the Gemini calls. The command prints one
table with each judge criterion's mean per variant, side by side.
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

from pipeline import prompts
from pipeline.judge import VERDICTS, verdict
from pipeline.llm import LLM, LLMError, user_content
from pipeline.schemas import PlanDraft, ResolutionDraft
from pipeline.settings import Settings, describe_error
from pipeline.steps import Owner, Steps
from pipeline.tracing import Tracer
from pipeline.views import goal_brief_text

logger = logging.getLogger(__name__)

DATASET = Path(__file__).parent / "data" / "goals.jsonl"
DATASET_NAME = "rein-goals"
METRICS = [(target, criterion) for target in ("resolution", "plan") for criterion in VERDICTS[target][0].model_fields]


def load_items(path: Path = DATASET, limit: int | None = None) -> list[dict[str, Any]]:
    """The evaluation goals, one dict per line of the dataset."""
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return items[:limit] if limit else items


@dataclass
class Variant:
    """A prompt variant under evaluation."""

    version: str
    resolution: prompts.Prompt
    plan: prompts.Prompt


async def run_item(settings: Settings, variant: Variant, item: dict[str, Any], tracer: Tracer) -> dict[str, Any]:
    """Write a resolution and a plan for one goal with the variant's prompts, then judge both (one step: a
    trace of its own, or a span of the evaluation's trace for the item)."""
    llm = make_llm(settings)
    steps = Steps(llm=llm, tracer=tracer, db=None,
                  prices=(settings.price_input_per_mtok, settings.price_output_per_mtok))
    try:
        today = date.today().isoformat()
        brief = goal_brief_text(item["goal"], item.get("answers", []))
        async with steps.run("evaluate.item", purpose="evaluate", owner=Owner(), input={"goal": item["goal"]},
                             metadata={"variant": variant.version}, tags=["evaluation"]) as step:
            resolution = await step.structured(ResolutionDraft, system=variant.resolution.text,
                                               contents=[user_content(f"Today is {today}.\n{brief}")])
            request = f"Today is {today}.\n{brief}\nResolution: {resolution.model_dump_json()}"
            plan = await step.structured(PlanDraft, system=variant.plan.text, contents=[user_content(request)])
            scores: dict[str, float] = {}
            reasons: dict[str, str] = {}
            for target, text in (("resolution", resolution.model_dump_json()), ("plan", plan.model_dump_json())):
                for s in await verdict(step, target, text, brief):
                    scores[f"{target}_{s.criterion}"] = s.score
                    reasons[f"{target}_{s.criterion}"] = s.reason
        return {"output": {"resolution": resolution.model_dump(), "plan": plan.model_dump()},
                "scores": scores, "reasons": reasons}
    except (LLMError, ValidationError) as exc:
        return {"output": None, "error": str(exc), "scores": {}, "reasons": {}}
    finally:
        await llm.aclose()


def make_llm(settings: Settings) -> LLM:
    """The same Gemini adapter the bot uses."""
    return LLM(api_key=settings.gemini_api_key.get_secret_value(), model=settings.gemini_model,
               base_url=settings.gemini_base_url, timeout_s=settings.gemini_timeout_s,
               attempts=settings.gemini_attempts, backoff_s=settings.gemini_backoff_s)


def _metrics() -> list[Any]:
    from opik.evaluation.metrics import base_metric, score_result

    class JudgeCriterion(base_metric.BaseMetric):
        """One judge criterion, read from the task's output."""

        def __init__(self, key: str) -> None:
            super().__init__(name=key, track=False)
            self.key = key

        def score(self, scores: dict[str, float], reasons: dict[str, str], **_: Any) -> Any:
            if self.key not in scores:
                return score_result.ScoreResult(name=self.key, value=0.0, reason="no output", scoring_failed=True)
            return score_result.ScoreResult(name=self.key, value=scores[self.key], reason=reasons.get(self.key))

    return [JudgeCriterion(f"{t}_{c}") for t, c in METRICS]


def evaluate_variant(settings: Settings, variant: Variant, items: list[dict[str, Any]], *, use_opik: bool,
                     tracer: Tracer, threads: int = 4) -> dict[str, float]:
    """Run one variant over the items; the mean of each metric (failed items count as 0)."""

    def task(item: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(run_item(settings, variant, item, tracer))

    sums: dict[str, list[float]] = {f"{t}_{c}": [] for t, c in METRICS}
    if use_opik:
        import opik

        client = opik.Opik(project_name=settings.opik_project_name)
        dataset = client.get_or_create_dataset(DATASET_NAME, description="Rein's offline evaluation goals")
        dataset.insert(items)
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
                for name in sums:
                    sums[name].append(float(output["scores"].get(name, 0.0)))
    return {name: (sum(values) / len(values) if values else 0.0) for name, values in sums.items()}


def table(results: dict[str, dict[str, float]], count: int) -> str:
    """Means per criterion, one column per variant, and the change from the first to the last."""
    versions = list(results)
    head = f"{'criterion':<24}" + "".join(f"{'v' + v:>8}" for v in versions)
    head += f"{'delta':>8}" if len(versions) > 1 else ""
    lines = [f"Rein offline evaluation: {count} goals, model judged per criterion (0-1)", head, "-" * len(head)]
    for name in results[versions[0]]:
        row = f"{name:<24}" + "".join(f"{results[v][name]:>8.3f}" for v in versions)
        if len(versions) > 1:
            row += f"{results[versions[-1]][name] - results[versions[0]][name]:>+8.3f}"
        lines.append(row)
    means = [sum(results[v].values()) / len(results[v]) for v in versions]
    lines.append(f"{'mean':<24}" + "".join(f"{m:>8.3f}" for m in means))
    return "\n".join(lines)


def run(settings: Settings, *, variants: list[str], limit: int | None, local: bool) -> str:
    """Evaluate each variant and return the printed table."""
    use_opik = settings.tracing_enabled and not local
    tracer = Tracer(settings, enabled=use_opik)
    items = load_items(limit=limit)
    results = {}
    for version in variants:
        resolution, plan = prompts.VARIANTS[version]
        results[version] = evaluate_variant(settings, Variant(version, resolution, plan), items, use_opik=use_opik,
                                            tracer=tracer)
    tracer.flush()
    return table(results, len(items))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="1,2", help="prompt versions to compare, e.g. 1,2")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N goals")
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
    print(run(settings, variants=variants, limit=args.limit, local=args.local))
    return 0


if __name__ == "__main__":
    sys.exit(main())
