"""Moderation on Telegram: the real PTB Application against FakeTelegram, a real service on SQLite,
the tiny pipeline, detections injected at the image-classifier seam (NudityClassifier's detector)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.safety import AllowAllImages, BlocklistChecker, Moderation, ModerationSettings, NudityClassifier
from bot.service import Who
from bot.frontends.telegram import callbacks
from storage import jobs
from bot.frontends.telegram.delivery import placeholder_png
from tests.fake_telegram import Call, FakeTelegram, make_chat, make_user
from tests.service_support import Env
from tests.telegram_support import callback_data, running

pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")

ALICE = make_user(1001, "Alice", "alice")
BOB = make_user(2002, "Bob", "bob")
CAROL = make_user(3003, "Carol")
ADMIN = make_user(9009, "Root", "root")
GROUP = make_chat(-1001234567890, "supergroup", "Imagine fans")
ALICE_WHO = Who("telegram", "1001", "Alice")
ADMINS = frozenset({"telegram:9009"})
GEN = 30.0  # bound for anything that waits on the pipeline
MEDIA = ("sendPhoto", "sendMediaGroup", "sendDocument", "editMessageMedia")


class FakeDetector:
    """Stands in for NudeNet's NudeDetector: an exposed breast in every image."""

    def detect(self, image: Any) -> list[dict[str, Any]]:
        return [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.91, "box": [1, 2, 30, 40]}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def moderation_with(classifier: Any, **settings: Any):
    def build(env: Env) -> Moderation:
        return Moderation(env.db, ModerationSettings(**{"request_interval_s": 0.0, **settings}),
                          prompt_checker=BlocklistChecker.default(), image_classifier=classifier,
                          admins=ADMINS, clock=env.clock)
    return build


def to(chat_id: int, *words: str):
    """A sendMessage/editMessageText to ``chat_id`` whose text has every word."""
    return lambda c: c.params.get("chat_id") == chat_id and all(w in (c.params.get("text") or "") for w in words)


async def reply(fake: FakeTelegram, text: str, user: dict[str, Any], chat: dict[str, Any] | None = None,
                *words: str) -> Call:
    """Push a command and wait for the bot's message in that chat (with ``words`` in it)."""
    mark = fake.mark()
    fake.push(fake.message_update(text, user, chat))
    chat_id = (chat or user)["id"]
    return await fake.wait_for_call("sendMessage", to(chat_id, *words), since=mark, timeout=GEN)


async def test_explicit_images_are_blocked_or_spoilered_by_the_groups_policy(
        tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake, service={"admins": ADMINS},
                       moderation=moderation_with(NudityClassifier(detector=FakeDetector()))) as r:
        # (a) default policy "block": the result never reaches Telegram, the quota is refunded
        fake.push(fake.message_update("/imagine a day at the beach --steps 1", ALICE, GROUP))
        final = await fake.wait_for_call("editMessageCaption", lambda c: "blocked" in (c.params.get("caption") or ""),
                                         timeout=GEN)
        assert final.params["chat_id"] == GROUP["id"]
        assert final.params["caption"].startswith("❌ An image was blocked by the image safety filter")
        assert "refunded" in final.params["caption"]
        # only the placeholder was ever shown: no image of the job reached Telegram
        assert [c.file("photo").data for c in fake.calls("sendPhoto")] == [placeholder_png()]
        assert not [c for m in MEDIA if m != "sendPhoto" for c in fake.calls(m)]
        history = await r.env.service.history(ALICE_WHO)
        assert [e.status for e in history.entries] == ["failed"]
        used, *_ = await r.env.service.quota(ALICE_WHO)
        assert used == 0

        # (d) a group member and a non-admin in private may not change the policy; anyone may see it
        refused = await reply(fake, "/admin policy explicit=spoiler", BOB, GROUP)
        assert refused.params["text"].startswith("Only the bot's admins, or a group's administrators")
        refused = await reply(fake, "/admin policy explicit=spoiler", ALICE)
        assert refused.params["text"].startswith("Only the bot's admins")
        shown = await reply(fake, "/admin policy", BOB, GROUP)
        assert "explicit images are blocked" in shown.params["text"]
        scope = f"telegram:chat:{GROUP['id']}"
        assert (await r.env.service.moderation.policy_for(scope)).explicit == "block"

        # (b) the group's administrator (getChatMember) switches it to spoilers: the photo is sent
        fake.set_member(GROUP, CAROL, "administrator")
        saved = await reply(fake, "/admin policy explicit=spoiler", CAROL, GROUP)
        assert saved.params["text"].startswith(f"Saved. Policy of this chat ({scope}): explicit images are sent "
                                               "behind a spoiler")
        assert fake.calls("getChatMember")[-1].params["user_id"] == CAROL["id"]
        mark = fake.mark()
        fake.push(fake.message_update("/imagine a day at the beach --steps 1 --seed 3", ALICE, GROUP))
        photo = await fake.wait_for_call("editMessageMedia", since=mark, timeout=GEN)
        assert photo.params["chat_id"] == GROUP["id"] and photo.params["media"]["has_spoiler"] is True

        # the bot's admin may reset it from the group, without being a group admin
        reset = await reply(fake, "/admin policy reset", ADMIN, GROUP)
        assert "explicit images are blocked" in reset.params["text"]


