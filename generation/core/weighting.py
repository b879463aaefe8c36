"""A1111 prompt weighting, parsed into weighted fragments (pure: no torch).

Syntax (the one Stable Diffusion web UI users know)::

    (text)        weight x 1.1            ((text)) nests: x 1.21
    [text]        weight / 1.1
    (text:1.3)    weight x 1.3            a number after the last colon, right before ")"
    \\( \\) \\[ \\] \\\\  a literal bracket or backslash

Differences from A1111, chosen so that user text is never reinterpreted silently:

- a bracket that is never closed, or a closer that was never opened, is plain text
  (``happy :)``, ``[WIP`` draw as typed; A1111 weights the rest of the prompt instead);
- ``(text:W)`` needs ``MIN_WEIGHT <= W <= MAX_WEIGHT`` and so does every nested product;
  outside the bounds the request is refused, never clamped;
- everything else (``C++``, ``a-b``, ``word+``, ``.and()``) is literal: this module's fragments
  go to compel as text, never through compel's own prompt language.

Adjacent fragments of equal weight are merged, so ``(cat:1.0)`` and ``cat`` are one fragment.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from generation.core.errors import InvalidRequest

__all__ = ["MAX_WEIGHT", "MIN_WEIGHT", "Fragment", "is_plain", "parse_weighted", "plain_text"]

MIN_WEIGHT = 0.0
MAX_WEIGHT = 2.0
_STEP = 1.1
_TOKEN = re.compile(r"\\[\\()\[\]]|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|\\|[^\\()\[\]:]+|:")


@dataclass(frozen=True)
class Fragment:
    """A piece of prompt text and its weight (1.0: as written)."""

    text: str
    weight: float = 1.0


def parse_weighted(text: str, field: str = "prompt") -> tuple[Fragment, ...]:
    """``text`` as weighted fragments; raises InvalidRequest (``field``) for a weight out of bounds."""
    pieces: list[list[object]] = []  # [text, weight]
    rounds: list[int] = []  # index into pieces where an open "(" starts
    squares: list[int] = []
    opened_at: dict[int, str] = {}  # pieces index -> literal opener, for unclosed brackets

    def scale(start: int, factor: float, closer: str) -> None:
        opener = opened_at.pop(start, "(")
        if not any(piece[0] for piece in pieces[start + 1:]):  # "()" weights nothing: plain text
            pieces[start][0] = opener + closer
            return
        for piece in pieces[start:]:
            piece[1] = float(piece[1]) * factor  # type: ignore[arg-type]

    for match in _TOKEN.finditer(text):
        token, number = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            pieces.append([token[1], 1.0])
        elif token == "(":
            rounds.append(len(pieces))
            pieces.append(["", 1.0])  # placeholder: becomes "(" if never closed
            opened_at[len(pieces) - 1] = "("
        elif token == "[":
            squares.append(len(pieces))
            pieces.append(["", 1.0])
            opened_at[len(pieces) - 1] = "["
        elif number is not None and rounds and _is_number(number):
            scale(rounds.pop(), _weight(number, token, field), token)
        elif number is not None:  # "(note:...)": not a weight, so text
            pieces.append([token[:-1], 1.0])
            if rounds:
                scale(rounds.pop(), _STEP, ")")
            else:
                pieces.append([")", 1.0])
        elif token == ")" and rounds:
            scale(rounds.pop(), _STEP, token)
        elif token == "]" and squares:
            scale(squares.pop(), 1 / _STEP, token)
        else:
            pieces.append([token, 1.0])
    for index, opener in opened_at.items():
        pieces[index][0] = opener  # never closed: plain text, weight unchanged
    fragments: list[Fragment] = []
    for raw, weight in pieces:
        value = round(float(weight), 6)  # type: ignore[arg-type]
        if not raw:
            continue
        if not MIN_WEIGHT <= value <= MAX_WEIGHT:
            raise InvalidRequest(
                field,
                f"The weight of {str(raw).strip()!r} comes to {value:g}; weights must stay from "
                f"{MIN_WEIGHT:g} to {MAX_WEIGHT:g} (nested brackets multiply).",
            )
        if fragments and fragments[-1].weight == value:
            fragments[-1] = Fragment(fragments[-1].text + str(raw), value)
        else:
            fragments.append(Fragment(str(raw), value))
    return tuple(fragments)


def plain_text(text: str, field: str = "prompt") -> str:
    """The words of ``text`` without weighting syntax (what the pooled embedding and safety see)."""
    return " ".join("".join(f.text for f in parse_weighted(text, field)).split())


def is_plain(fragments: tuple[Fragment, ...]) -> bool:
    """Whether every fragment has weight 1."""
    return all(f.weight == 1.0 for f in fragments)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _weight(number: str, token: str, field: str) -> float:
    value = float(number)
    if not math.isfinite(value) or not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise InvalidRequest(
            field, f"Weight {number} in {token!r} is out of bounds: use {MIN_WEIGHT:g} to {MAX_WEIGHT:g}."
        )
    return value
