"""One account across platforms: a /link code from one platform entered on another."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bot.safety import Restricted
from bot.service import NotAllowed, NotFound, QuotaExceeded, Who
from generation.core.errors import InvalidRequest
from storage import moderation
from tests.fakes import FakePipeline
from tests.service_support import ADA, BOB, ROOT, service_env

CAROL = Who("console", "carol", "carol")


async def _make(env, who: Who, prompt: str, **options) -> str:  # type: ignore[no-untyped-def]
    ticket = await env.service.imagine(who, prompt, **options)
    return (await ticket.delivery()).job_id


async def test_a_telegram_code_entered_on_discord_merges_quota_history_and_keys(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline(), daily_quota=5) as env:
        svc = env.service
        ada_job = await _make(env, ADA, "ada's fox", count=2)
        bob_job = await _make(env, BOB, "bob's owl")
        await svc.settings(ADA, aspect="16:9")
        bob_key, _ = await svc.create_api_key(BOB)
        delivery = await svc.job_delivery(BOB, bob_job)
        await svc.rate(BOB, delivery.images[0].image_id, 5)

        code = await svc.link_code(ADA)  # on Telegram
        assert len(code) == 8
        assert await svc.link(BOB, code.lower()) == ["telegram:1001", "discord:2002"]  # on Discord

        for who in (ADA, BOB):
            assert (await svc.quota(who)).used == 3
            view = await svc.history(who)
            assert {e.job_id for e in view.entries} == {ada_job, bob_job}
            assert (await svc.settings(who))["aspect"] == "16:9"
            assert sorted(await svc.linked(who)) == ["discord:2002", "telegram:1001"]
        mine = [i for e in (await svc.history(ADA)).entries for i in e.images if e.job_id == bob_job]
        assert mine[0].my_stars == 5  # Bob's rating is the account's
        found = await svc.authenticate(bob_key)
        assert found is not None and found[0].key == ADA.key  # Bob's key acts as the account
        assert len(await svc.api_keys(ADA)) == 1
        assert await svc.owns(BOB, ada_job) and await svc.owns(ADA, bob_job)

        # one quota: 3 used of 5, so 3 more is too many from either platform
        with pytest.raises(QuotaExceeded):
            await svc.imagine(BOB, "three more", count=3)
        await _make(env, BOB, "one more from discord")
        assert (await svc.quota(ADA)).used == 4
        assert (await svc.history(ADA)).total == 3

        # /unlink: Bob acts as himself again, with a fresh history; the account keeps what it had;
        # what Bob used before linking still counts for him (unlinking never frees quota)
        assert await svc.unlink(BOB) is True
        assert (await svc.history(BOB)).total == 0 and (await svc.quota(BOB)).used == 1
        assert (await svc.history(ADA)).total == 3
        assert await svc.unlink(BOB) is False


async def test_expired_reused_and_own_codes_are_refused(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        svc = env.service
        code = await svc.link_code(ADA)
        env.clock.advance(minutes=10, seconds=1)
        with pytest.raises(InvalidRequest, match="expired"):
            await svc.link(BOB, code)
        code = await svc.link_code(ADA)
        env.clock.advance(minutes=9)
        with pytest.raises(NotAllowed, match="same account"):
            await svc.link(ADA, code)  # used up by the refusal? no: the transaction rolled back
        assert await svc.link(BOB, code)
        with pytest.raises(InvalidRequest, match="used"):
            await svc.link(CAROL, code)
        with pytest.raises(InvalidRequest):
            await svc.link(CAROL, "NOPE1234")
        # a third platform joins the same account; the account's holder cannot unlink itself
        assert len(await svc.link(CAROL, await svc.link_code(BOB))) == 3
        with pytest.raises(NotAllowed, match="holds the account"):
            await svc.unlink(ADA)


async def test_the_stricter_moderation_state_holds(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        svc = env.service
        await moderation.set_cooldown(env.db, BOB.key, env.clock() + timedelta(hours=1))
        await _make(env, ADA, "ada is fine")
        await svc.link(BOB, await svc.link_code(ADA))
        with pytest.raises(Restricted, match="cooldown"):
            await svc.imagine(ADA, "ada now waits too")  # Bob's cooldown holds for the account
        await moderation.set_cooldown(env.db, BOB.key, None)
        await _make(env, ADA, "ada again")
        await moderation.set_banned(env.db, ADA.key, True)
        with pytest.raises(Restricted, match="blocked"):
            await svc.imagine(BOB, "bob is blocked with ada")
        await moderation.set_banned(env.db, ADA.key, False)
        await svc.admin_block(ROOT, "discord", "2002")
        for who in (ADA, BOB):
            with pytest.raises(NotAllowed, match="blocked"):
                await svc.imagine(who, "blocked account")


async def test_forget_and_export_cover_the_whole_account(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        svc = env.service
        await _make(env, ADA, "from telegram")
        await _make(env, BOB, "from discord")
        await svc.link(BOB, await svc.link_code(ADA))
        export = await svc.export(BOB)
        import json
        import zipfile

        with zipfile.ZipFile(export) as archive:
            data = json.loads(archive.read("export.json"))
        assert {j["request"]["prompt"] for j in data["jobs"]} == {"from telegram", "from discord"}
        await svc.forget(BOB)
        assert (await svc.history(ADA)).total == 0 and (await svc.history(BOB)).total == 0


async def test_console_link_share_and_apikey(tmp_path: Path) -> None:
    import asyncio
    import io
    import re

    from bot.frontends.console import run_console

    async with service_env(tmp_path, FakePipeline()) as env:
        async def run(lines: list[str]) -> str:
            out = io.StringIO()
            await asyncio.wait_for(run_console(env.service, who=CAROL, output_dir=tmp_path / "out",
                                               lines=lines, out=out), 30)
            return out.getvalue()

        text = await run(["a console fox --seed 3", "/link"])
        job = re.search(r"^(\w+): done", text, re.M).group(1)
        code = re.search(r"Your link code: (\w+)", text).group(1)
        assert sorted(await env.service.link(ADA, code)) == ["console:carol", "telegram:1001"]
        text = await run([f"/share {job} 1", "/share nope", "/apikey", "/unlink", "/link BADCODE1"])
        # no [web]: shared, and told plainly that nobody can see it yet (no link to nowhere)
        assert f"🌐 Shared {job}-1, but this bot's web gallery is not running, so nobody can see it yet" in text
        assert "/i/" not in text and "[web] enabled = true" in text
        _, share_id = await env.service.image_by_ref(CAROL, f"{job}-1")
        assert share_id and (await env.service.shared_image(share_id)).ref == f"{job}-1"
        assert "Usage: /share JOB N" in text
        # the same image by its chat number: owner only (another's number reveals nothing)
        number = (await env.service.image_by_ref(CAROL, f"{job}-1"))[0].image_id
        by_number = await run([f"/unshare {number}", f"/share {number}"])
        assert f"{job}-1 is no longer in the gallery." in by_number and f"🌐 Shared {job}-1, but" in by_number
        with pytest.raises(NotFound):
            await env.service.ref_of(BOB, str(number + 1000))
        with pytest.raises(NotFound):
            await env.service.share(BOB, str(number))
        key = re.search(r"^(ib_\S+)$", text, re.M).group(1)
        assert (await env.service.authenticate(key))[0].key == CAROL.key
        key_id = re.search(r"API key (\d+), shown only now", text).group(1)
        listed = await run(["/apikey list", f"/apikey revoke {key_id}", "/apikey list"])
        assert f"{key_id}: {key[:6]}" in listed and " live, " in listed
        assert f"Revoked API key {key_id}." in listed and f"{key_id}: " in listed.split("Revoked")[1]
        assert " revoked " in listed.split("Revoked")[1]
        assert "holds the account" in text  # Carol issued the code, so her row is the account
        assert "unknown, used or expired" in text
        text = await run([f"/unshare {job} 1"])
        assert f"{job}-1 is no longer in the gallery." in text
