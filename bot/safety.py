"""Prompt and image safety: small interfaces the service calls, a blocklist, an allow-all default.

    PromptChecker.check(prompt, negative) -> Verdict(allowed, category)
        BlocklistChecker     case-insensitive whole-word terms and regexes, grouped by category
    ImageChecker.check(image) -> "ok" | "blocked" | "spoiler"
        AllowAllImages       the default until a real detector is plugged in

A refused prompt becomes :class:`BlockedPrompt`, whose message names the category and never
echoes the text that matched (so the bot never repeats it back into a channel).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from generation.errors import ImagineError

__all__ = [
    "DEFAULT_BLOCKLIST",
    "IMAGE_VERDICTS",
    "AllowAllImages",
    "AllowAllPrompts",
    "BlockedPrompt",
    "BlocklistChecker",
    "ImageChecker",
    "PromptChecker",
    "Verdict",
]

logger = logging.getLogger(__name__)

IMAGE_VERDICTS = ("ok", "blocked", "spoiler")


class BlockedPrompt(ImagineError):
    """The prompt was refused by the safety check; ``category`` says why."""

    def __init__(self, category: str) -> None:
        super().__init__(
            f"This prompt was blocked by the safety filter ({category}). "
            "Please rephrase it; no quota was used."
        )
        self.category = category


@dataclass(frozen=True)
class Verdict:
    """The outcome of a prompt check: allowed, or refused for ``category``."""

    allowed: bool
    category: str | None = None


ALLOWED = Verdict(True)


class PromptChecker(Protocol):
    """Decides whether a prompt may be generated."""

    def check(self, prompt: str, negative: str) -> Verdict: ...


class ImageChecker(Protocol):
    """Looks at one generated image: "ok", "blocked" (never stored or sent) or "spoiler"."""

    def check(self, image: Any) -> str: ...


# A deliberately short default; operators extend it in config. Terms are matched as whole
# words; the regexes catch the few spellings that word lists miss.
DEFAULT_BLOCKLIST: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sexual content involving minors": (
        ("loli", "lolicon", "shota", "shotacon", "child porn"),
        (r"\b(child|kid|minor|underage|preteen|toddler)s?\b.{0,40}\b(nude|naked|sex|sexual|porn|nsfw)\b",
         r"\b(nude|naked|sex|sexual|porn|nsfw)\b.{0,40}\b(child|kid|minor|underage|preteen|toddler)s?\b"),
    ),
    "graphic gore": (
        ("gore", "gory", "disembowelment", "dismemberment", "decapitation", "beheading"),
        (),
    ),
}


class BlocklistChecker:
    """Refuses prompts containing blocked words (whole words, any case) or matching regexes.

    ``words`` and ``patterns`` given directly fall under ``category``; ``categories`` maps
    further category names to ``(words, patterns)``. Only the prompt is checked by default:
    a negative prompt says what to leave *out* ("--no gore" is fine).
    """

    def __init__(
        self,
        words: Iterable[str] = (),
        patterns: Iterable[str] = (),
        *,
        category: str = "blocked terms",
        categories: Mapping[str, tuple[Iterable[str], Iterable[str]]] | None = None,
        check_negative: bool = False,
    ) -> None:
        self.check_negative = check_negative
        self._rules: list[tuple[str, re.Pattern[str]]] = []
        groups: list[tuple[str, Iterable[str], Iterable[str]]] = [(category, words, patterns)]
        groups += [(name, w, p) for name, (w, p) in (categories or {}).items()]
        for name, group_words, group_patterns in groups:
            terms = sorted({w.strip().lower() for w in group_words if w.strip()}, key=len, reverse=True)
            if terms:
                alternatives = "|".join(r"\s+".join(map(re.escape, t.split())) for t in terms)
                self._rules.append((name, re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)))
            for pattern in group_patterns:
                try:
                    self._rules.append((name, re.compile(pattern, re.IGNORECASE | re.DOTALL)))
                except re.error as exc:
                    raise ValueError(f"blocklist pattern {pattern!r} for {name!r} is not a valid regex: {exc}") from None

    @classmethod
    def default(cls) -> BlocklistChecker:
        """The short built-in list (sexual content involving minors, graphic gore)."""
        return cls(categories=DEFAULT_BLOCKLIST)

    def check(self, prompt: str, negative: str = "") -> Verdict:
        """Verdict for ``prompt`` (and ``negative`` when ``check_negative``)."""
        texts = [prompt, negative] if self.check_negative else [prompt]
        for text in texts:
            for category, rule in self._rules:
                if rule.search(text):
                    logger.info("prompt blocked (%s)", category)
                    return Verdict(False, category)
        return ALLOWED


class AllowAllPrompts:
    """A PromptChecker that allows everything (tests, private single-user setups)."""

    def check(self, prompt: str, negative: str = "") -> Verdict:
        return ALLOWED


class AllowAllImages:
    """The default ImageChecker: every image is "ok" (a real detector comes later)."""

    def check(self, image: Any) -> str:
        return "ok"
