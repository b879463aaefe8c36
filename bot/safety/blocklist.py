"""Prompt moderation: a blocklist of words, near rules and regexes by category, plus an allowlist.

    PromptChecker.check(prompt, negative) -> Verdict(allowed, category, tier, rule)
        BlocklistChecker     the matcher (bot/safety/matcher.py) over blocklist.txt + allowlist.txt
        AllowAllPrompts      everything passes (tests, private single-user setups)

Tiers: a ``high`` confidence match refuses and gives a strike; a ``low`` one (a word with an
innocent reading) refuses without a strike, or
only warns ([moderation] low_confidence). ``rule`` names what fired ("word:porn",
"glued:naked", "near:…") for the decision log. A refused prompt becomes :class:`BlockedPrompt`,
whose message names the category and never echoes the text.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bot.safety import words
from bot.safety.allowlist import DEFAULT_ALLOWLIST_PATH, Allowlist, load_allowlist
from bot.safety.lexicon import LOW, parse_entry
from bot.safety.matcher import Match, Matcher, NearRule
from generation.core.errors import ImagineError

__all__ = [
    "DEFAULT_BLOCKLIST",
    "DEFAULT_ALLOWLIST",
    "DEFAULT_BLOCKLIST_PATH",
    "AllowAllPrompts",
    "BlockedPrompt",
    "BlocklistChecker",
    "PromptChecker",
    "Verdict",
    "load_blocklist",
    "rule_tag",
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
    """The outcome of a prompt check: allowed, or refused for ``category``.

    ``tier`` ("high" or "low") and ``rule`` say how sure the refusal is and what fired; they do
    not take part in equality, so ``Verdict(False, "graphic gore")`` still equals a refusal.
    """

    allowed: bool
    category: str | None = None
    tier: str | None = field(default=None, compare=False)
    rule: str | None = field(default=None, compare=False)

    @property
    def strike(self) -> bool:
        """Whether this refusal is sure enough to count against the user."""
        return not self.allowed and self.tier != LOW


ALLOWED = Verdict(True)


class PromptChecker(Protocol):
    """Decides whether a prompt may be generated (categories in ``allow`` are not enforced)."""

    def check(self, prompt: str, negative: str = "", *, allow: frozenset[str] = frozenset()) -> Verdict: ...


def load_blocklist(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Read a blocklist file (format in bot/safety/blocklist.txt): category → (words, patterns).

    Words keep their flags ("cock | low sense=rooster"); near rules stay in the patterns with
    their "near:" prefix.
    """
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
        elif line.startswith("near:"):
            patterns.append(line)
        else:
            words.append(line)
    return {name: (tuple(w), tuple(p)) for name, (w, p) in found.items()}


@functools.lru_cache(maxsize=8)
def _compile(lists: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...],
             phrases: tuple[str, ...]) -> tuple[tuple[str, ...], Matcher]:
    """The categories in use and their matcher (shared by checkers built from the same lists)."""
    entries, compiled, near = [], [], []
    for name, group_words, group_patterns in lists:
        entries += [parse_entry(word, name) for word in group_words if word.strip()]
        for pattern in group_patterns:
            if pattern.startswith("near:"):
                near.append(NearRule.parse(pattern[5:], name))
                continue
            try:
                compiled.append((name, re.compile(pattern, re.IGNORECASE | re.DOTALL)))
            except re.error as exc:
                raise ValueError(f"blocklist pattern {pattern!r} for {name!r} is not a valid regex: {exc}") from None
    used = {e.category for e in entries} | {c for c, _ in compiled} | {r.category for r in near}
    categories = tuple(name for name, _, _ in lists if name in used)
    words.preload()
    return categories, Matcher(entries, compiled, near, Allowlist(phrases), order=categories)


def rule_tag(rule: str) -> str:
    """``rule`` as the decision log stores it: the kind, and a hash for anything that could repeat
    the prompt's words ("word:hentai" → "word:5d41402a"); scores stay ("classifier:0.93")."""
    kind, _, detail = rule.partition(":")
    if not detail or kind == "classifier":
        return rule
    return f"{kind}:{hashlib.sha256(detail.encode('utf-8')).hexdigest()[:8]}"


class BlocklistChecker:
    """Refuses prompts (and negative prompts) that a blocklist rule matches and no allowed phrase excuses.

    ``words`` and ``patterns`` given directly fall under ``category``; ``categories`` maps
    further category names to ``(words, patterns)``. ``allow`` are phrases that override word
    hits (default: the shipped allowlist.txt). The negative prompt is checked too unless
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
        allow: Iterable[str] | None = None,
    ) -> None:
        self.check_negative = check_negative
        groups: list[tuple[str, Iterable[str], Iterable[str]]] = [(category, words, patterns)]
        groups += [(name, w, p) for name, (w, p) in (categories or {}).items()]
        merged: dict[str, tuple[list[str], list[str]]] = {}
        for name, group_words, group_patterns in groups:
            w, p = merged.setdefault(name, ([], []))
            w.extend(group_words)
            p.extend(group_patterns)
        lists = tuple((name, tuple(w), tuple(p)) for name, (w, p) in merged.items())
        phrases = DEFAULT_ALLOWLIST if allow is None else tuple(allow)
        self._categories, self.matcher = _compile(lists, phrases)

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
        return self._categories

    def explain(self, tag: str) -> list[str]:
        """The list entries a logged rule tag ("word:5d41402a") stands for, for operators tuning the list."""
        kind, _, digest = tag.partition(":")
        if kind in ("near", "classifier"):
            return [tag]
        details = [e.rule for e in self.matcher.entries] + [p.pattern[:40] for _, p in self.matcher.patterns]
        return sorted({f"{kind}:{d}" for d in details if rule_tag(f"{kind}:{d}") == tag})

    def check(self, prompt: str, negative: str = "", *, allow: frozenset[str] = frozenset()) -> Verdict:
        """Verdict for ``prompt`` (and ``negative`` when ``check_negative``); ``allow`` is skipped."""
        found = self.matcher.match(prompt, allow)
        if found is None and self.check_negative and negative:
            # The negative prompt names what to avoid ("--no nsfw, gore"), and with guidance 0
            # it does not steer the image at all: a hit there is never sure enough for a strike.
            hit = self.matcher.match(negative, allow)
            if hit is not None:
                found = Match(hit.category, LOW, f"negative:{hit.rule}")
        if found is None:
            return ALLOWED
        logger.info("prompt blocked (%s, %s, %s)", found.category, found.tier, found.rule)
        return Verdict(False, found.category, found.tier, found.rule)


class AllowAllPrompts:
    """A PromptChecker that allows everything (tests, private single-user setups)."""

    def check(self, prompt: str, negative: str = "", *, allow: frozenset[str] = frozenset()) -> Verdict:
        return ALLOWED


DEFAULT_BLOCKLIST = load_blocklist(DEFAULT_BLOCKLIST_PATH)
DEFAULT_ALLOWLIST = tuple(load_allowlist(DEFAULT_ALLOWLIST_PATH))
