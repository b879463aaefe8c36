"""Text normalization for prompt moderation: undo the tricks people use to slip words past a list.

    decode(text)     percent-encoding ("%6E%75%64%65") and HTML character references undone
    skeleton(text)   decode → NFKC → confusables mapped *as written* (Cyrillic Н → H, Greek Ν → N:
                     the UTS #39 skeleton, before casefolding) → small capitals, regional-indicator
                     and circled letters → drop invisible characters, and emoji or markdown inside
                     a word → casefold → drop diacritics
    views(text)      the skeleton tokenized up to three ways (as written; leetspeak with 1→i and
                     with 1→l), each with runs of single letters ("g o r e", "g.o.r.e") joined

Stretched letters ("gooore"), inflections, glued and split words are the matcher's job
(:mod:`bot.safety.matcher`), not this module's, so that "assassin" never turns into "asasin".
Product codes ("A55", "RTX 4090", "4K") are not read as leetspeak: letters-then-digits in
capitals, or digits-then-letters, are codes.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = ["View", "decode", "skeleton", "views"]

# invisible characters that are not in category Cf but render as nothing
_INVISIBLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f"}
_DIGITS = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"})
_LEET_I = str.maketrans({"@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "1": "i"})
_LEET_L = str.maketrans({"@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e", "1": "l"})
_WORD = re.compile(r"[^\W_]+")
_HAS_LETTER = re.compile(r"[^\W\d_]|[@$!|+€]")  # a letter or a leetspeak symbol
_LEET_CHARS = re.compile(r"[\d@$!|+€]")
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_ENTITY = re.compile(r"&(?:#\d{2,7}|#[xX][0-9A-Fa-f]{2,6}|[A-Za-z]{2,8});")
# markdown emphasis, strike-through, code and spoiler marks between two letters: "nu**d**e"
_MARKUP = re.compile(r"(?<=[^\W\d_])(?:[*_~`\\]|\|\||</?[A-Za-z]{1,6}>)+(?=[^\W\d_])")
_SYMBOL = "\x00"  # an emoji or other symbol, until we know whether it sits inside a word
_INNER_SYMBOL = re.compile(r"(?<=[^\W\d_])\x00+(?=[^\W\d_])")
# product codes: A55, GT40, RTX4090, rtx4090, 4K, 1080p, 3D, 35mm
_CODE = re.compile(r"[A-Z]{1,4}\d+[A-Za-z]?|[a-z]{1,4}\d{3,}|\d+(?i:[kdpxs]|mm|cm|th|st|nd|rd|fps|bit|hz|gb|tb)", re.ASCII)
_NAME_LETTER = re.compile(
    r"(?:LATIN|REGIONAL INDICATOR SYMBOL)\b.*\bLETTER (?:SMALL CAPITAL )?([A-Z])$")
_LETTER_RANGES = ((0x0180, 0x0300), (0x1D00, 0x1E00), (0x2C60, 0x2C80), (0xA720, 0xA800),
                  (0xAB30, 0xAB70), (0x1F100, 0x1F200), (0x1DF00, 0x1E000))
# lowercase Cyrillic and Greek letters used as Latin ones, where the confusables data disagrees
_LOOKALIKE = {"п": "n", "г": "r", "ш": "w", "ь": "b", "т": "t", "к": "k", "м": "m", "в": "b", "н": "h",
              "ν": "v", "τ": "t", "κ": "k", "ι": "i", "η": "n", "ρ": "p", "ω": "w", "υ": "u", "χ": "x",
              "α": "a", "ε": "e", "ο": "o", "β": "b", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ɡ": "g",
              # faux-Cyrillic and Greek capitals used for the Latin letters they resemble: ИUDE, ΣXY
              "И": "N", "Я": "R", "Д": "A", "Ц": "U", "Э": "E", "Ш": "W", "Σ": "E", "Λ": "A", "Δ": "A",
              "Π": "N", "П": "N"}
MIN_JOINED = 3  # "g o r e": at least this many single-letter tokens in a row are joined


@dataclass(frozen=True)
class View:
    """One tokenization: ``text`` (tokens joined by spaces), the tokens made by joining single
    letters, and whether leetspeak was read (``leet``)."""

    text: str
    joined: tuple[str, ...]
    leet: bool = field(default=False, compare=False)

    @property
    def tokens(self) -> list[str]:
        return self.text.split()


@functools.lru_cache(maxsize=1)
def letter_map() -> dict[int, str]:
    """Characters that are one Latin letter in disguise (small capitals, regional indicators,
    negative circled/squared letters, confusables as written) → that letter, case kept."""
    from confusable_homoglyphs import confusables

    named: dict[int, str] = {}
    for start, stop in _LETTER_RANGES:
        for code in range(start, stop):
            name = unicodedata.name(chr(code), "")
            if (found := _NAME_LETTER.search(name)) and not unicodedata.decomposition(chr(code)):
                named[code] = found.group(1).lower() if "SMALL" in name else found.group(1)
    table: dict[int, str] = dict(named)
    table.update({ord(k): v for k, v in _LOOKALIKE.items()})
    data = confusables.confusables_data
    for char, glyphs in data.items():
        if len(char) != 1 or char.isascii() or ord(char) in table:
            continue
        for glyph in glyphs:
            target = glyph.get("c", "")
            for _ in range(3):  # follow a chain: Cyrillic н → small capital ʜ → h
                if len(target) != 1 or target.isascii() or ord(target) in named:
                    break
                nxt = data.get(target, [{}])[0].get("c", "")
                target = nxt
            if len(target) == 1 and ord(target) in named:
                target = named[ord(target)]
            if target == "l" and unicodedata.category(char) == "Lu":
                target = "I"  # Greek Ι, Cyrillic І: a capital i as written, not an l
            if len(target) == 1 and target.isascii() and target.isalnum():
                table[ord(char)] = target
                break
    return table


def decode(text: str) -> str:
    """Percent-encoding and HTML character references replaced by the characters they stand for."""
    for _ in range(2):  # "%256E" is "%6E" encoded once more
        if "%" not in text:
            break
        text = _PERCENT.sub(lambda m: unquote(m.group(0), errors="replace"), text)
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    return text


def _fold_char(c: str, table: dict[int, str]) -> str:
    if c.isascii():
        return c
    mapped = table.get(ord(c))
    if mapped is not None:
        return mapped
    if c.isspace():
        return " "
    category = unicodedata.category(c)
    if c in _INVISIBLE or category in ("Cf", "Cc", "Mn", "Me") or 0xFE00 <= ord(c) <= 0xFE0F:
        return ""
    if category in ("So", "Sk", "Cn", "Co", "Cs") or 0x1F3FB <= ord(c) <= 0x1F3FF:
        return _SYMBOL
    return c


def _cased(text: str) -> str:
    """``text`` after NFKC and letter mapping, case as written, symbols inside words dropped."""
    text = unicodedata.normalize("NFKC", decode(text))
    if not text.isascii():
        table = letter_map()
        text = "".join(_fold_char(c, table) for c in text)
        if _SYMBOL in text:
            text = _INNER_SYMBOL.sub("", text).replace(_SYMBOL, " ")
    return _MARKUP.sub("", text)


def skeleton(text: str) -> str:
    """``text`` folded to plain lowercase letters where it only looks different."""
    text = _cased(text).casefold()
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) not in ("Mn", "Me"))
        text = unicodedata.normalize("NFC", text).casefold()
    return text


def _is_code(chunk: str) -> bool:
    core = chunk.strip(".,;:!?()[]{}\"'")
    return bool(_CODE.fullmatch(core.replace("-", "")))


def _tokens(cased: str, symbols: dict[int, str] | None,
            compound: Callable[[str], bool] | None) -> tuple[list[str], bool]:
    tokens: list[str] = []
    leet = False
    for chunk in cased.split():
        if symbols is not None and _HAS_LETTER.search(chunk) and _LEET_CHARS.search(chunk) and not _is_code(chunk):
            chunk = chunk.casefold().translate(symbols).translate(_DIGITS)  # "s3x", "l0l1" become words
            leet = True
        words = _WORD.findall(chunk.casefold())
        if compound is not None and len(words) > 1 and re.search(r"[^\W_]-[^\W_]", chunk):
            glued = "".join(words)
            if compound(glued):  # "gore-tex", "stop-cock": one word, not two
                words = [glued]
        tokens += words
    return tokens, leet


def _join_singles(tokens: list[str], leet: bool) -> View:
    out: list[str] = []
    joined: list[str] = []
    run: list[str] = []
    for token in [*tokens, ""]:
        if len(token) == 1 and not token.isdigit():
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
    return View(" ".join(out), tuple(joined), leet)


def _unaccent(text: str) -> str:
    if text.isascii():
        return text
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) not in ("Mn", "Me"))
    return unicodedata.normalize("NFC", text)


def views(text: str, compound: Callable[[str], bool] | None = None) -> list[View]:
    """The distinct tokenizations of ``text`` the matcher checks (see the module docstring).

    ``compound(word)`` says whether a hyphenated "a-b" is one dictionary word "ab".
    """
    cased = _unaccent(_cased(text))
    found: list[View] = []
    tables: tuple[dict[int, str] | None, ...] = (None,)
    if _LEET_CHARS.search(cased):
        tables = (None, _LEET_I, _LEET_L)
    for symbols in tables:
        tokens, leet = _tokens(cased, symbols, compound)
        view = _join_singles(tokens, leet)
        if view not in found:
            found.append(view)
    return found
