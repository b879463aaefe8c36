"""Feedback comments beside ratings: the service rules, Discord's 💬 modal and Telegram's reply
through the real clients against the fakes, the API's rating body, stats, /export and /forget."""

from __future__ import annotations

import asyncio
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bot.__main__ import main
from bot.frontends.common import stats_lines
from bot.service import Who
from bot.service.history import BlockedComment
from generation.core.errors import InvalidRequest
from storage import images, ratings, users
from tests.fake_discord import FakeDiscord, fake_discord_server
from tests.fake_telegram import FakeTelegram, make_user
from tests.fakes import FakePipeline
from tests.service_support import ADA, BOB, ROOT, service_env
from tests.telegram_support import running as telegram_running
from tests.telegram_support import wait_until
from tests.web_support import auth, key_for, web_env

TIMEOUT = 30.0
pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")


async def _made(env: Any, who: Who, text: str) -> tuple[str, list[int]]:
    ticket = await env.service.imagine(who, text)
    await asyncio.wait_for(ticket.delivery(), TIMEOUT)
    return ticket.job_id, [i.id for i in await images.images_for_job(env.db, ticket.job_id)]


async def _comment_of(env: Any, who: Who, image_id: int) -> str | None:
    user = await users.get_by_platform(env.db, who.platform, who.user_id)
    row = await ratings.get(env.db, image_id, user.id) if user else None
    return row.comment if row else None


