"""Safety v2 on the project's tables: every disguised prompt refused (in its category), every
innocent one allowed; plus the parts behind it (inflections, allowlist, tiers, languages, senses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.safety import Allowlist, BlocklistChecker, Verdict
from bot.safety.lexicon import HIGH, LOW, inflections, parse_entry

DATA = Path(__file__).parent / "data"
EXPLICIT = "explicit sexual content"
MINORS = "sexual content involving minors"
GORE = "graphic gore"


def _rows(name: str) -> list[list[str]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


DISGUISED = _rows("safety_disguised.tsv")
INNOCENT = _rows("safety_innocent.tsv")


@pytest.fixture(scope="module")
def default() -> BlocklistChecker:
    return BlocklistChecker.default()


def test_tables_are_big_enough_and_varied() -> None:
    assert len(DISGUISED) >= 200 and len(INNOCENT) >= 200
    assert len({family for family, _, _ in DISGUISED}) >= 15
    assert len({family for family, _ in INNOCENT}) >= 10
    assert any(family == "other languages" for family, _ in INNOCENT)


@pytest.mark.parametrize("family, category, prompt", DISGUISED, ids=[f"{r[0]}:{r[2]}" for r in DISGUISED])
def test_disguised_prompts_are_refused(default: BlocklistChecker, family: str, category: str, prompt: str) -> None:
    verdict = default.check(prompt)
    assert verdict == Verdict(False, category), (family, prompt, verdict)
    assert verdict.tier in (HIGH, LOW) and verdict.rule


@pytest.mark.parametrize("family, prompt", INNOCENT, ids=[f"{r[0]}:{r[1]}" for r in INNOCENT])
def test_innocent_prompts_are_allowed(default: BlocklistChecker, family: str, prompt: str) -> None:
    verdict = default.check(prompt)
    assert verdict.allowed, (family, prompt, verdict)


# -- the parts --------------------------------------------------------------------------------


def test_inflections_of_a_listed_word() -> None:
    assert {"sexy", "sexier", "sexiest", "sexes", "sexing"} <= inflections("sex")
    assert {"tit", "titty", "titties"} <= inflections("tits")  # singular of a listed plural
    assert {"nudes", "nudie", "nuding"} <= inflections("nude")
    assert {"cumming", "cums"} <= inflections("cum")
    assert "erotica" in inflections("erotic") and "nakedness" in inflections("naked")
    assert "titter" not in inflections("tits") and "cocker" not in inflections("cock")


def test_entry_flags_are_parsed_and_checked() -> None:
    entry = parse_entry("Cock | low noglue name lang=nl,de sense=rooster,hen", EXPLICIT)
    assert (entry.term, entry.tier, entry.glue, entry.name) == ("cock", LOW, False, True)
    assert entry.langs == {"nl", "de"} and entry.sense == {"rooster", "hen"}
    with pytest.raises(ValueError, match="unknown blocklist flag 'lwo'"):
        parse_entry("cock | lwo", EXPLICIT)


def test_stretching_needs_each_run_of_the_listed_form() -> None:
    checker = BlocklistChecker(["ass"], category="x", allow=())
    assert not checker.check("asssss").allowed
    assert checker.check("as good as it gets").allowed and checker.check("assassin").allowed


def test_glued_compound_splits_but_a_place_name_does_not(default: BlocklistChecker) -> None:
    assert default.check("nakedwomanonbeach").rule == "glued:naked"
    assert default.check("Scunthorpe").allowed and default.check("Middlesex").allowed
    assert default.check("sexagenarian grandpa").allowed  # "agen arian" are no common words


def test_split_chunks_rejoin_only_when_they_are_no_phrase(default: BlocklistChecker) -> None:
    assert default.check("por no").rule == "split:porno"
    assert default.check("a pen is on the desk").allowed  # "pen is" is a phrase people write


def test_reversed_words_unless_the_token_is_a_common_word(default: BlocklistChecker) -> None:
    assert default.check("nrop").rule == "reversed:porn"
    assert default.check("Lana Del Rey portrait").allowed  # "lana" reversed is listed, but a name


def test_allowlist_overrides_word_hits_only_where_it_matches() -> None:
    allow = Allowlist(["cum laude", "pussy willow"])
    assert allow.covered(["magna", "cum", "laude"]) == {1, 2}
    assert allow.covered(["cum", "shot"]) == set()
    checker = BlocklistChecker(["cum", "pussy"], category="x", allow=["cum laude", "pussy willow"])
    assert checker.check("Magna-Cum-Laude diploma").allowed
    assert not checker.check("cum laude and cum shot").allowed  # the second "cum" is not covered
    assert not BlocklistChecker(["cum"], category="x", allow=()).check("cum laude").allowed


def test_near_rule_needs_both_lists_and_respects_the_allowlist(default: BlocklistChecker) -> None:
    assert default.check("a naked child").category == MINORS
    assert default.check("sexy 15 yo").category == MINORS
    assert default.check("a 30 year old in a red dress").allowed
    assert default.check("a kid sees Mars with the naked eye").allowed
    custom = BlocklistChecker(patterns=["near: lamb / mint"], category="sauce", allow=())
    assert custom.check("lamb with mint").category == "sauce"
    assert custom.check("lamb with rosemary").allowed
    with pytest.raises(ValueError, match="two lists"):
        BlocklistChecker(patterns=["near: lamb"], category="sauce")


def test_tiers_high_for_unambiguous_low_for_words_with_innocent_readings(default: BlocklistChecker) -> None:
    assert default.check("porn").tier == HIGH and default.check("porn").strike
    low = default.check("a cock")
    assert (low.allowed, low.tier, low.strike) == (False, LOW, False)
    assert default.check("a cock crowing at dawn").allowed  # rooster sense nearby


def test_language_of_the_other_words_decides_for_short_shared_words(default: BlocklistChecker) -> None:
    assert default.check("sex katter sover i solen").allowed  # Swedish: six cats
    assert not default.check("sex scene in a bedroom").allowed
    assert default.check("cum să faci pâine acasă").allowed  # Romanian: how
    assert not default.check("cum on a bed").allowed


def test_proper_names_next_to_capitalized_words(default: BlocklistChecker) -> None:
    assert default.check("Dick Butkus in his jersey").allowed
    assert not default.check("a dick in his jersey").allowed
