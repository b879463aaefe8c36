"""The matcher behind BlocklistChecker: which rule fires on a prompt, and how sure it is.

For every view of the prompt (:func:`bot.safety.normalize.views`), after allowed phrases are
taken out (:mod:`bot.safety.allowlist`), each token is tried as::

    word        a listed word or an inflection of one, letters stretched or not     "sexy", "pooorn"
    censored    stars for letters, when nothing else matched                     "p*rn", "b**bs"
    glued       a compound split by word frequencies, when a piece is a listed word "hotnakedgirl"
    reversed    a listed word backwards, when the token is no common word itself     "edun"
    split       2–4 adjacent chunks that make a listed word, when they are no phrase "por no"
    near        a word of one list near a word of another (minors near sexual words)
    pattern     an operator's regular expression on the normalized text

A word hit is dropped when the prompt shows the word's innocent reading: a proper name
("Dick Allen"), an innocent sense nearby ("a cock crowing at dawn"), or a language where it is
an ordinary word (Swedish "sex katter"). The most severe match wins: high before low
confidence, then the order of the categories.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.safety import words
from bot.safety.allowlist import Allowlist
from bot.safety.lexicon import HIGH, Entry, Index, collapse, stretched_by_one
from bot.safety.normalize import View, letter_map, skeleton, views

__all__ = ["Match", "Matcher", "NearRule"]

REVERSE_MAX_COUNT = 5e5  # a reversed token this common is a word ("lana"), not a disguise
COMPOUND_MIN_COUNT = 2e4  # "gore-tex" is one word when "goretex" is this common
STRONG_REST_COUNT = 1e5  # "nudewoman": a listed prefix/suffix plus a word this common (in a rarer token)
ORDINARY_COUNT = 1e4  # a listed form with a doubled letter this common is a word of its own ("assess")
KNOWN_PIECE_COUNT = 1e7  # a known word ("horsemen", "allegory") splits only into very common pieces
UNSEEN_COUNT = 1e4  # "nudeselfie": a token this rare that starts or ends with a listed word is glued
PIECE_MIN_COUNT = 1e6  # "sexagenarian" is no "sex agen arian": every piece of a split must be common
NEAR_WINDOW = 12  # tokens between the two words of a near rule
SENSE_WINDOW = 6
_STARRED = re.compile(r"(?<![\w*])[a-z]+\*+[a-z*]*[a-z](?![\w*])|(?<![\w*])[a-z]\*+[a-z]+(?![\w*])")
_SHORT_WORDS = {"a", "i", "on", "in", "of", "at", "my", "to", "an", "by", "up", "me", "us", "her", "his"}
_AGE = re.compile(r"^(?:[1-9]|1[0-7])(?:yo|yrs?|years?)?$")
_AGE_WORDS = {"yo", "yr", "yrs", "year", "years"}
_AGE_NUMBERS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"}
_TITLED = re.compile(r"\b[A-Z][a-z]+\b|\b[A-Z]\.")


@dataclass(frozen=True)
class Match:
    """A rule that fired: its category, confidence tier, and a short name for the log."""

    category: str
    tier: str
    rule: str


@dataclass(frozen=True)
class NearRule:
    """``category`` fires when a word of ``first`` and one of ``second`` are within a window.

    ``second`` may name whole categories ("@explicit sexual content"): any hit there counts.
    """

    category: str
    first: frozenset[str]
    second: frozenset[str]
    categories: frozenset[str]
    ages: bool = False
    heads: frozenset[str] = frozenset()  # first words of the second list's phrases ("spread legs")

    @classmethod
    def parse(cls, spec: str, category: str) -> NearRule:
        first, sep, second = spec.partition("/")
        if not sep:
            raise ValueError(f"near rule {spec!r} for {category!r} needs two lists: 'near: a, b / c, d'")
        a = {w.strip().casefold() for w in first.split(",") if w.strip()}
        b = {w.strip().casefold() for w in second.split(",") if w.strip()}
        cats = frozenset(w[1:].strip() for w in b if w.startswith("@"))
        ages = "<18" in a
        to_key = lambda ws: frozenset(collapse(" ".join(re.findall(r"[^\W_]+", w))) for w in ws  # noqa: E731
                                      if not w.startswith("@") and w != "<18")
        second = to_key(b)
        return cls(category, to_key(a), second, cats, ages, frozenset(w.split(" ", 1)[0] for w in second if " " in w))


class Matcher:
    """Entries, patterns, near rules and the allowlist, compiled for fast matching."""

    def __init__(self, entries: Iterable[Entry], patterns: Iterable[tuple[str, re.Pattern[str]]] = (),
                 near: Iterable[NearRule] = (), allowlist: Allowlist | None = None,
                 order: Sequence[str] = ()) -> None:
        letter_map()  # built once here, not on the first prompt
        self.entries = list(entries)
        self.index = Index()
        for entry in self.entries:
            self.index.add(entry)
        self.index.finish(self.entries)
        self.patterns = list(patterns)
        self.near = list(near)
        self.allowlist = allowlist or Allowlist()
        self._rank = {name: i for i, name in enumerate(order)}
        self._seen: dict[str, tuple[Entry, str] | None] = {}  # token → what it is alone, bounded
        self._strong = sorted({e.term for e in self.entries if e.glue and len(e.term) >= 4 and " " not in e.term},
                              key=len, reverse=True)

    # -- the whole prompt ------------------------------------------------------------------------

    def match(self, text: str, skip: frozenset[str] = frozenset()) -> Match | None:
        """The most severe rule that fires on ``text``, or None."""
        found: list[Match] = []
        seen = views(text, self._compound)
        written = set(seen[0].tokens)
        for view in seen:
            found += self._view_matches(view, text, skip, written)
            if any(m.tier == HIGH and self._rank.get(m.category) == 0 for m in found):
                break  # nothing can be more severe
        if "*" in text and not found:
            found += self._censored(text, skip)
        if not found:
            return None
        return min(found, key=lambda m: (m.tier != HIGH, self._rank.get(m.category, len(self._rank))))

    def _censored(self, text: str, skip: frozenset[str]) -> list[Match]:
        """"p*rn", "b**bs", "f*ck": each star stands for one letter of a listed form."""
        found = []
        for word in _STARRED.findall(unicodedata.normalize("NFKC", text).casefold()):
            pattern = re.compile(re.escape(word).replace(r"\*", "[a-z]"))
            for form, entry in self.index.by_length.get(len(word), ()):
                if entry.category not in skip and pattern.fullmatch(form):
                    found.append(Match(entry.category, entry.tier, f"censored:{entry.rule}"))
                    break
        return found

    def _compound(self, glued: str) -> bool:
        return glued in self.allowlist.words or (self.index.lookup(glued) is None
                                                  and words.count(glued) >= COMPOUND_MIN_COUNT)

    def _view_matches(self, view: View, text: str, skip: frozenset[str], written: set[str]) -> list[Match]:
        tokens = view.tokens
        covered = self.allowlist.covered(tokens)
        hits: dict[int, tuple[Entry, str]] = {}
        for i, token in enumerate(tokens):
            if i not in covered and (hit := self._token(token, tokens, i, covered)):
                hits[i] = hit
        self._split(tokens, covered, hits)
        found: list[Match] = []
        category_hits: set[str] = set()
        for i, (entry, how) in sorted(hits.items()):
            if how == "word" and tokens[i] in written and self._innocent(entry, tokens, i, text, len(hits)):
                continue
            category_hits.add(entry.category)
            if entry.category not in skip:
                found.append(Match(entry.category, entry.tier, f"{how}:{entry.rule}"))
        for rule in self.near:
            if rule.category not in skip and (pair := self._near(rule, tokens, covered, hits, category_hits)):
                found.append(Match(rule.category, HIGH, f"near:{pair}"))
        for category, pattern in self.patterns:
            if category not in skip and pattern.search(view.text):
                found.append(Match(category, HIGH, f"pattern:{pattern.pattern[:40]}"))
        return found

    # -- one token -------------------------------------------------------------------------------

    def _token(self, token: str, tokens: list[str], i: int, covered: set[int]) -> tuple[Entry, str] | None:
        try:
            hit = self._seen[token]
        except KeyError:
            if len(self._seen) > 100_000:
                self._seen.clear()
            hit = self._seen[token] = self._single(token)
        if (hit is None or hit[1] != "word") and i + 1 < len(tokens) and i + 1 not in covered \
                and collapse(token) in self.index.heads:  # "rule 34", "child porn"
            for n in (2, 3):
                if i + n <= len(tokens) and (entry := self.index.lookup(" ".join(tokens[i:i + n]))):
                    return entry, "word"
        return hit

    def _single(self, token: str) -> tuple[Entry, str] | None:
        """What ``token`` alone is: a listed word, glued words, a reversed word, or nothing."""
        found = self.index.find(token)
        if found is not None:
            form, entry = found
            if not (stretched_by_one(token, form) and words.count(token) >= ORDINARY_COUNT):
                return entry, "word"
            return None  # "assess", "pennies", "rapping": an ordinary word, not a stretched "asses"
        if token.isdigit() or len(token) < 3:
            return None
        if len(token) >= 5 and self._candidate(token):
            if (entry := self._glued(token)) is not None:
                return entry, "glued"
        reverse = self.index.lookup(token[::-1])
        if reverse is not None and reverse.reverse and (len(token) >= 4 or reverse.tier == HIGH) \
                and words.count(token) < REVERSE_MAX_COUNT / (1 if len(token) >= 4 else 2) \
                and token not in self.allowlist.words:
            return reverse, "reversed"
        return None

    def _candidate(self, token: str) -> bool:
        """Whether ``token`` may hide a listed word (noglue words too, but those only where the
        word frequencies split the token: "dickpic", "bigcock", never "dickson" or "woodcock")."""
        for pattern in (self.index.glued, self.index.weak):
            if pattern is not None and (pattern.search(token) or pattern.search(collapse(token))):
                return True
        return False

    def _glued(self, token: str) -> Entry | None:
        if token in self.allowlist.words:
            return None
        pieces = words.segment(token)
        floor = KNOWN_PIECE_COUNT if words.count(token) >= STRONG_REST_COUNT else PIECE_MIN_COUNT
        if len(pieces) > 1:
            found: list[Entry | None] = [self.index.lookup(p) or (self._affixed(p) if len(p) >= 7 else None)
                                         for p in pieces]
            covered = self.allowlist.covered(pieces)
            if covered and all(e is None or j in covered for j, e in enumerate(found)):
                return None  # "nakedeye", "pussywillow": an allowed phrase written as one word
            if all(e is not None or p in _SHORT_WORDS or (len(p) > 2 and words.count(p) >= floor)
                   for p, e in zip(pieces, found)):
                for j, entry in enumerate(found):
                    if j in covered:
                        continue
                    if entry is None and j + 1 < len(pieces) and j + 1 not in covered:
                        entry = self.index.lookup(pieces[j] + pieces[j + 1])  # "hen" "tai" → hentai
                    if entry is not None:
                        return entry
        return self._affixed(token)

    def _affixed(self, token: str) -> Entry | None:
        """"nudewoman", "pornvideo": a listed word glued to a common one, in a token rarer than them."""
        if words.count(token) >= STRONG_REST_COUNT or token in self.allowlist.words:  # "allegory", "kilgore"
            return None
        for stem in self._strong:
            rest = token[len(stem):] if token.startswith(stem) else token[:-len(stem)] if token.endswith(stem) else None
            if not rest or len(rest) < 3:
                continue
            entry = self.index.lookup(stem)
            if words.count(rest) >= STRONG_REST_COUNT * (10 if len(rest) == 3 else 1) or (
                    len(rest) >= 4 and entry is not None and not entry.langs and words.count(token) < UNSEEN_COUNT):
                return entry
        return None

    def _split(self, tokens: list[str], covered: set[int], hits: dict[int, tuple[Entry, str]]) -> None:
        """Chunks that make a listed word: "por no", "na ked", "po rn" (not "pen is")."""
        prefixes = self.index.prefixes
        for i in range(len(tokens) - 1):
            if collapse(tokens[i]) not in prefixes:
                continue
            for n in (2, 3, 4):
                window = tokens[i:i + n]
                if len(window) < n or any(j in covered or j in hits for j in range(i, i + n)):
                    break
                joined = "".join(window)
                if len(joined) > 16 or any(t.isdigit() for t in window):
                    break
                entry = self.index.lookup(joined)
                if entry is not None and not self._phrase(window):
                    hits[i] = (entry, "split")
                    break

    @staticmethod
    def _phrase(window: Sequence[str]) -> bool:
        """Whether adjacent chunks read as ordinary words in a row ("pen is", "an al")."""
        return all(words.known_bigram(a, b) for a, b in zip(window, window[1:]))

    # -- innocent readings and near rules ----------------------------------------------------------

    def _innocent(self, entry: Entry, tokens: list[str], i: int, text: str, hit_count: int) -> bool:
        if entry.sense:
            window = SENSE_WINDOW if entry.tier != HIGH else SENSE_WINDOW // 2  # a sure word needs a closer sense
            nearby = tokens[max(0, i - window):i] + tokens[i + 1:i + 1 + window]
            if any(t in entry.sense or t.rstrip("s") in entry.sense for t in nearby):
                return True
        if entry.name and _titled_pair(text, tokens[i]):
            return True
        if entry.langs and hit_count == 1:  # Swedish "sex katter": judge the language of the other words
            rest = [w for w in re.findall(r"[^\W\d_]+", text) if skeleton(w) != tokens[i]]
            if len(rest) < 2 or words.language(" ".join(rest)) not in entry.langs:
                return False
            return len(rest) >= 3 or words.language(text) in entry.langs  # two words: the whole prompt too
        return False

    def _near(self, rule: NearRule, tokens: list[str], covered: set[int],
              hits: dict[int, tuple[Entry, str]], category_hits: set[str]) -> str | None:
        """"child+naked" when a word of each list stands within the window; else None."""
        if not category_hits and rule.second.isdisjoint(tokens) and rule.heads.isdisjoint(tokens) \
                and rule.second.isdisjoint(map(collapse, tokens)):
            return None  # nothing from the second list: the common case, decided without pairs
        first: list[int] = []
        second: list[int] = []
        for i, token in enumerate(tokens):
            if i in covered:
                continue
            hit = hits.get(i)
            keys = {collapse(token), collapse(" ".join(tokens[i:i + 2]))}
            if hit and hit[1] == "glued":  # "nakedchild": the pieces count as words of their own
                keys.update(collapse(p) for p in words.segment(token))
            if keys & rule.first or (rule.ages and _is_age(tokens, i)):
                first.append(i)
            if keys & rule.second or (hit and hit[0].category in rule.categories and hit[0].category in category_hits):
                second.append(i)
        for a in first:
            for b in second:
                if abs(a - b) <= NEAR_WINDOW and (a != b or hits.get(a, (None, ""))[1] == "glued"):
                    return f"{tokens[a]}+{tokens[b]}" if a != b else tokens[a]
        return None


def _is_age(tokens: list[str], i: int) -> bool:
    """"12yo", "12 yo", "12 year old", "twelve year old": an age under 18 at position ``i``."""
    token = tokens[i]
    if token in _AGE_NUMBERS:
        return i + 1 < len(tokens) and tokens[i + 1] in _AGE_WORDS
    if not _AGE.match(token):
        return False
    if not token.isdigit():
        return True
    return i + 1 < len(tokens) and tokens[i + 1] in _AGE_WORDS


def _titled_pair(text: str, word: str) -> bool:
    """Whether ``word`` is written Capitalized next to another Capitalized word (a name)."""
    names = _TITLED.findall(text)
    if not names or text.isupper():
        return False
    lowered = [n.casefold().rstrip(".") for n in names]
    for m in re.finditer(r"\b[A-Z][a-z]+\b", text):
        if m.group(0).casefold() == word:
            before = text[:m.start()].rstrip()
            after = text[m.end():].lstrip()
            after = re.sub(r"^'s\b\s*", "", after)
            if re.search(r"(?:\b[A-Z][a-z]*\.?|\b[A-Z]\.)$", before) or re.match(r"[A-Z][a-z]*\b", after):
                return len(lowered) >= 2
    return False
