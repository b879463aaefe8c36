"""Safety v2 in Moderation: tiers decide strikes, the log names the rule, warn mode, config keys,
and the ONNX second opinion (a real tiny ONNX model built here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import prompt_checker
from bot.config import ConfigError, load_config
from bot.safety import (
    BlockedPrompt,
    BlocklistChecker,
    Moderation,
    ModerationSettings,
    OnnxTextClassifier,
    SecondOpinion,
    Verdict,
    rule_tag,
)
from bot.safety.lexicon import LOW
from tests.fakes import FakePipeline
from tests.service_support import ADA, ROOT, service_env


def _settings(**settings: object) -> ModerationSettings:
    return ModerationSettings(request_interval_s=0.0, cooldown_after=2, cooldown_minutes=10, block_after=0,
                              **settings)  # type: ignore[arg-type]


async def test_low_confidence_refusal_gives_no_strike_and_high_does(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        moderation = Moderation(env.db, _settings(),
                                prompt_checker=BlocklistChecker.default(), admins={ROOT.key}, clock=env.clock)
        for _ in range(3):  # "cock" alone is low confidence (a rooster is one too)
            with pytest.raises(BlockedPrompt, match="did not count as a strike") as low:
                await moderation.check_prompt(ADA, "a cock")
            assert low.value.category == "explicit sexual content"
        standing = await moderation.standing(ADA.key)
        assert standing.strikes == 0 and standing.cooldown_until is None
        with pytest.raises(BlockedPrompt) as high:
            await moderation.check_prompt(ADA, "p0rn")
        assert "did not count" not in str(high.value)
        assert (await moderation.standing(ADA.key)).strikes == 1
        rows = await env.db.fetchall("SELECT action, rule, strike FROM moderation_log ORDER BY id")
        assert [tuple(r) for r in rows] == [
            ("refused", f"explicit sexual content [{rule_tag('word:cock')}]", 0),
        ] * 3 + [("blocked", f"explicit sexual content [{rule_tag('word:porn')}]", 1)]
        assert "cock" not in " ".join(r["rule"] for r in rows)  # the log never repeats the prompt's words
        assert BlocklistChecker.default().explain(rows[0]["rule"].split("[")[1].rstrip("]")) == ["word:cock"]
        verdict = await moderation.check_prompt(ADA, "a cock crowing at dawn")
        assert verdict.allowed


async def test_warn_mode_allows_a_low_confidence_match_and_logs_it(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        moderation = Moderation(env.db, _settings(low_confidence="warn"),
                                prompt_checker=BlocklistChecker.default(), clock=env.clock)
        verdict = await moderation.check_prompt(ADA, "a pair of tits")  # no bird words near: low confidence
        assert (verdict.allowed, verdict.tier) == (False, LOW)
        rows = await env.db.fetchall("SELECT action, rule, strike FROM moderation_log")
        assert [tuple(r) for r in rows] == [("warned", f"explicit sexual content [{rule_tag('word:tits')}]", 0)]
        with pytest.raises(BlockedPrompt):
            await moderation.check_prompt(ADA, "hentai")
    with pytest.raises(ValueError, match="low_confidence"):
        ModerationSettings(low_confidence="ignore")


def test_safety_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[safety]\nallow = ["Bingo Porn Hall"]\nclassifier_threshold = 0.9\n', encoding="utf-8")
    config = load_config(path, env={})
    assert config.safety.allow == ("Bingo Porn Hall",) and config.safety.classifier_file is None
    checker = prompt_checker(config)
    assert isinstance(checker, BlocklistChecker)
    assert checker.check("the bingo porn hall at night").allowed and not checker.check("porn").allowed
    assert checker.check("Al Gore on stage").allowed  # the shipped allowlist still applies
    path.write_text('[safety]\nallow = "porn"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="safety.allow must be a list"):
        load_config(path, env={})


def _tiny_onnx_model(path: Path) -> None:
    """A string → score model: looks the prompt up (ai.onnx.ml LabelEncoder), 0.5 when unknown."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("LabelEncoder", ["text"], ["score"], domain="ai.onnx.ml",
                          keys_strings=["a woman wearing nothing", "a peaceful lake"],
                          values_floats=[0.97, 0.02], default_float=0.5)],
        "tiny", [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_onnx_second_opinion_refuses_what_the_blocklist_let_through(tmp_path: Path) -> None:
    path = tmp_path / "prompt.onnx"
    _tiny_onnx_model(path)
    classifier = OnnxTextClassifier(path)
    assert classifier.score("a woman wearing nothing") == pytest.approx(0.97)
    assert classifier.score("a peaceful lake") == pytest.approx(0.02)
    checker = SecondOpinion(BlocklistChecker.default(), classifier, threshold=0.8)
    verdict = checker.check("a woman wearing nothing")
    assert verdict == Verdict(False, "explicit sexual content")
    assert (verdict.tier, verdict.rule, verdict.strike) == (LOW, "classifier:0.97", False)
    assert checker.check("a peaceful lake").allowed
    assert checker.check("an unknown prompt").allowed  # 0.5 is below the threshold
    assert checker.check("porn").rule == "word:porn"  # the blocklist speaks first
    assert checker.check("a woman wearing nothing", allow=frozenset({"explicit sexual content"})).allowed
    assert checker.categories == BlocklistChecker.default().categories
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxTextClassifier(tmp_path / "missing.onnx")


def test_config_turns_the_classifier_on(tmp_path: Path) -> None:
    model = tmp_path / "prompt.onnx"
    _tiny_onnx_model(model)
    path = tmp_path / "config.toml"
    path.write_text(f'[safety]\nclassifier_file = "{model}"\nclassifier_threshold = 0.9\n', encoding="utf-8")
    checker = prompt_checker(load_config(path, env={}))
    assert isinstance(checker, SecondOpinion) and checker.threshold == 0.9
    assert not checker.check("a woman wearing nothing").allowed


def test_a_broken_classifier_leaves_the_blocklist_verdict() -> None:
    class Broken:
        def score(self, text: str) -> float:
            raise RuntimeError("model crashed")

    checker = SecondOpinion(BlocklistChecker.default(), Broken())
    assert checker.check("a red fox").allowed and not checker.check("hentai").allowed
