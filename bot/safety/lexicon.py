"""Blocklist entries and their inflected forms, indexed for stretch-tolerant lookup.

An entry is a word or words with optional flags after ``|`` (format in blocklist.txt)::

    porn                        high confidence: refuse and give a strike
    cock | low sense=rooster,hen,farm     low confidence; an innocent sense when these words are near
    sex | lang=sv,da,no,la      an ordinary word in those languages (Swedish "sex" is six)
    dick | low name             a first name: "Dick Allen" (Capitalized, next to a Capitalized word)
    ass | low noglue noreverse  not looked for inside glued words, nor reversed

Each entry expands to its inflections (``porn`` → porno, porns, porny, …; ``tits`` → tit,
titty, titties; ``nude`` → nudes, nudity, nuda, …). The index maps the form with letter runs
collapsed ("gooore" → "gore") to candidates, and a candidate matches a token only when each
letter run of the token is at least as long as the form's, so "assassin" never meets "asasin".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Entry", "Index", "collapse", "inflections", "parse_entry", "stretched_by_one"]

HIGH, LOW = "high", "low"
_FLAGS = {"high", "low", "name", "noglue", "noreverse", "noinflect"}
_RUNS = re.compile(r"(.)\1+")
_VOWELS = set("aeiou")
_SUFFIXES = ("s", "es", "z", "y", "ie", "ies", "ier", "iest", "ing", "ed")  # sexy, sexier, cumming, nudes
_LONG_SUFFIXES = ("ic", "a", "ness")  # only on stems of 5+ letters: erotica, orgasmic, nakedness


@dataclass(frozen=True)
class Entry:
    """One blocklist word (or words) and how it is judged."""

    term: str
    category: str
    tier: str = HIGH
    langs: frozenset[str] = frozenset()
    sense: frozenset[str] = frozenset()
    name: bool = False
    glue: bool = True
    reverse: bool = True
    inflect: bool = True

    @property
    def rule(self) -> str:
        return self.term


@dataclass
class Index:
    """Collapsed form → [(form, entry)], with a pattern finding glued candidates."""

    forms: dict[str, list[tuple[str, Entry]]] = field(default_factory=dict)
    glued: re.Pattern[str] | None = None
    weak: re.Pattern[str] | None = None
    _seen: dict[str, tuple[str, Entry] | None] = field(default_factory=dict)  # token → found, bounded
    by_length: dict[int, list[tuple[str, Entry]]] = field(default_factory=dict)  # for censored words
    prefixes: set[str] = field(default_factory=set)  # of collapsed forms without spaces: "split" candidates
    heads: set[str] = field(default_factory=set)  # first words of multi-word forms ("rule" of "rule 34")

    def add(self, entry: Entry) -> None:
        forms = inflections(entry.term) if entry.inflect else {entry.term}
        for form in forms:
            if " " not in form:
                self.by_length.setdefault(len(form), []).append((form, entry))
            if " " in form:
                self.heads.add(collapse(form.split(" ", 1)[0]))
            key = collapse(form.replace(" ", ""))
            self.prefixes.update(key[:n] for n in range(1, len(key)))
        for form in forms | {f.replace(" ", "") for f in forms if " " in f}:
            bucket = self.forms.setdefault(collapse(form), [])
            if all(existing != form or e.category != entry.category for existing, e in bucket):
                bucket.append((form, entry))

    def finish(self, entries: Iterable[Entry]) -> None:
        """Compile the patterns that find listed words inside glued tokens (``glued``: any token;
        ``weak``: noglue words, only looked for inside tokens that are no known word)."""
        strong: set[str] = set()
        weak: set[str] = set()
        for e in entries:
            if " " in e.term:
                continue
            stems = {e.term} | ({f for f in inflections(e.term) if len(f) < len(e.term)} if e.inflect else set())
            found = {collapse(stem) for stem in stems if len(collapse(stem)) >= 3}
            (strong if e.glue else weak).update(found)
        for name, stems in (("glued", strong), ("weak", weak - strong)):
            if stems:
                ordered = sorted(stems, key=len, reverse=True)
                setattr(self, name, re.compile("|".join(re.escape(s) for s in ordered)))

    def lookup(self, token: str) -> Entry | None:
        """The entry ``token`` is a (stretched) form of, high confidence first; else None."""
        found = self.find(token)
        return found[1] if found else None

    def find(self, token: str) -> tuple[str, Entry] | None:
        """(the form, its entry) that ``token`` is a (stretched) spelling of; else None."""
        try:
            return self._seen[token]
        except KeyError:
            pass
        if len(self._seen) > 100_000:
            self._seen.clear()
        found = self._seen[token] = self._find(token)
        return found

    def _find(self, token: str) -> tuple[str, Entry] | None:
        bucket = self.forms.get(collapse(token))
        if not bucket:
            return None
        found = [(form, e) for form, e in bucket if _covers(token, form)]
        if not found:
            return None
        return min(found, key=lambda pair: (pair[1].tier != HIGH, pair[0] != token))


def stretched_by_one(token: str, form: str) -> bool:
    """Whether ``token`` differs from ``form`` only by runs one letter longer ("assess"/"asses")."""
    return token != form and all(n - m <= 1 for (_, n), (_, m) in zip(_runs(token), _runs(form)))


@functools.lru_cache(maxsize=65536)
def collapse(text: str) -> str:
    """``text`` with each run of a repeated character shortened to one ("gooore" → "gore")."""
    return _RUNS.sub(r"\1", text)


def _runs(text: str) -> list[tuple[str, int]]:
    return [(m.group(1), len(m.group(0))) for m in re.finditer(r"(.)\1*", text)]


def _covers(token: str, form: str) -> bool:
    """Each letter run of ``token`` is at least as long as the same run of ``form``."""
    a, b = _runs(token), _runs(form)
    return len(a) == len(b) and all(x == y and n >= m for (x, n), (y, m) in zip(a, b))


def inflections(term: str) -> set[str]:
    """``term`` and its inflected forms: plurals, singulars, -ing/-ed/-y/-ic/-a …"""
    if " " in term:
        head, _, last = term.rpartition(" ")
        return {f"{head} {form}" for form in inflections(last)}
    stems = {term}
    if term.endswith("ies") and len(term) > 4:
        stems.add(term[:-3] + "y")
        stems.add(term[:-3] + "ie")
    elif term.endswith("es") and len(term) > 4 and term[-3] in "sxz":
        stems.add(term[:-2])
    elif term.endswith("s") and not term.endswith("ss") and len(term) > 3:
        stems.add(term[:-1])
    forms = set(stems)
    for stem in stems:
        bases = {stem}
        if stem.endswith("e"):
            bases.add(stem[:-1])  # nude → nudity, nuding; gore → gory
        if stem.endswith("y"):
            bases.add(stem[:-1] + "i")  # horny → hornier
        if len(stem) == 3 and stem[1] in _VOWELS and stem[0] not in _VOWELS and stem[2] not in _VOWELS | set("wxy"):
            bases.add(stem + stem[-1])  # cum → cumming, tit → titty
        suffixes = _SUFFIXES + (_LONG_SUFFIXES if len(stem) >= 5 else ())
        for base in bases:
            for suffix in suffixes:
                if base != stem and suffix[0] not in _VOWELS and suffix != "y":
                    continue  # nud+s and cumm+s are not forms; nude+s and cum+s are
                forms.add(base + suffix)
    return forms


def parse_entry(line: str, category: str) -> Entry:
    """An :class:`Entry` from a blocklist line ``word [| flags]``; ValueError names a bad flag."""
    word, _, flags = line.partition("|")
    term = " ".join(re.findall(r"[^\W_]+", word.casefold()))
    if not term:
        raise ValueError(f"empty blocklist word in {line!r}")
    options: dict[str, object] = {}
    for flag in flags.split():
        key, eq, value = flag.partition("=")
        if eq and key in ("lang", "sense"):
            options["langs" if key == "lang" else key] = frozenset(v.strip().casefold() for v in value.split(",") if v)
        elif not eq and key in _FLAGS:
            if key in (HIGH, LOW):
                options["tier"] = key
            elif key == "name":
                options["name"] = True
            else:
                options[key[2:]] = False
        else:
            raise ValueError(f"unknown blocklist flag {flag!r} in {line!r}; "
                             f"known: {', '.join(sorted(_FLAGS))}, lang=…, sense=…")
    return Entry(term, category, **options)  # type: ignore[arg-type]