async def test_a_comment_needs_a_rating_passes_the_filter_and_is_shown_exported_and_forgotten(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        job, (first, second) = await _made(env, ADA, "a fox --n 2")
        with pytest.raises(InvalidRequest, match="Rate the image first"):
            await env.service.comment(ADA, first, "lovely")
        await env.service.rate(ADA, first, 4)
        with pytest.raises(InvalidRequest, match="empty"):
            await env.service.comment(ADA, first, "   ")
        with pytest.raises(InvalidRequest, match="the limit is 500"):
            await env.service.comment(ADA, first, "x" * 501)
        with pytest.raises(BlockedComment, match="safety filter"):
            await env.service.comment(ADA, first, "make it more GORY")
        assert await _comment_of(env, ADA, first) is None  # nothing refused is kept

        saved = await env.service.comment(ADA, first, "  the  fur is\nlovely ")
        assert saved.comment == "the fur is lovely" and saved.stars == 4
        # a job-wide comment lands only where the user rated; re-rating keeps the words
        assert [r.image_id for r in await env.service.comment_job(ADA, job, "second thoughts")] == [first]
        await env.service.rate(ADA, first, 2)
        assert await _comment_of(env, ADA, first) == "second thoughts"
        assert await _comment_of(env, ADA, second) is None
        # someone else's rating of the same (shared) image keeps its own comment
        env.clock.advance(minutes=1)
        await env.service.share(ADA, str(second))
        await env.service.rate(BOB, second, 5)
        await env.service.comment(BOB, second, "best one")

        stats = await env.service.admin_stats(ROOT)
        assert stats["comments"][0].endswith("“best one”") and stats["comments"][0].startswith("5★ ")
        assert any("“second thoughts”" in c and c.startswith("2★") for c in stats["comments"])
        assert "1 comment" in stats["ratings"]["style"][0] or "2 comments" in stats["ratings"]["style"][0]
        lines = stats_lines(stats)
        assert any(line.startswith("comments (newest first): 5★") for line in lines)

        # imagine-bot stats prints them beside the ratings
        data = tmp_path / "cli"
        data.mkdir()
        await env.db.execute("PRAGMA wal_checkpoint(FULL)")
        (data / "imagine.db").write_bytes((tmp_path / "bot.db").read_bytes())
        config = tmp_path / "c.toml"
        config.write_text(f'[storage]\ndata_dir = "{data}"\n')
        assert await asyncio.to_thread(main, ["stats", "--config", str(config), "--by", "model"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[1].endswith("2 comments") and out[2] == "comments (newest first):"
        assert out[3].endswith("“best one”") and out[4].endswith("“second thoughts”")

        archive = await env.service.export(ADA)
        with zipfile.ZipFile(archive) as zipped:
            exported = json.loads(zipped.read("export.json"))
        assert [(r["stars"], r["comment"]) for r in exported["ratings"]] == [(2, "second thoughts")]

        await env.service.forget(ADA)
        assert await env.db.fetchval("SELECT count(*) FROM ratings WHERE comment = 'second thoughts'") == 0
        assert [c for c in (await env.service.admin_stats(ROOT))["comments"] if "second thoughts" in c] == []


async def test_the_api_takes_a_comment_with_the_rating(tmp_path: Path) -> None:
    async with web_env(tmp_path) as web:
        h = auth(await key_for(web.env, ADA))
        job, (image_id,) = await _made(web.env, ADA, "an owl")
        r = await web.client.post(f"/v1/images/{job}-1/rating", json={"stars": 3, "comment": "too dark"}, headers=h)
        assert r.status_code == 200 and r.json() == {"image": f"{job}-1", "stars": 3, "comment": "too dark"}
        assert await _comment_of(web.env, ADA, image_id) == "too dark"
        r = await web.client.post(f"/v1/images/{job}-1/rating", json={"stars": 5, "comment": "so GORY"}, headers=h)
        assert r.status_code >= 400 and "safety filter" in r.text
        row = await ratings.get(web.env.db, image_id, (await users.get_by_platform(web.env.db, "telegram", "1001")).id)
        assert (row.stars, row.comment) == (3, "too dark")  # a refused comment changes nothing
        r = await web.client.post(f"/v1/images/{job}-1/rating", json={"stars": 5, "comment": ""}, headers=h)
        assert r.status_code == 422


# -- Discord: 💬 opens a modal ------------------------------------------------------------------


async def test_discord_comment_button_opens_a_modal_and_keeps_the_words(tmp_path: Path, tiny: Any) -> None:
    from bot.frontends.discord import DiscordFrontEnd, DiscordSettings
    from tests.test_discord import callback, custom_ids, eventually, result_of

    async with fake_discord_server() as fake, service_env(tmp_path, tiny) as env:
        front = DiscordFrontEnd(env.service, DiscordSettings("fake-token", guild_ready_timeout=0.05,
                                                             progress_edit_interval=0.05))
        await asyncio.wait_for(front.start(timeout=10), 15)
        try:
            inter = await fake.send_interaction(fake.slash("imagine", {"prompt": "a lighthouse --n 2 --steps 1"}))
            _, grid = await result_of(fake, inter)
            job = custom_ids(grid)[0][0].split(":")[2]
            assert f"imagine:comment:{job}" in custom_ids(grid)[2]
            me = Who("discord", str(fake.user["id"]))

            # not rated yet: the hint, not the form
            early = await fake.send_interaction(fake.button(f"imagine:comment:{job}", grid))
            answer = await fake.wait_for_request("POST", callback(early), 5)
            assert answer.json["type"] == 4 and answer.json["data"]["flags"] == 64
            assert "Rate it first" in answer.json["data"]["content"]

            await fake.add_reaction("4️⃣", grid)
            ids = [i.id for i in await images.images_for_job(env.db, job)]
            assert await eventually(lambda: _rated(env, me, ids))
            click = await fake.send_interaction(fake.button(f"imagine:comment:{job}", grid))
            opened = await fake.wait_for_request("POST", callback(click), 5)
            assert opened.json["type"] == 9  # MODAL
            form = opened.json["data"]
            assert form["custom_id"] == f"imagine:commentform:{job}:a"
            (field,) = form["components"]
            assert field["type"] == 18 and field["component"]["custom_id"] == "comment"
            assert field["component"]["max_length"] == 500

            submit = await fake.send_interaction(fake.modal_submit(form["custom_id"], {"comment": "nice light, odd sky"},
                                                                   message=grid))
            thanks = await fake.wait_for_request("POST", callback(submit), 5)
            assert thanks.json["data"]["flags"] == 64 and "2 images" in thanks.json["data"]["content"]
            assert [await _comment_of(env, me, i) for i in ids] == ["nice light, odd sky"] * 2

            # refused words: told why, nothing kept
            click = await fake.send_interaction(fake.button(f"imagine:comment:{job}", grid))
            await fake.wait_for_request("POST", callback(click), 5)
            bad = await fake.send_interaction(fake.modal_submit(form["custom_id"], {"comment": "GORY please"},
                                                                message=grid))
            refused = await fake.wait_for_request("POST", callback(bad), 5)
            assert "safety filter" in refused.json["data"]["content"] and refused.json["data"]["flags"] == 64
            assert [await _comment_of(env, me, i) for i in ids] == ["nice light, odd sky"] * 2
        finally:
            await asyncio.wait_for(front.close(), 15)
        assert fake.unhandled == []


async def _rated(env: Any, who: Who, ids: list[int]) -> bool:
    user = await users.get_by_platform(env.db, who.platform, who.user_id)
    return user is not None and all([await ratings.get(env.db, i, user.id) for i in ids])


# -- Telegram: a reply to the result -------------------------------------------------------------


async def test_telegram_reply_after_rating_is_a_comment(tmp_path: Path, tiny: Any) -> None:
    alice = make_user(1001, "Alice", "alice")
    me = Who("telegram", "1001")
    async with FakeTelegram() as fake, telegram_running(tmp_path, tiny, fake) as r:
        fake.push(fake.message_update("/imagine a red fox --steps 1 --seed 3", alice))
        result = await fake.wait_for_call("editMessageMedia", timeout=TIMEOUT)
        message = result.result
        job = next(d for row in result.params["reply_markup"]["inline_keyboard"] for b in row
                   if (d := b.get("callback_data", "")).startswith("r:"))[2:]
        (image_id,) = [i.id for i in await images.images_for_job(r.env.db, job)]

        mark = fake.mark()
        fake.push(fake.message_update("lovely colours", alice, reply_to=message))
        hint = await fake.wait_for_call("sendMessage", since=mark)
        assert "Rate the image first" in hint.params["text"]
        assert await _comment_of(r.env, me, image_id) is None

        fake.push(fake.message_reaction_update(message["chat"], message["message_id"], new_reaction=["👍"]))
        await wait_until(lambda: _rated(r.env, me, [image_id]))
        mark = fake.mark()
        fake.push(fake.message_update("lovely colours", alice, reply_to=message))
        thanks = await fake.wait_for_call("sendMessage", since=mark)
        assert thanks.params["text"].startswith("💬 Thanks")
        assert await _comment_of(r.env, me, image_id) == "lovely colours"

        # a reply to a message that shows no job is conversation: no answer, nothing stored
        mark = fake.mark()
        other = fake.message_update("hello", alice)["message"]
        fake.push(fake.message_update("just chatting", alice, reply_to=other))
        fake.push(fake.message_update("/quota", alice))  # a marker: handled after the reply
        await fake.wait_for_call("sendMessage", since=mark)
        assert [c.params["text"] for c in fake.calls("sendMessage", since=mark) if "Thanks" in c.params["text"]
                or "Rate" in c.params["text"]] == []
        assert await _comment_of(r.env, me, image_id) == "lovely colours"
