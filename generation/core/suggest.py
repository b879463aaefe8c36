"""From a caption to four /imagine prompts (``/describe``): pure Python, no model.

    clean_caption("arafed cat sitting on a street [SEP] ##s")  ->  "cat sitting on a street"
    suggestions("cat sitting on a street", "16:9")             ->  four prompts, e.g.
        "cat sitting on a street --ar 16:9"
        "photograph of cat sitting on a street, natural light --style photo --ar 16:9"
        ...

A captioner's raw text can be anything (a random-weight model's is junk): :func:`clean_caption`
keeps words only (letters, digits, inner apostrophes and hyphens, commas), so no quote, dash
prefix, weighting bracket or LoRA tag of the /imagine syntax can come from it, drops known
captioner filler and runs of a repeated word, and returns None when no word is left.
"""

from __future__ import annotations

import re

__all__ = ["MAX_CAPTION_WORDS", "clean_caption", "suggestions"]

MAX_CAPTION_WORDS = 40
# words captioners (BLIP) put in front of a caption, or emit for a token they cannot spell
_FILLER = frozenset({"arafed", "araffe", "arafe", "arafly", "there", "is", "unk", "sep", "cls", "pad", "dec",
                     "mask"})
_LEADING_FILLER = ("arafed", "araffe", "arafe", "arafly", "there is", "this is", "an image of", "a picture of",
                   "a photo of")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")  # letters/digits, joined by inner ' or -
# (name, template, style): the four suggestions, in the bot's /imagine syntax
_VARIANTS = (
    ("{caption}", None),
    ("{caption}, natural light, sharp focus, highly detailed", "photo"),
    ("{caption}, dramatic lighting, wide shot", "cinematic"),
    ("{caption}, soft colours, illustration", "watercolor"),
)


def clean_caption(raw: str) -> str | None:
    """The caption's words as plain prompt text, or None when it has none."""
    if not isinstance(raw, str):
        return None
    text = re.sub(r"\[[^\]]*\]", " ", raw)  # [SEP], [unused12], ...
    text = text.replace("##", "")
    clauses = []
    for clause in re.split(r"[,;\n]+|[.!?:](?:\s|$)", text):
        words = _WORD.findall(clause)
        kept: list[str] = []
        for word in words:
            if kept and word.lower() == kept[-1].lower():  # "the the the"
                continue
            kept.append(word)
        joined = " ".join(kept).strip()
        lowered = joined.lower()
        for filler in _LEADING_FILLER:
            if lowered.startswith(filler + " ") or lowered == filler:
                joined = joined[len(filler):].strip()
                lowered = joined.lower()
        if joined and not all(w.lower() in _FILLER for w in joined.split()):
            clauses.append(joined)
    words = ", ".join(clauses).split()
    if not any(any(c.isalpha() for c in w) for w in words):
        return None
    return " ".join(words[:MAX_CAPTION_WORDS]).rstrip(",")


def suggestions(caption: str, aspect: str | None = None) -> tuple[str, str, str, str]:
    """Four /imagine prompts built on ``caption`` (already cleaned), with ``--ar aspect`` when given."""
    ar = f" --ar {aspect}" if aspect else ""
    made = []
    for template, style in _VARIANTS:
        prompt = template.format(caption=caption)
        made.append(prompt + (f" --style {style}" if style else "") + ar)
    return made[0], made[1], made[2], made[3]
