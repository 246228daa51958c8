"""Crisis detection in two layers, as functions over text (typed messages, check-in notes, voice transcripts).

Layer 1, `screen`: reviewed phrases and patterns per language (`pipeline.crisis_patterns`), run on every text
before anything else; microseconds, no network, so it works while Gemini is down. Layer 2, `classify`: the
model's own judgement as a structured risk classification (prompt `rein-risk`), run beside the reply a text
gets. Either layer triggers care; a screen hit is final (the model is never asked to overrule it).
"""

from __future__ import annotations

import functools
import re
import time
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field

from pipeline import prompts
from pipeline.crisis_patterns import CATEGORIES, PATTERNS
from pipeline.llm import user_content
from pipeline.steps import Step

MAX_SCREENED = 12_000  # characters of one text the screen reads: all a stored message can have (`speaker.MAX_INPUT`)
_APOSTROPHES = str.maketrans({"’": "'", "ʼ": "'", "`": "'", "´": "'", "‘": "'"})
_ARABIC_MARKS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_ARABIC_LETTERS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ة": "ه"})
_SPACES = re.compile(r"\s+")


def _plain_latin(char: str) -> str:
    """A Latin letter without its accents ("ã" -> "a", "ş" -> "s"); anything else unchanged (Cyrillic "й" stays)."""
    if char.isascii() or not unicodedata.name(char, "").startswith("LATIN"):
        return char
    return "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))


def fold(text: str) -> str:
    """The text as the patterns are written: lower case, Latin accents gone, one apostrophe, plain Arabic."""
    text = unicodedata.normalize("NFKC", text[:MAX_SCREENED]).casefold().translate(_APOSTROPHES)
    text = "".join(_plain_latin(c) for c in text).replace("ı", "i").replace("\u0307", "").replace("ё", "е")
    text = _ARABIC_MARKS.sub("", text).translate(_ARABIC_LETTERS)
    return _SPACES.sub(" ", text)


def _fold_pattern(pattern: str) -> str:
    """A pattern folded like the text (its regex syntax is ASCII and stays as written)."""
    pattern = "".join(_plain_latin(c) for c in pattern).replace("ı", "i").replace("ё", "е")
    return _ARABIC_MARKS.sub("", pattern).translate(_ARABIC_LETTERS)


@dataclass(frozen=True)
class Hit:
    """What the screen found: the category, the language of the pattern, and the pattern's id (never the text)."""

    category: str
    language: str
    pattern: str


@functools.cache
def _compiled() -> list[tuple[str, str, str, re.Pattern[str]]]:
    out = []
    for language, categories in PATTERNS.items():
        for category in CATEGORIES:
            for index, pattern in enumerate(categories.get(category, [])):
                out.append((language, category, f"{language}.{category}.{index}",
                            re.compile(_fold_pattern(pattern))))
    return out


# Languages whose patterns need letters of their own script: skipped for a text without any (most texts).
_SCRIPTS = {"ru": re.compile("[а-яё]"), "uk": re.compile("[а-яєіїґ]"), "ar": re.compile("[\u0600-\u06ff]")}


def screen(text: str) -> Hit | None:
    """Layer 1: the first reviewed pattern the text matches, in any supported language; None when none does."""
    folded = fold(text)
    scripts = {language for language, letters in _SCRIPTS.items() if letters.search(folded)}
    for language, category, pattern_id, pattern in _compiled():
        if language in _SCRIPTS and language not in scripts:
            continue
        if pattern.search(folded):
            return Hit(category, language, pattern_id)
    return None


def languages() -> list[str]:
    """The languages the screen has reviewed patterns for."""
    return list(PATTERNS)


# ----- layer 2: the model's judgement -------------------------------------------------------------------


class RiskCategory(StrEnum):
    """What the model sees in a message ("none" for everything else, figures of speech included)."""

    none = "none"
    suicide = "suicide"
    self_harm = "self_harm"
    harm_others = "harm_others"
    abuse = "abuse"
    medical = "medical"


class RiskVerdict(BaseModel):
    """The model's risk classification of one message."""

    category: RiskCategory = Field(description="The risk the message shows now, or none")
    reason: str = Field(description="One short sentence: why, without quoting the message")


@dataclass(frozen=True)
class Verdict:
    """Layer 2's answer: a category (None: no risk), or why there is no answer (`failed`)."""

    category: str | None
    failed: str | None = None
    seconds: float = 0.0


async def classify(step: Step, text: str) -> Verdict:
    """Layer 2: ask the model, inside the caller's step (its own LLM span, counted with the step's usage)."""
    started = time.monotonic()
    try:
        result = await step.structured(RiskVerdict, system=prompts.RISK.text,
                                       contents=[user_content(f"Message:\n{text[:4000]}")], temperature=0.0)
    except Exception as exc:  # LLMError, or anything the call raised: no verdict, never a failed turn
        return Verdict(None, failed=getattr(exc, "kind", type(exc).__name__), seconds=time.monotonic() - started)
    category = None if result.category == RiskCategory.none else result.category.value
    return Verdict(category, seconds=time.monotonic() - started)
