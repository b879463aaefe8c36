"""Prompt safety: normalization against obfuscation, whole-word blocklist, regexes, categories."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.safety import (
    DEFAULT_BLOCKLIST,
    AllowAllImages,
    AllowAllPrompts,
    BlockedPrompt,
    BlocklistChecker,
    Verdict,
    load_blocklist,
    skeleton,
    views,
)
from generation.core.errors import ImagineError

EXPLICIT = "explicit sexual content"
GORE = "graphic gore"
MINORS = "sexual content involving minors"


@pytest.fixture(scope="module")
def default() -> BlocklistChecker:
    return BlocklistChecker.default()


# -- normalization ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("ＰＯＲＮ", "porn"),                      # fullwidth
    ("p\u200bo\u200cr\u200dn\u2060", "porn"),  # zero-width space/non-joiner/joiner, word joiner
    ("por\u00adn", "porn"),                    # soft hyphen
    ("\u0440\u043ern", "porn"),                # Cyrillic er and o
    ("g\u03bfre", "gore"),                     # Greek omicron
    ("𝐠𝐨𝐫𝐞", "gore"),                          # mathematical bold
    ("göré", "gore"),                          # diacritics
    ("g\u0336o\u0336r\u0336e\u0336", "gore"),  # combining strike-through
    ("GoRe", "gore"),
    ("ΝUDΕ", "nude"),                          # Greek capitals: mapped as written, then casefolded
    ("\u041d\u0410\u041a\u0415D", "haked"),         # Cyrillic Н looks like H (UTS #39), not like N
    ("ɴᴜᴅᴇ", "nude"),                          # small capitals
    ("🇳🇺🇩🇪", "nude"),                          # regional indicators
    ("🅽🆄🅳🅴", "nude"),                          # negative squared letters
    ("%6E%75%64%65", "nude"),                  # percent-encoding
    ("&#110;ude", "nude"),                     # HTML character reference
    ("nu**d**e", "nude"),                      # markdown inside a word
    ("nu🍑de", "nude"),                        # an emoji inside a word
    ("a 🍑 peach", "a   peach"),              # an emoji between words stays a gap
])
def test_skeleton(text: str, expected: str) -> None:
    assert skeleton(text) == expected


def test_views_join_spaced_letters_and_undo_leetspeak() -> None:
    assert [v.text for v in views("g.o.r.e")] == ["gore"]
    assert any(v.text == "sex" for v in views("$3x"))
    assert any(v.text == "loli" for v in views("l0l1"))
    assert views("a 1024x768 photo")[0].text == "a 1024x768 photo"  # as written comes first


@pytest.mark.parametrize("code", ["Galaxy A55", "an RTX4090", "a 4K photo", "BMW X5", "1080p"])
def test_product_codes_are_not_leetspeak(code: str) -> None:
    assert [v.text for v in views(code)] == [skeleton(code)]


# -- obfuscated forms are blocked -------------------------------------------------------------


@pytest.mark.parametrize("prompt, category", [
    ("a gory battlefield", GORE),
    ("ｇｏｒｅ everywhere", GORE),                    # fullwidth
    ("g\u200bo\u200br\u200be", GORE),                 # zero-width
    ("\u0440\u043ern star", EXPLICIT),                # homoglyphs: Cyrillic р, о
    ("ｐ０ｒｎ", EXPLICIT),                            # fullwidth + leetspeak
    ("p0rn", EXPLICIT),                               # leetspeak
    ("g0r3 scene", GORE),
    ("$ex scene", EXPLICIT),
    ("l0l1 character", MINORS),
    ("|0|i character", MINORS),
    ("@$$ shot", EXPLICIT),
    ("gooooore", GORE),                               # stretched
    ("pooorrrnnn", EXPLICIT),
    ("asssss", EXPLICIT),
    ("g o r e", GORE),                                # spaced out
    ("a p o r n scene", EXPLICIT),
    ("g.o.r.e", GORE),
    ("g-o-o-r-e", GORE),
    ("p_0_r_n", EXPLICIT),
    ("c * o * c * k", EXPLICIT),
    ("Ｇ\u200b0\u200bＲ\u200b3", GORE),               # everything at once
    ("𝐩𝐨𝐫𝐧", EXPLICIT),
    ("pörñ", EXPLICIT),
    ("Decapitated knight", GORE),
    ("naked child on a beach", MINORS),
    ("12yo nude", MINORS),
    ("nude 8 year old", MINORS),
    ("a loli character", MINORS),
    ("rule 34 of a cartoon", EXPLICIT),
])
def test_obfuscated_forms_are_blocked(default: BlocklistChecker, prompt: str, category: str) -> None:
    verdict = default.check(prompt, "")
    assert verdict == Verdict(False, category), prompt


@pytest.mark.parametrize("prompt", [
    "Scunthorpe town centre at dusk",
    "assassin's creed cosplay",
    "a cocktail on a bar",
    "a peacock in a garden",
    "cockpit of a plane",
    "a class of bass players",
    "as good as it gets",
    "a child flying a kite",
    "a red fox in snow",
    "gorilla in the mist",
    "Sussex countryside",
    "analysis of a cucumber",
    "Dickens novel illustration",
    "a grapefruit, 4k, 1024x768",
    "therapist's office",
    "Essex, Middlesex and Wessex",
    "skyscraper at night",
])
def test_innocent_prompts_pass(default: BlocklistChecker, prompt: str) -> None:
    assert default.check(prompt, "").allowed, prompt


# -- the checker ------------------------------------------------------------------------------


def test_whole_words_any_case() -> None:
    checker = BlocklistChecker(["badword", "two words"], category="custom")
    assert checker.check("a BadWord here", "") == Verdict(False, "custom")
    assert checker.check("badwords are blocked as a plural", "") == Verdict(False, "custom")
    assert checker.check("notbadword", "") == Verdict(False, "custom")  # glued: "not badword"
    assert BlocklistChecker(["cock"], category="custom").check("a cocktail", "").allowed  # a word of its own
    assert checker.check("Two   Words together", "") == Verdict(False, "custom")
    assert checker.check("two-words", "") == Verdict(False, "custom")
    assert checker.check("twowords", "") == Verdict(False, "custom")  # glued multi-word entries too


def test_patterns_and_categories() -> None:
    checker = BlocklistChecker(patterns=[r"\bfoo\d+\b"], category="numbers",
                               categories={"colours": (["magenta"], [])})
    assert checker.check("foo42 bar", "") == Verdict(False, "numbers")
    assert checker.check("a magenta sky", "") == Verdict(False, "colours")
    assert checker.check("a m@g3nta sky", "") == Verdict(False, "colours")
    assert checker.check("foo bar", "").allowed
    assert checker.categories == ("numbers", "colours")


def test_negative_prompt_is_checked_only_when_asked_and_never_for_a_strike() -> None:
    strict = BlocklistChecker.default(check_negative=True)
    verdict = strict.check("a battle scene", "g0re")
    assert verdict == Verdict(False, GORE) and verdict.tier == "low"  # refused, no strike
    lenient = BlocklistChecker.default(check_negative=False)
    assert lenient.check("a battle scene", "gore").allowed
    assert lenient.check("a portrait", "nsfw, nude, naked").allowed


def test_allowed_categories_are_skipped(default: BlocklistChecker) -> None:
    assert default.check("porn", "", allow=frozenset({EXPLICIT})).allowed
    assert not default.check("loli porn", "", allow=frozenset({EXPLICIT})).allowed
    assert AllowAllPrompts().check("gore", "", allow=frozenset()).allowed


def test_blocklist_file(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("# mine\n[fruit]\nbanana\nre: \\bapple ?pie\\b\n\n[veg]\nleek\n", encoding="utf-8")
    assert load_blocklist(path) == {"fruit": (("banana",), (r"\bapple ?pie\b",)), "veg": (("leek",), ())}
    checker = BlocklistChecker.from_file(path)
    assert checker.check("b4n4n4 split", "") == Verdict(False, "fruit")
    assert checker.check("an applepie", "") == Verdict(False, "fruit")
    assert checker.check("l e e k soup", "") == Verdict(False, "veg")
    (tmp_path / "bad.txt").write_text("banana\n", encoding="utf-8")
    with pytest.raises(ValueError, match="before any"):
        load_blocklist(tmp_path / "bad.txt")


def test_default_list_is_the_shipped_file() -> None:
    assert set(DEFAULT_BLOCKLIST) == {MINORS, EXPLICIT, GORE}


def test_bad_regex_is_reported() -> None:
    with pytest.raises(ValueError, match="not a valid regex"):
        BlocklistChecker(patterns=["(unclosed"])


def test_blocked_prompt_names_category_only() -> None:
    err = BlockedPrompt("graphic gore", "One more and you get a cooldown.")
    assert isinstance(err, ImagineError)
    assert "graphic gore" in str(err) and err.category == "graphic gore"
    assert str(err).endswith("One more and you get a cooldown.")


def test_allow_all_images() -> None:
    assert AllowAllImages().check(object()) == "ok"
