"""Prompt safety: whole-word blocklist, regexes, categories; messages never echo the match."""

from __future__ import annotations

import pytest

from bot.safety import AllowAllImages, BlockedPrompt, BlocklistChecker, Verdict
from generation.errors import ImagineError


def test_whole_words_any_case() -> None:
    checker = BlocklistChecker(["badword", "two words"], category="custom")
    assert checker.check("a BadWord here", "") == Verdict(False, "custom")
    assert checker.check("badwords are fine as another word", "").allowed
    assert checker.check("notbadword", "").allowed
    assert checker.check("Two   Words together", "") == Verdict(False, "custom")
    assert checker.check("two-words", "").allowed


def test_patterns_and_categories() -> None:
    checker = BlocklistChecker(patterns=[r"\bfoo\d+\b"], category="numbers",
                               categories={"colours": (["magenta"], [])})
    assert checker.check("foo42 bar", "") == Verdict(False, "numbers")
    assert checker.check("a magenta sky", "") == Verdict(False, "colours")
    assert checker.check("foo bar", "").allowed


def test_negative_prompt_is_not_checked_by_default() -> None:
    assert BlocklistChecker.default().check("a battle scene", "gore").allowed
    strict = BlocklistChecker(["gore"], check_negative=True)
    assert not strict.check("a battle scene", "gore").allowed


@pytest.mark.parametrize(
    "prompt, category",
    [
        ("a gory battlefield", "graphic gore"),
        ("naked child on a beach", "sexual content involving minors"),
        ("a loli character", "sexual content involving minors"),
    ],
)
def test_default_list(prompt: str, category: str) -> None:
    assert BlocklistChecker.default().check(prompt, "") == Verdict(False, category)


@pytest.mark.parametrize("prompt", ["a child flying a kite", "a red fox in snow", "gorilla in the mist",
                                    "nude beach sunset painting"])
def test_default_list_allows_ordinary_prompts(prompt: str) -> None:
    assert BlocklistChecker.default().check(prompt, "").allowed


def test_bad_regex_is_reported() -> None:
    with pytest.raises(ValueError, match="not a valid regex"):
        BlocklistChecker(patterns=["(unclosed"])


def test_blocked_prompt_names_category_only() -> None:
    err = BlockedPrompt("graphic gore")
    assert isinstance(err, ImagineError)
    assert "graphic gore" in str(err) and err.category == "graphic gore"


def test_allow_all_images() -> None:
    assert AllowAllImages().check(object()) == "ok"
