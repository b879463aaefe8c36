"""Moderation through the service: strikes, cooldown, block, appeal and lift, request spacing,
per-scope image policy (detections injected at the detector seam) and the real NudeNet detector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigError, load_config
from bot.frontends.console import Console
from bot.safety import (
    AllowAllImages,
    BlockedPrompt,
    BlocklistChecker,
    Detection,
    ImageSettings,
    Moderation,
    ModerationError,
    ModerationSettings,
    NudityClassifier,
    Restricted,
    ScopePolicy,
    explicit_finding,
    scope_of,
)
from bot.service import Failed, Finished
from generation.core.errors import ImagineError
from storage import images, jobs, moderation as mod_store
from tests.fakes import FakePipeline
from tests.service_support import ADA, BOB, ROOT, Env, service_env

TIMEOUT = 60.0
GUILD = {"platform": "discord", "guild_id": "77", "channel_id": "5", "nsfw": True}
SFW_CHANNEL = {**GUILD, "channel_id": "6", "nsfw": False}
GROUP = {"platform": "telegram", "chat_id": -100123}


class FakeDetector:
    """Stands in for NudeNet's NudeDetector: returns the given boxes for every image."""

    def __init__(self, found: list[dict[str, Any]]) -> None:
        self.found = found
        self.calls = 0

    def detect(self, image: Any) -> list[dict[str, Any]]:
        self.calls += 1
        return list(self.found)


EXPOSED = [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.91, "box": [1, 2, 30, 40]},
           {"class": "FACE_FEMALE", "score": 0.8, "box": [0, 0, 9, 9]}]


@asynccontextmanager
async def moderated(tmp_path: Path, *, pipeline: Any = None, classifier: Any = None,
                    **settings: Any) -> AsyncIterator[Env]:
    async with service_env(tmp_path, pipeline or FakePipeline()) as env:
        env.service.moderation = Moderation(
            env.db, ModerationSettings(**{"request_interval_s": 0.0, **settings}),
            prompt_checker=BlocklistChecker.default(), image_classifier=classifier or AllowAllImages(),
            admins={ROOT.key}, clock=env.clock,
        )
        yield env


async def _deliver(env: Env, who: Any, text: str, target: dict[str, Any] | None = None) -> Any:
    ticket = await env.service.imagine(who, text, target=target)
    updates = [u async for u in ticket.updates()]
    return ticket, updates[-1]


# -- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize("target, scope", [
    ({"platform": "discord", "guild_id": "1", "channel_id": "2"}, "discord:guild:1"),
    ({"platform": "discord", "guild_id": None, "channel_id": "2"}, "discord:dm"),
    ({"platform": "telegram", "chat_id": -5}, "telegram:chat:-5"),
    ({"console": True}, "*"),
    (None, "*"),
])
def test_scope_of(target: dict[str, Any] | None, scope: str) -> None:
    assert scope_of(target) == scope


def test_explicit_finding_threshold_and_labels() -> None:
    settings = ImageSettings(explicit_threshold=0.5)
    assert explicit_finding(EXPOSED, settings).category == "explicit"
    assert explicit_finding(EXPOSED, settings).labels == ("FEMALE_BREAST_EXPOSED",)
    assert explicit_finding([Detection("FEMALE_BREAST_EXPOSED", 0.3)], settings).category is None
    assert explicit_finding([Detection("FEMALE_BREAST_COVERED", 0.99)], settings).category is None
    assert explicit_finding([Detection("FEET_EXPOSED", 0.9)], ImageSettings(("FEET_EXPOSED",))).category == "explicit"
    with pytest.raises(ValueError, match="explicit_threshold"):
        ImageSettings(explicit_threshold=0)


