"""Safety and abuse controls: prompt blocklist, image detector, strikes, cooldowns, appeals.

    normalize.py    skeleton/views: percent-decoding, NFKC, look-alikes as written (UTS #39), small
                    capitals, regional indicators, emoji/markdown inside words, diacritics, leetspeak
    lexicon.py      blocklist entries (tier, languages, innocent senses) and their inflections
    words.py        word frequencies (wordsegment) and language guesses (py3langid), on demand
    allowlist.py    phrases and names that override word hits (allowlist.txt)
    matcher.py      word / glued / reversed / split / near / pattern rules → Match(category, tier, rule)
    blocklist.py    PromptChecker → Verdict(allowed, category, tier, rule); BlocklistChecker, BlockedPrompt
    classifier.py   SecondOpinion: an optional ONNX text classifier (CPU) after the blocklist
    images.py       ImageClassifier → Finding; NudityClassifier (NudeNet, offline), explicit_finding
    moderation.py   Moderation: admit / check_prompt / check_images in a scope, strikes, appeals, policies
    settings.py     ModerationSettings, ScopePolicy ([moderation] config)

Errors shown to users as they are (all :class:`~generation.core.errors.ImagineError`)::

    BlockedPrompt       the prompt matched a category; names it, never the text
    Restricted          blocked by strikes, on a cooldown, or too soon after the last request
    ModerationError     not an admin, nothing to appeal, no such appeal
"""

from __future__ import annotations

from bot.safety.allowlist import Allowlist
from bot.safety.blocklist import (
    DEFAULT_ALLOWLIST,
    DEFAULT_BLOCKLIST,
    DEFAULT_BLOCKLIST_PATH,
    AllowAllPrompts,
    BlockedPrompt,
    BlocklistChecker,
    PromptChecker,
    Verdict,
    load_blocklist,
    rule_tag,
)
from bot.safety.classifier import OnnxTextClassifier, SecondOpinion, TextClassifier
from bot.safety.images import (
    EXPLICIT,
    EXPLICIT_LABELS,
    IMAGE_VERDICTS,
    AllowAllImages,
    Detection,
    Finding,
    ImageChecker,
    ImageClassifier,
    ImageSettings,
    NudityClassifier,
    VerdictClassifier,
    explicit_finding,
)
from bot.safety.moderation import (
    Moderation,
    ModerationError,
    ModerationSettings,
    Restricted,
    ScopePolicy,
    Standing,
    prompt_hash,
    scope_of,
)
from bot.safety.normalize import decode, skeleton, views

__all__ = [
    "DEFAULT_ALLOWLIST",
    "DEFAULT_BLOCKLIST",
    "DEFAULT_BLOCKLIST_PATH",
    "EXPLICIT",
    "EXPLICIT_LABELS",
    "IMAGE_VERDICTS",
    "AllowAllImages",
    "Allowlist",
    "AllowAllPrompts",
    "BlockedPrompt",
    "BlocklistChecker",
    "Detection",
    "Finding",
    "ImageChecker",
    "ImageClassifier",
    "ImageSettings",
    "Moderation",
    "ModerationError",
    "ModerationSettings",
    "NudityClassifier",
    "OnnxTextClassifier",
    "PromptChecker",
    "Restricted",
    "ScopePolicy",
    "SecondOpinion",
    "Standing",
    "TextClassifier",
    "Verdict",
    "VerdictClassifier",
    "decode",
    "explicit_finding",
    "load_blocklist",
    "prompt_hash",
    "rule_tag",
    "scope_of",
    "skeleton",
    "views",
]
