"""Phrases and proper names that override single-word hits ("cum laude", "Al Gore", "pussy willow").

A phrase is matched on the same normalized tokens the blocklist sees, so "Magna Cum Laude",
"magna-cum-laude" and "MAGNA  CUM LAUDE" are one phrase. Every token it covers is exempt from
word hits (not from the regex patterns). The shipped list is allowlist.txt beside this module;
operators add their own in config ([safety] allow).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from bot.safety.normalize import views

__all__ = ["DEFAULT_ALLOWLIST_PATH", "Allowlist", "load_allowlist"]

DEFAULT_ALLOWLIST_PATH = Path(__file__).with_name("allowlist.txt")


def load_allowlist(path: str | os.PathLike[str]) -> list[str]:
    """The phrases of an allowlist file: one a line, ``#`` starts a comment."""
    found = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            found.append(line)
    return found


class Allowlist:
    """Finds the token positions covered by allowed phrases."""

    def __init__(self, phrases: Iterable[str] = ()) -> None:
        self._by_first: dict[str, list[tuple[str, ...]]] = {}
        self.words: set[str] = set()  # one-word entries, and phrases glued ("goretex")
        for phrase in phrases:
            for view in views(phrase):  # "galaxy a55" is also "galaxy ass" when read as leetspeak
                tokens = tuple(view.tokens)
                if tokens and tokens not in self._by_first.get(tokens[0], []):
                    self._by_first.setdefault(tokens[0], []).append(tokens)
                    self.words.add("".join(tokens))
        for group in self._by_first.values():
            group.sort(key=len, reverse=True)

    def __len__(self) -> int:
        return sum(len(group) for group in self._by_first.values())

    def covered(self, tokens: Sequence[str]) -> set[int]:
        """Positions in ``tokens`` that are part of an allowed phrase."""
        found: set[int] = set()
        for i, token in enumerate(tokens):
            for phrase in self._by_first.get(token, ()):
                if tuple(tokens[i:i + len(phrase)]) == phrase:
                    found.update(range(i, i + len(phrase)))
                    break
        return found