async def test_strikes_cooldown_appeal_button_and_lift(tmp_path: Path, tiny, fake: FakeTelegram) -> None:
    async with running(tmp_path, tiny, fake, service={"admins": ADMINS},
                       moderation=moderation_with(AllowAllImages(), cooldown_after=3)) as r:
        commands = fake.calls("setMyCommands")[0].params["commands"]
        assert "appeal" in {c["command"] for c in commands}
        assert "/appeal" in (await reply(fake, "/help", ALICE)).params["text"]
        nothing = await reply(fake, "/appeal", ALICE)
        assert nothing.params["text"] == "You have no strikes, cooldown or block to appeal."

        for n in range(3):
            blocked = await reply(fake, f"/imagine porn number {n}", ALICE)
            assert "blocked by the safety filter (explicit sexual content)" in blocked.params["text"]
        assert "cooldown" in blocked.params["text"]

        refused = await reply(fake, "/imagine a calm lake --steps 1", ALICE)
        assert "cooldown" in refused.params["text"]
        assert callback_data(refused) == ["a:1001"]
        assert all(len(d.encode()) <= callbacks.MAX_CALLBACK_BYTES for d in callback_data(refused))

        # only Alice may press her button; pressing it files the appeal and tells the admins
        mark = fake.mark()
        fake.push(fake.callback_query_update("a:1001", refused.result, BOB))
        answer = await fake.wait_for_call("answerCallbackQuery", since=mark)
        assert answer.params["text"].startswith("This button is not for you")
        mark = fake.mark()
        fake.push(fake.callback_query_update("a:1001", refused.result, ALICE))
        answer = await fake.wait_for_call("answerCallbackQuery", since=mark)
        assert answer.params["text"] == "Appeal #1 filed."
        edited = await fake.wait_for_call("editMessageText", since=mark)
        assert "cooldown" in edited.params["text"] and "Appeal #1 filed" in edited.params["text"]
        await fake.wait_for_call("sendMessage", to(ADMIN["id"], "New appeal #1", "telegram:1001"), since=mark)
        again = await reply(fake, "/appeal please", ALICE)
        assert again.params["text"] == "Your appeal #1 is already waiting for an admin."

        # the admin reviews and lifts it; a non-admin cannot
        denied = await reply(fake, "/admin appeals", ALICE)
        assert denied.params["text"] == "Only the bot's admins can do that."
        listed = await reply(fake, "/admin appeals", ADMIN)
        assert "#1 telegram:1001" in listed.params["text"] and "cooldown (3 strike(s))" in listed.params["text"]
        strikes = await reply(fake, "/admin strikes 1001", ADMIN)
        assert strikes.params["text"].startswith("telegram:1001: 3 strike(s), cooldown until")
        mark = fake.mark()
        lifted = await reply(fake, "/admin lift 1", ADMIN)
        assert lifted.params["text"] == "Lifted telegram:1001: no block, no cooldown, strikes reset."
        await fake.wait_for_call("sendMessage", to(ALICE["id"], "lifted"), since=mark)
        assert not await r.env.service.moderation.appeals(Who("telegram", "9009", "Root"))
        modlog = await reply(fake, "/admin modlog 1001", ALICE)
        assert modlog.params["text"] == "Only the bot's admins can do that."
        modlog = await reply(fake, "/admin modlog", ADMIN)
        assert "admin lifted" in modlog.params["text"] and "prompt blocked" in modlog.params["text"]

        # Alice can make images again
        mark = fake.mark()
        fake.push(fake.message_update("/imagine a calm lake --steps 1", ALICE))
        photo = await fake.wait_for_call("editMessageMedia", since=mark, timeout=GEN)
        assert photo.params["chat_id"] == ALICE["id"]
        job = callback_data(photo)[0].removeprefix("r:")
        assert (await jobs.get(r.env.db, job)) is not None