def test_settings_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[moderation]\ncooldown_after = 2\nexplicit_labels = ["ANUS_EXPOSED"]\n'
        '[moderation.policies."telegram:chat:5"]\nexplicit = "spoiler"\nallow = ["explicit sexual content"]\n',
        encoding="utf-8")
    settings = load_config(config, env={}).moderation
    assert settings.cooldown_after == 2
    assert settings.policies["telegram:chat:5"] == ScopePolicy("spoiler", ("explicit sexual content",))
    assert settings.image.explicit_labels == ("ANUS_EXPOSED",)
    config.write_text("[moderation]\ncooldown = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="moderation.cooldown"):
        load_config(config, env={})
    with pytest.raises(ValueError, match="explicit"):
        ModerationSettings(explicit="hide")
    with pytest.raises(ValueError, match="block_after"):
        ModerationSettings(block_after=-1)


# -- strikes, cooldown, block, appeal, lift ---------------------------------------------------


async def test_strikes_escalate_to_cooldown_then_block_and_an_appeal_lifts(tmp_path: Path) -> None:
    async with moderated(tmp_path, cooldown_after=2, cooldown_minutes=10, block_after=3) as env:
        service, moderation = env.service, env.service.moderation
        with pytest.raises(BlockedPrompt, match="cooldown") as first:
            await service.imagine(ADA, "a g0ry battlefield")
        assert first.value.category == "graphic gore"
        with pytest.raises(BlockedPrompt, match="cooldown for 10 min"):
            await service.imagine(ADA, "a fox in p.o.r.n style")
        with pytest.raises(Restricted) as cooling:
            await service.imagine(ADA, "a harmless fox")
        assert cooling.value.reason == "cooldown" and 0 < cooling.value.retry_after <= 600
        assert "/appeal" in str(cooling.value)
        assert await env.db.fetchval("SELECT count(*) FROM jobs") == 0
        assert (await service.quota(ADA)).used == 0 and env.pipeline.calls == 0

        env.clock.advance(minutes=11)
        _, done = await _deliver(env, ADA, "a harmless fox")
        assert isinstance(done, Finished)
        with pytest.raises(BlockedPrompt, match="now blocked"):
            await service.imagine(ADA, "decapitation")
        with pytest.raises(Restricted, match="blocked") as blocked:
            await service.imagine(ADA, "a harmless fox")
        assert blocked.value.reason == "blocked"
        await service.forget(ADA)  # forgetting your data does not forget your strikes
        with pytest.raises(Restricted):
            await service.reroll(ADA, "nope")

        standing = await moderation.user_standing(ROOT, ADA.key)
        assert standing.strikes == 3 and standing.blocked
        with pytest.raises(ModerationError, match="admins"):
            await moderation.appeals(ADA)
        appeal = await moderation.appeal(ADA, "I was quoting a film title")
        assert appeal.state == "blocked" and appeal.strikes == 3
        with pytest.raises(ModerationError, match="already waiting"):
            await moderation.appeal(ADA)
        assert [a.id for a in await moderation.appeals(ROOT)] == [appeal.id]

        lifted = await moderation.lift(ROOT, appeal.id)
        assert (lifted.strikes, lifted.blocked, lifted.cooldown_until, lifted.appeal) == (0, False, None, None)
        assert await moderation.appeals(ROOT) == []
        assert (await mod_store.get_appeal(env.db, appeal.id)).status == "lifted"
        with pytest.raises(ModerationError, match="already lifted"):
            await moderation.lift(ROOT, appeal.id)
        _, done = await _deliver(env, ADA, "a harmless fox --seed 9")
        assert isinstance(done, Finished)
        with pytest.raises(ModerationError, match="nothing|no strikes"):
            await moderation.appeal(ADA)


async def test_decisions_are_logged_without_prompt_text(tmp_path: Path) -> None:
    async with moderated(tmp_path, cooldown_after=2, block_after=0) as env:
        for prompt in ("secret gore words", "more secret gore"):
            with pytest.raises(BlockedPrompt):
                await env.service.imagine(BOB, prompt, target=GUILD)
        rows = await env.db.fetchall("SELECT * FROM moderation_log ORDER BY id")
        assert [(r["kind"], r["action"], r["rule"], r["strike"]) for r in rows] == [
            ("prompt", "blocked", "graphic gore [word:b475efdb]", 1),
            ("prompt", "blocked", "graphic gore [word:b475efdb]", 1),
            ("strike", "cooldown", "2 strikes", 0),
        ]
        assert {r["user_key"] for r in rows} == {BOB.key} and rows[0]["scope"] == "discord:guild:77"
        assert all(r["created_at"] for r in rows) and len(rows[0]["prompt_hash"]) == 16
        dump = " ".join(str(v) for r in rows for v in tuple(r))
        assert "secret" not in dump and "words" not in dump
        entries = await env.service.moderation.decisions(ROOT, BOB.key)
        assert [e.action for e in entries][:1] == ["cooldown"]


async def test_strikes_expire_after_the_window(tmp_path: Path) -> None:
    async with moderated(tmp_path, cooldown_after=2, strike_window_hours=1) as env:
        with pytest.raises(BlockedPrompt):
            await env.service.imagine(ADA, "gore")
        env.clock.advance(hours=2)
        with pytest.raises(BlockedPrompt) as err:
            await env.service.imagine(ADA, "gore")
        assert "cooldown for" not in str(err.value)
        assert (await env.service.moderation.standing(ADA.key)).strikes == 1


async def test_admins_get_no_strikes_and_can_lift_by_user(tmp_path: Path) -> None:
    async with moderated(tmp_path, cooldown_after=1, request_interval_s=60) as env:
        for _ in range(3):
            with pytest.raises(BlockedPrompt):
                await env.service.imagine(ROOT, "gore")
        assert (await env.service.moderation.standing(ROOT.key)).strikes == 0
        with pytest.raises(BlockedPrompt):
            await env.service.imagine(ADA, "gore")
        with pytest.raises(Restricted, match="cooldown"):
            await env.service.imagine(ADA, "a fox")
        await env.service.admin_block(ROOT, "telegram", ADA.user_id)
        standing = await env.service.moderation.lift(ROOT, ADA.key)
        assert standing.strikes == 0 and standing.cooldown_until is None
        env.clock.advance(seconds=60)  # refused attempts count for request spacing too
        _, done = await _deliver(env, ADA, "a fox")  # the admin block is lifted too
        assert isinstance(done, Finished)
        with pytest.raises(ModerationError, match="platform:user_id"):
            await env.service.moderation.lift(ROOT, "ada")


async def test_request_spacing(tmp_path: Path) -> None:
    async with moderated(tmp_path, request_interval_s=5) as env:
        first = await env.service.imagine(ADA, "a fox")
        with pytest.raises(Restricted, match="wait 5 s") as err:
            await env.service.imagine(ADA, "a fox again")
        assert err.value.reason == "too_soon"
        await env.service.imagine(BOB, "a fox")  # per user
        await env.service.imagine(ROOT, "a fox")
        await env.service.imagine(ROOT, "a fox")  # admins are exempt
        env.clock.advance(seconds=5)
        second = await env.service.imagine(ADA, "a fox again")
        await asyncio.wait_for(asyncio.gather(first.delivery(), second.delivery()), TIMEOUT)


# -- images: policy per scope, detections injected --------------------------------------------


async def test_explicit_images_are_blocked_never_stored_and_refunded(tmp_path: Path) -> None:
    detector = FakeDetector(EXPOSED)
    async with moderated(tmp_path, classifier=NudityClassifier(detector=detector), cooldown_after=5) as env:
        ticket, last = await _deliver(env, ADA, "a harmless fox --n 2", target=GUILD)
        assert isinstance(last, Failed) and "image safety filter" in last.message
        with pytest.raises(ImagineError):
            await ticket.delivery()
        row = await jobs.get(env.db, ticket.job_id)
        assert row.status == "failed" and row.refunded
        assert await images.images_for_job(env.db, ticket.job_id) == []
        assert env.store.files() == [] and (await env.service.quota(ADA)).used == 0
        assert detector.calls == 2
        assert (await env.service.job_delivery(ticket.job_id)).images == ()
        entry = (await env.service.moderation.decisions(ROOT, ADA.key))[0]
        assert (entry.kind, entry.action, entry.rule, entry.strike, entry.job_id) == \
            ("image", "blocked", "explicit", True, ticket.job_id)
        assert (await env.service.moderation.standing(ADA.key)).strikes == 1
        recovered = await env.service.recover()
        assert recovered.deliveries == ()


async def test_spoiler_policy_per_scope(tmp_path: Path) -> None:
    async with moderated(tmp_path, classifier=NudityClassifier(detector=FakeDetector(EXPOSED)),
                         strike_on_image_block=False,
                         policies={"telegram:chat:-100123": {"explicit": "spoiler"}}) as env:
        moderation = env.service.moderation
        with pytest.raises(ModerationError, match="admins"):
            await moderation.set_policy(BOB, "discord:guild:77", explicit="spoiler")
        # a server admin (the front end checked Manage Server) may set their own server's policy
        policy = await moderation.set_policy(BOB, "discord:guild:77", explicit="spoiler", scope_admin=True)
        assert policy == ScopePolicy("spoiler")

        _, nsfw = await _deliver(env, BOB, "a fox --n 2", target=GUILD)
        assert isinstance(nsfw, Finished) and [i.spoiler for i in nsfw.delivery.images] == [True, True]
        _, sfw = await _deliver(env, BOB, "a fox --n 2 --seed 4", target=SFW_CHANNEL)
        assert isinstance(sfw, Failed)  # the channel is not marked NSFW: no spoilers there
        _, group = await _deliver(env, ADA, "a fox", target=GROUP)  # configured policy
        assert isinstance(group, Finished) and group.delivery.images[0].spoiler
        _, elsewhere = await _deliver(env, ADA, "a fox", target={"platform": "telegram", "chat_id": 9})
        assert isinstance(elsewhere, Failed)  # default policy: block

        # the same seed in a stricter scope is not served from the spoilered copy
        seeded = nsfw.delivery.text
        _, again = await _deliver(env, BOB, seeded, target=SFW_CHANNEL)
        assert isinstance(again, Failed)

        await moderation.reset_policy(ROOT, "discord:guild:77")
        assert await moderation.policy_for("discord:guild:77") == ScopePolicy("block")
        actions = [e.action for e in await moderation.decisions(ROOT)]
        assert "spoiler" in actions and "policy" in actions and "policy reset" in actions


async def test_clean_images_pass_and_low_scores_are_ignored(tmp_path: Path) -> None:
    weak = [{"class": "FEMALE_GENITALIA_EXPOSED", "score": 0.3, "box": [0, 0, 1, 1]}]
    async with moderated(tmp_path, classifier=NudityClassifier(detector=FakeDetector(weak))) as env:
        _, done = await _deliver(env, ADA, "a fox", target=GUILD)
        assert isinstance(done, Finished) and not done.delivery.images[0].spoiler
        assert await env.db.fetchval("SELECT count(*) FROM moderation_log") == 0


async def test_prompt_categories_allowed_per_scope(tmp_path: Path) -> None:
    async with moderated(tmp_path) as env:
        moderation = env.service.moderation
        with pytest.raises(ModerationError, match="Unknown prompt category"):
            await moderation.set_policy(ROOT, "telegram:chat:-100123", allow=["smut"])
        await moderation.set_policy(ROOT, "telegram:chat:-100123", allow=["explicit sexual content"])
        ticket = await env.service.imagine(ADA, "p0rn", target=GROUP)
        await asyncio.wait_for(ticket.delivery(), TIMEOUT)
        with pytest.raises(BlockedPrompt):
            await env.service.imagine(ADA, "p0rn", target={"platform": "telegram", "chat_id": 1})
        with pytest.raises(BlockedPrompt, match="minors"):
            await env.service.imagine(ADA, "loli p0rn", target=GROUP)


# -- the real detector on generated images ----------------------------------------------------


async def test_real_nudenet_detector_runs_on_generated_images(tmp_path: Path) -> None:
    from generation.model.pipeline import ModelConfig, load_pipeline

    classifier = NudityClassifier()
    seen: list[list[Detection]] = []
    real_detect = classifier.detect

    def spy(image: Any) -> list[Detection]:
        found = real_detect(image)
        seen.append(found)
        return found

    classifier.detect = spy  # type: ignore[method-assign]
    tiny = load_pipeline(ModelConfig(name="tiny", device="cpu"))
    async with moderated(tmp_path, pipeline=tiny, classifier=classifier) as env:
        _, done = await _deliver(env, ADA, "a red fox in snow --n 2 --steps 1", target=GUILD)
        assert isinstance(done, Finished)
        assert [i.safety for i in done.delivery.images] == ["ok", "ok"]
    assert len(seen) == 2 and all(isinstance(found, list) for found in seen)
    assert classifier._detector is not None and type(classifier._detector).__name__ == "NudeDetector"


# -- console commands -------------------------------------------------------------------------


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines += [line for line in text.splitlines() if line]

    def flush(self) -> None:
        pass


async def test_console_appeal_and_admin_commands(tmp_path: Path) -> None:
    async with moderated(tmp_path, cooldown_after=1) as env:
        user_out, admin_out = _Out(), _Out()
        user = Console(env.service, who=ADA, output_dir=tmp_path / "out", out=user_out)  # type: ignore[arg-type]
        admin = Console(env.service, who=ROOT, output_dir=tmp_path / "out", out=admin_out)  # type: ignore[arg-type]
        await user.handle("/imagine gore")
        await user.handle("/imagine a fox")
        await user.handle("/appeal it was a typo")
        assert "blocked by the safety filter (graphic gore)" in user_out.lines[0]
        assert "cooldown" in user_out.lines[1] and user_out.lines[2].startswith("Appeal #1 filed")
        await user.handle("/appeals")
        assert user_out.lines[-1] == "Only the bot's admins can do that."
        await admin.handle("/appeals")
        assert "#1 telegram:1001" in admin_out.lines[-1] and "'it was a typo'" in admin_out.lines[-1]
        await admin.handle("/strikes telegram:1001")
        assert "1 strike(s)" in admin_out.lines[-1]
        await admin.handle("/lift 1")
        assert admin_out.lines[-1].startswith("Lifted telegram:1001")
        await admin.handle("/policy discord:guild:77 explicit=spoiler allow=explicit_sexual_content")
        assert admin_out.lines[-1] == ("Policy of discord:guild:77: explicit images spoiler; "
                                       "allowed prompt categories: explicit sexual content")
        await admin.handle("/modlog telegram:1001")
        assert any("admin lifted" in line for line in admin_out.lines)
