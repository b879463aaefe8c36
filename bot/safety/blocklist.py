"""Prompt moderation: a blocklist of words and regexes by category, matched after normalization.

    PromptChecker.check(prompt, negative) -> Verdict(allowed, category)
        BlocklistChecker     whole words (stretched, leetspeak, look-alikes, spaced out) and regexes
        AllowAllPrompts      everything passes (tests, private single-user setups)

Words are matched as whole words on :func:`bot.safety.normalize.views` of the prompt, so
"Scunthorpe", "cocktail" and "assassin's creed" pass a list with "cunt", "cock" and "ass";
inside a run of spaced-out letters ("a g o r e") they are matched anywhere. A refused prompt
becomes :class:`BlockedPrompt`, whose message names the category and never echoes the text.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.safety.normalize import View, views
from generation.errors import ImagineError

__all__ = [
    "DEFAULT_BLOCKLIST",
    "DEFAULT_BLOCKLIST_PATH",
    "AllowAllPrompts",
    "BlockedPrompt",
    "BlocklistChecker",
    "PromptChecker",
    "Verdict",
    "load_blocklist",
]

logger = logging.getLogger(__name__)

DEFAULT_BLOCKLIST_PATH = Path(__file__).with_name("blocklist.txt")

Categories = Mapping[str, tuple[Iterable[str], Iterable[str]]]


class BlockedPrompt(ImagineError):
    """The prompt was refused by the safety check; ``category`` says why."""

    def __init__(self, category: str, note: str = "") -> None:
        super().__init__(
            f"This prompt was blocked by the safety filter ({category}). "
            "Please rephrase it; no quota was used." + (f" {note}" if note else "")
        )
        self.category = category


@dataclass(frozen=True)
class Verdict:
    """The outcome of a prompt check: allowed, or refused for ``category``."""

    allowed: bool
    category: str | None = None


ALLOWED = Verdict(True)


class PromptChecker(Protocol):
    """Decides whether a prompt may be generated (categories in ``allow`` are not enforced)."""

    def check(self, prompt: str, negative: str = "", *, allow: frozenset[str] = frozenset()) -> Verdict: ...


def load_blocklist(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Read a blocklist file (format in bot/safety/blocklist.txt): category → (words, regexes)."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    category: str | None = None
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            category = line[1:-1].strip()
            found.setdefault(category, ([], []))
            continue
        if category is None:
            raise ValueError(f"{path}:{number}: an entry before any [category] line")
        words, patterns = found[category]
        if line.startswith("re:"):
            patterns.append(line[3:].strip())
        else:
            words.append(line)
    return {name: (tuple(w), tuple(p)) for name, (w, p) in found.items()}


def _term(text: str) -> str | None:
    """A blocklist word in normalized form ("Two  Words" → "two words"), or None if empty."""
    found = views(text)
    return found[0].text if found and found[0].text else None


def _stretchable(term: str) -> str:
    """A regex for ``term`` where each run of a letter may be stretched ("gore" → g+o+r+e+)."""
    parts = []
    for match in re.finditer(r"(.)\1*", term):
        char, count = match.group(1), len(match.group(0))
        if char == " ":
            parts.append(" ")
        else:
            parts.append(re.escape(char) + ("+" if count == 1 else f"{{{count},}}"))
    plural = "(?:e?s)?" if term[-1:].isalpha() else ""
    return "".join(parts) + plural


class _Rule:
    """One category's compiled words and patterns."""

    def __init__(self, category: str, words: Iterable[str], patterns: Iterable[str]) -> None:
        self.category = category
        terms = sorted({t for t in map(_term, words) if t}, key=len, reverse=True)
        self.words: re.Pattern[str] | None = None
        self.spaced: re.Pattern[str] | None = None
        if terms:
            alternatives = "|".join(_stretchable(t) for t in terms)
            self.words = re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])")
            self.spaced = re.compile("|".join(_stretchable(t.replace(" ", "")) for t in terms))
        self.patterns: list[re.Pattern[str]] = []
        for pattern in patterns:
            try:
                self.patterns.append(re.compile(pattern, re.IGNORECASE | re.DOTALL))
            except re.error as exc:
                raise ValueError(f"blocklist pattern {pattern!r} for {category!r} is not a valid regex: {exc}") from None

    def matches(self, view: View) -> bool:
        if self.words is not None and self.words.search(view.text):
            return True
        if self.spaced is not None and any(self.spaced.search(token) for token in view.joined):
            return True
        return any(p.search(view.text) for p in self.patterns)


class BlocklistChecker:
    """Refuses prompts (and negative prompts) containing blocked words or matching regexes.

    ``words`` and ``patterns`` given directly fall under ``category``; ``categories`` maps
    further category names to ``(words, patterns)``. The negative prompt is checked too unless
    ``check_negative`` is False.
    """

    def __init__(
        self,
        words: Iterable[str] = (),
        patterns: Iterable[str] = (),
        *,
        category: str = "blocked terms",
        categories: Categories | None = None,
        check_negative: bool = True,
    ) -> None:
        self.check_negative = check_negative
        groups: list[tuple[str, Iterable[str], Iterable[str]]] = [(category, words, patterns)]
        groups += [(name, w, p) for name, (w, p) in (categories or {}).items()]
        merged: dict[str, tuple[list[str], list[str]]] = {}
        for name, group_words, group_patterns in groups:
            w, p = merged.setdefault(name, ([], []))
            w.extend(group_words)
            p.extend(group_patterns)
        self._rules = [rule for name, (w, p) in merged.items() if (rule := _Rule(name, w, p)).words or rule.patterns]

    @classmethod
    def default(cls, **options: object) -> BlocklistChecker:
        """The shipped list (bot/safety/blocklist.txt)."""
        return cls(categories=DEFAULT_BLOCKLIST, **options)  # type: ignore[arg-type]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: object) -> BlocklistChecker:
        """The categories of a blocklist file."""
        return cls(categories=load_blocklist(path), **options)  # type: ignore[arg-type]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(rule.category for rule in self._rules)

    def check(self, prompt: str, negative: str = "", *, allow: frozenset[str] = frozenset()) -> Verdict:
        """Verdict for ``prompt`` (and ``negative`` when ``check_negative``); ``allow`` is skipped."""
        texts = [prompt, negative] if self.check_negative and negative else [prompt]
        seen = [view for text in texts for view in views(text)]
        for rule in self._rules:
            if rule.category in allow:
                continue
            if any(rule.matches(view) for view in seen):
                logger.info("prompt blocked (%s)", rule.category)
                return Verdict(False, rule.category)
        return ALLOWED


class AllowAllPrompts:
    """A PromptChecker that allows everything (tests, private single-user setups)."""

    def check(self, prompt: str, negative: str = "", *, allow: frozenset[str] = frozenset()) -> Verdict:
        return ALLOWED


DEFAULT_BLOCKLIST = load_blocklist(DEFAULT_BLOCKLIST_PATH)
