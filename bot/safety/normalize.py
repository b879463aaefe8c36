"""Text normalization for prompt moderation: undo the tricks people use to slip words past a list.

    skeleton(text)   NFKC → drop format/invisible characters → casefold → drop diacritics
                     → map confusable look-alikes (Cyrillic о, Greek ο, …) to ASCII
    views(text)      the skeleton tokenized three ways (as written; leetspeak digits and symbols
                     with 1→i and with 1→l), each with runs of single letters ("g o r e",
                     "g.o.r.e") joined into one token

Stretched letters ("gooore") are handled by the matcher (each letter of a term matches a run),
not here, so that "assassin" never turns into "asasin".
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

__all__ = ["View", "skeleton", "views"]

# invisible characters that are not in category Cf but render as nothing
_INVISIBLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f"}
_DIGITS = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"})
_LEET_I = str.maketrans({"@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "1": "i"})
_LEET_L = str.maketrans({"@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e", "1": "l"})
_WORD = re.compile(r"[^\W_]+")
_HAS_LETTER = re.compile(r"[^\W\d_]|[@$!|+€]")  # a letter or a leetspeak symbol
MIN_JOINED = 3  # "g o r e": at least this many single-letter tokens in a row are joined


@dataclass(frozen=True)
class View:
    """One tokenization: ``text`` (tokens joined by spaces) and the tokens made by joining."""

    text: str
    joined: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def _confusable_map() -> dict[int, str]:
    """Non-ASCII characters that look like one ASCII letter or digit → that character."""
    from confusable_homoglyphs import confusables

    table: dict[int, str] = {}
    for char, glyphs in confusables.confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        for glyph in glyphs:
            target = glyph.get("c", "")
            if len(target) == 1 and target.isascii() and target.isalnum():
                table[ord(char)] = target.lower()
                break
    return table


def skeleton(text: str) -> str:
    """``text`` folded to plain lowercase letters where it only looks different."""
    text = unicodedata.normalize("NFKC", text)
    kept = []
    for c in text:
        if c.isspace():
            kept.append(" ")
        elif c not in _INVISIBLE and unicodedata.category(c) not in ("Cf", "Cc"):
            kept.append(c)
    text = "".join(kept)
    text = text.casefold()
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) not in ("Mn", "Me"))
    text = text.translate(_confusable_map())
    return unicodedata.normalize("NFC", text).casefold()


def _tokens(text: str, symbols: dict[int, str] | None) -> list[str]:
    tokens: list[str] = []
    for chunk in text.split():
        if symbols is not None and _HAS_LETTER.search(chunk):  # "1024" stays; "s3x", "l0l1" become words
            chunk = chunk.translate(symbols).translate(_DIGITS)
        tokens += _WORD.findall(chunk)
    return tokens


def _join_singles(tokens: list[str]) -> View:
    out: list[str] = []
    joined: list[str] = []
    run: list[str] = []
    for token in [*tokens, ""]:
        if len(token) == 1:
            run.append(token)
            continue
        if len(run) >= MIN_JOINED:
            out.append("".join(run))
            joined.append(out[-1])
        else:
            out += run
        run = []
        if token:
            out.append(token)
    return View(" ".join(out), tuple(joined))


def views(text: str) -> list[View]:
    """The distinct tokenizations of ``text`` the matcher checks (see the module docstring)."""
    base = skeleton(text)
    found: list[View] = []
    for symbols in (None, _LEET_I, _LEET_L):
        view = _join_singles(_tokens(base, symbols))
        if view not in found:
            found.append(view)
    return found
