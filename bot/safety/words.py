"""Word frequencies and language guesses the matcher consults for ambiguous cases only.

    count(word)            how often ``word`` occurs in English web text (wordsegment's unigrams)
    known_bigram(a, b)     "pen is" is a phrase people write; "hen tai" is not
    segment(token)         "hotnakedgirl" → hot naked girl; "scunthorpe" stays one word
    language(text)         the likeliest language of ``text`` (py3langid)

The dictionaries load on first use (about 0.6 s, 60 MB) and only prompts that contain a
listed word, glued or split, ever reach them.
"""

from __future__ import annotations

import functools
import threading

__all__ = ["count", "known_bigram", "language", "segment"]

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
    """The likeliest split of a glued ``token`` into English words (itself when it is one)."""
    _load()
    import wordsegment

    return tuple(wordsegment.segment(token)) or (token,)


@functools.lru_cache(maxsize=1024)
def language(text: str) -> str:
    """The likeliest language of ``text`` (an ISO 639-1 code, by py3langid)."""
    from py3langid.langid import classify

    return str(classify(text)[0])
