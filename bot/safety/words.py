"""Word frequencies and language guesses the matcher consults for ambiguous cases only.

    count(word)            how often ``word`` occurs in English web text (wordsegment's unigrams)
    known_bigram(a, b)     "pen is" is a phrase people write; "hen tai" is not
    segment(token)         "hotnakedgirl" → hot naked girl; "scunthorpe" stays one word
    language(text)         the likeliest language of ``text`` (py3langid)

Both load once per process (measured here: the word counts about 95 MB, the language model
about 90 MB, 1–2.5 s each): ``preload()`` starts that in a background thread when a checker is
built, so the first prompt that needs them does not wait for the disk.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterable

__all__ = ["count", "known_bigram", "language", "preload", "segment"]

_MAX_WORD = 24  # wordsegment's longest word
_lock = threading.Lock()
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if not _loaded:
            import wordsegment

            wordsegment.load()
            _loaded = True


def preload(background: bool = True) -> None:
    """Load the word counts and the language model now (in a daemon thread when ``background``)."""
    def load() -> None:
        _load()
        language("warm up")

    if background:
        threading.Thread(target=load, name="safety-words", daemon=True).start()
    else:
        load()


def count(word: str) -> float:
    """The unigram count of ``word`` (lowercase letters) in the English corpus; 0 if unseen."""
    _load()
    import wordsegment

    return wordsegment.UNIGRAMS.get(word, 0.0)


def known_bigram(first: str, second: str) -> bool:
    """Whether "``first`` ``second``" occurs as a phrase in the English corpus."""
    _load()
    import wordsegment

    return f"{first} {second}" in wordsegment.BIGRAMS


@functools.lru_cache(maxsize=4096)
def segment(token: str) -> tuple[str, ...]:
    """The likeliest split of a glued ``token`` into English words (itself when it is one).

    A unigram Viterbi over wordsegment's counts with its penalty for unknown words, then a piece
    more often written as two words (its bigram count beats its own) is split: the choices of
    ``wordsegment.segment`` on single tokens ("scunthorpe" whole, "hot naked girl" split), many
    times faster.
    """
    _load()
    import wordsegment

    unigrams, total = wordsegment.UNIGRAMS, wordsegment.Segmenter.TOTAL
    n = len(token)
    best: list[tuple[float, int]] = [(0.0, 0)] + [(-math.inf, 0)] * n
    for end in range(1, n + 1):
        for start in range(max(0, end - _MAX_WORD), end):
            word = token[start:end]
            count = unigrams.get(word)
            score = math.log10(count / total) if count else math.log10(10.0 / (total * 10 ** len(word)))
            if best[start][0] + score > best[end][0]:
                best[end] = (best[start][0] + score, start)
    pieces = []
    end = n
    while end > 0:
        start = best[end][1]
        pieces.append(token[start:end])
        end = start
    return tuple(_split_phrases(reversed(pieces), unigrams, wordsegment.BIGRAMS)) or (token,)


def _split_phrases(pieces: Iterable[str], unigrams: dict[str, float], bigrams: dict[str, float]) -> list[str]:
    """Pieces that are mostly written as two words split in two ("nakedgirls" → naked girls)."""
    out: list[str] = []
    for piece in pieces:
        alone = unigrams.get(piece, 0.0)
        best, where = alone, 0
        for k in range(3, len(piece) - 2):  # halves of 3+ letters: "there in" is no split of "therein"
            count = bigrams.get(f"{piece[:k]} {piece[k:]}", 0.0)
            if count > best:
                best, where = count, k
        out += _split_phrases((piece[:where], piece[where:]), unigrams, bigrams) if where else [piece]
    return out


@functools.lru_cache(maxsize=1024)
def language(text: str) -> str:
    """The likeliest language of ``text`` (an ISO 639-1 code, by py3langid)."""
    from py3langid.langid import classify

    return str(classify(text)[0])
