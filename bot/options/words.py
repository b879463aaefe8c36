"""Words of an /imagine text: splitting on whitespace with quote groups, flag prefixes, and
quoting a text so that it lexes back unchanged (for ``render``). The grammar is in the package
docstring of :mod:`bot.options`.
"""

from __future__ import annotations

from typing import NamedTuple

from generation.core.errors import InvalidRequest

__all__ = ["PREFIXES", "QUOTES", "Word", "lex", "prefix_len", "quote"]

PREFIXES = ("--", "\u2014", "\u2013")  # "--", em dash, en dash
QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019"}


class Word(NamedTuple):
    """A whitespace-separated word: its text (quotes removed), raw span, and flag-ness."""

    text: str
    raw: str
    segments: tuple[tuple[str, bool], ...]  # (text, quoted)

    @property
    def is_flag(self) -> bool:
        first, quoted = self.segments[0]
        return not quoted and prefix_len(first) > 0


def prefix_len(text: str) -> int:
    """Length of the flag prefix starting ``text`` (0 when it is not a flag)."""
    for prefix in PREFIXES:
        if text.startswith(prefix):
            rest = text[len(prefix):]
            return len(prefix) if rest[:1].isascii() and rest[:1].isalpha() else 0
    return 0


def lex(text: str) -> list[Word]:
    """Split ``text`` into words, grouping quoted text; raise on a quote left open."""
    words: list[Word] = []
    segments: list[tuple[str, bool]] = []
    plain: list[str] = []
    start = i = 0
    n = len(text)

    def flush_plain() -> None:
        if plain:
            segments.append(("".join(plain), False))
            plain.clear()

    while i < n:
        char = text[i]
        if char.isspace():
            flush_plain()
            if segments:
                words.append(make_word(segments, text[start:i]))
                segments = []
            i += 1
            start = i
            continue
        if char in QUOTES and (i == 0 or not text[i - 1].isalnum()):
            close = find_close(text, i + 1, QUOTES[char])
            if close < 0:
                snippet = text[i:i + 20] + ("…" if n - i > 20 else "")
                raise InvalidRequest(
                    "prompt",
                    f"Unbalanced quote: the {char} in {snippet!r} is never closed. "
                    f"Close it with {QUOTES[char]} or remove it.",
                )
            flush_plain()
            segments.append((text[i + 1:close], True))
            i = close + 1
            continue
        plain.append(char)
        i += 1
    flush_plain()
    if segments:
        words.append(make_word(segments, text[start:]))
    return words


def find_close(text: str, start: int, quote: str) -> int:
    """Index of the first ``quote`` at or after ``start`` not followed by a letter/digit."""
    i = text.find(quote, start)
    while i >= 0:
        if i + 1 >= len(text) or not text[i + 1].isalnum():
            return i
        i = text.find(quote, i + 1)
    return -1


def make_word(segments: list[tuple[str, bool]], raw: str) -> Word:
    return Word("".join(s for s, _ in segments), raw, tuple(segments))



# -- quoting for render ----------------------------------------------------------------------


def quote(text: str) -> str:
    """``text`` as one word that lexes back to exactly ``text`` (plain when that already works)."""
    try:
        words = lex(text)
    except InvalidRequest:
        words = None
    if words is not None and " ".join(w.text for w in words) == text \
            and not any(w.is_flag for w in words):
        return text
    pieces = []
    rest = text
    while rest:
        best_open, best_len = '"', -1
        for opening, closing in QUOTES.items():
            length = quotable_prefix(rest, closing)
            if length > best_len:
                best_open, best_len = opening, length
        pieces.append(f"{best_open}{rest[:best_len]}{QUOTES[best_open]}")
        rest = rest[best_len:]
    return "".join(pieces)


def quotable_prefix(text: str, closing: str) -> int:
    """Length of the longest prefix of ``text`` that a group closed by ``closing`` can hold."""
    close = find_close(text, 0, closing)
    return len(text) if close < 0 else close
