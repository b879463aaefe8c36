"""Safety and abuse controls: prompt blocklist, image detector, strikes, cooldowns, appeals.

    normalize.py    skeleton/views: NFKC, invisible characters, case, diacritics, look-alikes, leetspeak
    blocklist.py    PromptChecker → Verdict; BlocklistChecker (blocklist.txt), BlockedPrompt
    images.py       ImageClassifier → Finding; NudityClassifier (NudeNet, offline), explicit_finding
    moderation.py   Moderation: admit / check_prompt / check_images in a scope, strikes, appeals, policies

Errors shown to users as they are (all :class:`~generation.errors.ImagineError`)::

    BlockedPrompt       the prompt matched a category; names it, never the text
    Restricted          blocked by strikes, on a cooldown, or too soon after the last request
    ModerationError     not an admin, nothing to appeal, no such appeal
"""

from __future__ import annotations

from bot.safety.blocklist import (
    DEFAULT_BLOCKLIST,
    DEFAULT_BLOCKLIST_PATH,
    AllowAllPrompts,
    BlockedPrompt,
    BlocklistChecker,
    PromptChecker,
    Verdict,
    load_blocklist,
)
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
from bot.safety.normalize import skeleton, views

__all__ = [
    "DEFAULT_BLOCKLIST",
    "DEFAULT_BLOCKLIST_PATH",
    "EXPLICIT",
    "EXPLICIT_LABELS",
    "IMAGE_VERDICTS",
    "AllowAllImages",
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
    "PromptChecker",
    "Restricted",
    "ScopePolicy",
    "Standing",
    "Verdict",
    "VerdictClassifier",
    "explicit_finding",
    "load_blocklist",
    "prompt_hash",
    "scope_of",
    "skeleton",
    "views",
]
