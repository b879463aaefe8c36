"""ImagineService end to end: real SQLite files, real queue and worker, the tiny pipeline."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from bot.safety import BlockedPrompt
from bot.service import (
    FORGET_KEEPS,
    Cancelled,
    Failed,
    Finished,
    NotAllowed,
    NotFound,
    QuotaExceeded,
    Queued,
    Running,
    Via,
    Who,
)
from generation.core.errors import GenerationFailed, InvalidRequest, JobCancelled, QueueFull
from storage import images, jobs, quotas, read_png_metadata, users
from tests.fakes import FakePipeline
from tests.service_support import ADA, BOB, ROOT, service_env

TIMEOUT = 30.0
STRANGER = Who("telegram", "never-seen")


@pytest.fixture
async def env(tmp_path: Path, tiny):
    async with service_env(tmp_path, tiny) as e:
        yield e


async def _count_jobs(db) -> int:
    return int(await db.fetchval("SELECT count(*) FROM jobs"))


async def _used(env, who) -> int:
    return (await env.service.quota(who)).used


# -- the happy path ---------------------------------------------------------------------------


async def test_imagine_end_to_end(env) -> None:
    service = env.service
    ticket = await service.imagine(ADA, "a red fox in snow --n 2 --steps 1", target={"chat": 5})
    assert ticket.position >= 0 and ticket.request.seed is not None
    updates = [u async for u in ticket.updates()]
    assert isinstance(updates[-1], Finished)
    assert any(isinstance(u, Running) for u in updates) or isinstance(updates[0], (Queued, Running))
    delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)

    assert delivery.job_id == ticket.job_id and not delivery.cached
    assert delivery.text.startswith("a red fox in snow --ar 1:1 --n 2 --seed ")
    assert delivery.target == {"chat": 5}
    assert [i.index for i in delivery.images] == [0, 1]
    assert [i.seed for i in delivery.images] == list(ticket.request.seeds)
    for image in delivery.images:
        assert image.path.is_absolute() and image.path.is_file()
        assert (image.width, image.height) == (256, 256)
        meta = read_png_metadata(image.path.read_bytes())
        assert meta["prompt"] == "a red fox in snow" and meta["seed"] == image.seed
        assert meta["job_id"] == ticket.job_id and meta["steps"] == 1
        assert "user_id" not in meta

    row = await jobs.get(env.db, ticket.job_id)
    assert row.status == "done" and row.charged == 2 and not row.refunded
    assert row.target == {"chat": 5} and row.started_at is not None
    assert row.request["seed"] == ticket.request.seed
    assert len(await images.images_for_job(env.db, ticket.job_id)) == 2
    assert await _used(env, ADA) == 2
    assert env.pipeline.calls == 1

    assert await service.mark_delivered(ticket.job_id) is True
    assert await service.mark_delivered(ticket.job_id) is False
    assert (await jobs.get(env.db, ticket.job_id)).status == "delivered"


async def test_saved_defaults_and_settings_validation(env) -> None:
    service = env.service
    with pytest.raises(InvalidRequest) as err:
        await service.settings(ADA, aspect="2:9")
    assert err.value.field == "aspect" and "4:1" in str(err.value)
    with pytest.raises(InvalidRequest, match="Unknown setting 'colour'"):
        await service.settings(ADA, colour="red")
    with pytest.raises(InvalidRequest, match="count must be one of 1, 2, 3, 4"):
        await service.settings(ADA, count="9")
    with pytest.raises(InvalidRequest, match="private must be on or off"):
        await service.settings(ADA, private="maybe")

    saved = await service.settings(ADA, aspect="16:9", count="2", private="yes", style="photo", steps="1")
    assert saved == {"aspect": "16:9", "style": "photo", "count": 2, "steps": 1, "private": True,
                     "refine": False}
    assert await service.settings(ADA) == saved
    ticket = await service.imagine(ADA, "a lighthouse")
    assert (ticket.request.width, ticket.request.height) == service.caps.size_for("16:9")
    assert ticket.request.count == 2 and ticket.request.style == "photo" and ticket.request.steps == 1
    flags = await service.imagine(ADA, "a lighthouse --n 1 --ar 1:1")
    assert flags.request.count == 1 and flags.request.width == flags.request.height
    await asyncio.wait_for(asyncio.gather(ticket.delivery(), flags.delivery()), TIMEOUT)
    reset = await service.settings(ADA, aspect=None, count="default")
    assert reset["aspect"] == "1:1" and reset["count"] == 1 and reset["style"] == "photo"


# -- quota ------------------------------------------------------------------------------------


async def test_quota_exhausted_message_and_nothing_written(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny, daily_quota=2) as env:
        first = await env.service.imagine(ADA, "a cat --n 2 --steps 1")
        await asyncio.wait_for(first.delivery(), TIMEOUT)
        with pytest.raises(QuotaExceeded) as err:
            await env.service.imagine(ADA, "another cat --steps 1")
        message = str(err.value)
        assert "no images left of your 2 today" in message
        assert "resets at 2024-05-02 00:00 UTC (in 12 h 0 min)" in message
        assert await _count_jobs(env.db) == 1
        status = await env.service.quota(ADA)
        assert (status.used, status.limit, status.remaining) == (2, 2, 0)
        assert status.resets_at.isoformat() == "2024-05-02T00:00:00+00:00"
        env.clock.advance(hours=13)  # next day: a fresh window
        assert (await env.service.quota(ADA)).remaining == 2


async def test_queue_full_refunds_and_leaves_no_job(tmp_path: Path, tiny) -> None:
    """A request the queue refuses at once is a refusal: refunded, no job row, its platform
    request open again (told, then closed, like any refusal; a crash before that runs it again)."""
    async with service_env(tmp_path, tiny, start_queue=False,
                           queue_options={"max_queued_per_user": 1}) as env:
        kept = await env.service.imagine(ADA, "a fox --steps 1")
        await env.service.receive("telegram", 77, {"text": "/imagine a second fox"})
        with pytest.raises(QueueFull, match="already have 1 images queued"):
            await env.service.imagine(ADA, "a second fox --steps 1", origin=("telegram", "77"))
        rows = (await jobs.history(env.db, (await users.get_by_platform(env.db, "telegram", "1001")).id)).jobs
        assert [r.id for r in rows] == [kept.job_id]
        assert await _used(env, ADA) == 1
        assert [item.key for item in await env.service.unhandled("telegram")] == ["77"]


# -- failures, cancel, safety ----------------------------------------------------------------


async def test_failure_refunds_once(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline(fail_prompt="explode")) as env:
        ticket = await env.service.imagine(ADA, "explode please --n 2")
        updates = [u async for u in ticket.updates()]
        assert isinstance(updates[-1], Failed) and "internal error" in updates[-1].message
        with pytest.raises(GenerationFailed):
            await ticket.delivery()
        row = await jobs.get(env.db, ticket.job_id)
        assert row.status == "failed" and row.refunded
        assert await _used(env, ADA) == 0
        assert await quotas.refund(env.db, ticket.job_id) == 0
        assert await env.service.mark_delivered(ticket.job_id) is False


async def test_cancel_queued_and_running_refund_once(tmp_path: Path) -> None:
    fake = FakePipeline()
    fake.pause()
    async with service_env(tmp_path, fake) as env:
        service = env.service
        running = await service.imagine(ADA, "first --n 2")
        assert await asyncio.to_thread(fake.wait_entered)
        queued = await service.imagine(ADA, "second --ar 16:9")
        assert await _used(env, ADA) == 3

        latest = await service.cancel(ADA)  # no id: the latest active job
        assert latest.job_id == queued.job_id and latest.status == "cancelled" and latest.refunded == 1
        assert isinstance(queued.last, Cancelled)
        with pytest.raises(NotFound):
            await service.cancel(BOB, running.job_id)  # not Bob's
        outcome = await service.cancel(ADA, running.job_id)
        assert outcome.status == "cancelled" and outcome.refunded == 2
        fake.resume()
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(running.delivery(), TIMEOUT)
        assert await _used(env, ADA) == 0
        with pytest.raises(NotAllowed, match="already cancelled"):
            await service.cancel(ADA, running.job_id)
        with pytest.raises(NotFound, match="no queued or running request"):
            await service.cancel(ADA)
        assert await quotas.refund(env.db, running.job_id) == 0
        assert env.store.files() == []


async def test_blocked_prompt_spends_nothing(env) -> None:
    with pytest.raises(BlockedPrompt) as err:
        await env.service.imagine(ADA, "a GORY battle --seed 3")
    assert err.value.category == "graphic gore"
    assert "GORY" not in str(err.value) and "gory" not in str(err.value)
    assert await _count_jobs(env.db) == 0
    assert await _used(env, ADA) == 0
    assert env.pipeline.calls == 0


async def test_blocked_image_is_never_stored_and_refunded(tmp_path: Path) -> None:
    class BlockSecond:
        def __init__(self) -> None:
            self.seen = 0

        def check(self, image: object) -> str:
            self.seen += 1
            return "blocked" if self.seen == 2 else "ok"

    async with service_env(tmp_path, FakePipeline(), image_checker=BlockSecond()) as env:
        ticket = await env.service.imagine(ADA, "a harmless fox --n 2")
        updates = [u async for u in ticket.updates()]
        assert isinstance(updates[-1], Failed) and "image safety filter" in updates[-1].message
        row = await jobs.get(env.db, ticket.job_id)
        assert row.status == "failed" and row.refunded
        assert await images.images_for_job(env.db, ticket.job_id) == []
        assert env.store.files() == []
        assert await _used(env, ADA) == 0


async def test_spoiler_images_are_stored_marked(tmp_path: Path) -> None:
    class Spoil:
        def check(self, image: object) -> str:
            return "spoiler"

    async with service_env(tmp_path, FakePipeline(), image_checker=Spoil()) as env:
        delivery = await asyncio.wait_for((await env.service.imagine(ADA, "a fox")).delivery(), TIMEOUT)
        assert [i.spoiler for i in delivery.images] == [True]


async def test_blocked_user_is_refused(env) -> None:
    await env.service.admin_block(ROOT, "telegram", "1001")
    with pytest.raises(NotAllowed, match="blocked"):
        await env.service.imagine(ADA, "a fox")
    await env.service.admin_unblock(ROOT, "telegram", "1001")
    ticket = await env.service.imagine(ADA, "a fox --steps 1")
    await asyncio.wait_for(ticket.delivery(), TIMEOUT)


# -- dedupe, reroll, variation ---------------------------------------------------------------


async def test_explicit_seed_dedupe_uses_no_gpu_or_quota(env) -> None:
    """The result cache is per account unless the image is publicly shared (issue #22)."""
    service = env.service
    first = await asyncio.wait_for((await service.imagine(ADA, "a fox --seed 7 --steps 1")).delivery(), TIMEOUT)
    assert env.pipeline.calls == 1
    own = await service.imagine(ADA, "a fox --seed 7 --steps 1")  # the same account: served from the store
    assert own.cached and env.pipeline.calls == 1
    # another account: Ada's private result is neither given away nor told to exist
    other = await service.imagine(BOB, "a fox --seed 7 --steps 1 --ar 1:1")
    assert not other.cached
    await asyncio.wait_for(other.delivery(), TIMEOUT)
    assert env.pipeline.calls == 2 and await _used(env, BOB) == 1
    await service.share(ADA, f"{first.job_id}-1")  # public now: anyone may get it free
    carol = Who("telegram", "3003", "carol")
    ticket = await service.imagine(carol, "a fox --seed 7 --steps 1 --ar 1:1")
    assert ticket.done and ticket.cached
    again = await ticket.delivery()
    assert again.cached and again.job_id != first.job_id
    # the same pixels, in a file of Carol's own: its metadata names her job, never Ada's
    for mine, hers in zip(again.images, first.images):
        assert mine.path != hers.path and mine.seed == hers.seed
        with Image.open(mine.path) as a, Image.open(hers.path) as b:
            assert a.tobytes() == b.tobytes()
        meta = read_png_metadata(mine.path.read_bytes())
        assert meta["job_id"] == again.job_id and first.job_id not in mine.path.read_bytes().decode("latin-1")
    own_again = await (await service.imagine(ADA, "a fox --seed 7 --steps 1")).delivery()
    assert [i.path for i in own_again.images] == [i.path for i in first.images]  # her own: the same file
    assert env.pipeline.calls == 2
    assert await _used(env, carol) == 0
    assert [type(u) async for u in ticket.updates()] == [Finished]
    row = await jobs.get(env.db, again.job_id)
    assert row.status == "done" and row.charged == 0
    assert await service.mark_delivered(again.job_id)
    # without an explicit seed nothing is deduplicated
    fresh = await service.imagine(BOB, "a fox --steps 1")
    assert not fresh.cached
    await asyncio.wait_for(fresh.delivery(), TIMEOUT)
    assert env.pipeline.calls == 3


async def test_reroll_new_seed_charged_to_clicker(env) -> None:
    service = env.service
    first = await asyncio.wait_for((await service.imagine(ADA, "a fox --seed 5 --steps 1")).delivery(), TIMEOUT)
    with pytest.raises(NotFound):  # a typed id of another's result grants nothing
        await service.reroll(BOB, first.job_id, target={"chat": 9})
    await service.remember_message(first.job_id, BOB.platform, 9, 77)  # the result, posted in chat 9
    ticket = await service.reroll(BOB, first.job_id, target={"chat": 9}, via=Via(9, 77))
    assert ticket.request.seed != 5 and ticket.request.prompt == "a fox"
    assert ticket.request.user_id == BOB.user_id and ticket.target == {"chat": 9}
    delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
    assert delivery.images[0].sha256 != first.images[0].sha256
    assert await _used(env, BOB) == 1 and await _used(env, ADA) == 1
    with pytest.raises(NotFound):
        await service.reroll(BOB, "nope")


async def test_variation_is_img2img_of_the_chosen_image(env) -> None:
    service = env.service
    first = await asyncio.wait_for((await service.imagine(ADA, "a fox --n 2 --steps 1")).delivery(), TIMEOUT)
    await service.remember_message(first.job_id, BOB.platform, None, 78)  # the grid, posted where Bob sees it
    with pytest.raises(NotFound):
        await service.variation(BOB, first.job_id, 5, via=Via(None, 78))
    ticket = await service.variation(BOB, first.job_id, 1, via=Via(None, 78))
    assert ticket.request.kind == "img2img"
    assert ticket.request.init_image == str(first.images[1].path)
    assert ticket.request.strength == pytest.approx(0.6)
    delivery = await asyncio.wait_for(ticket.delivery(), TIMEOUT)
    assert len(delivery.images) == 2


# -- history, ratings -------------------------------------------------------------------------


async def test_history_paging_search_and_ratings(env) -> None:
    service = env.service
    made = []
    for prompt in ("a red fox", "a blue whale", "a red barn"):
        made.append(await asyncio.wait_for((await service.imagine(ADA, f"{prompt} --steps 1")).delivery(), TIMEOUT))
        env.clock.advance(seconds=1)
    await asyncio.wait_for((await service.imagine(BOB, "bob's own --steps 1")).delivery(), TIMEOUT)

    page0 = await service.history(ADA, per_page=2)
    assert page0.total == 3 and page0.has_more and page0.pages == 2
    assert [e.text.split(" --")[0] for e in page0.entries] == ["a red barn", "a blue whale"]
    page1 = await service.history(ADA, page=1, per_page=2)
    assert [e.job_id for e in page1.entries] == [made[0].job_id] and not page1.has_more
    red = await service.history(ADA, search="red")
    assert {e.job_id for e in red.entries} == {made[0].job_id, made[2].job_id}
    assert (await service.history(ADA, search="%")).total == 0
    assert (await service.history(STRANGER)).total == 0
    with pytest.raises(InvalidRequest):
        await service.history(ADA, per_page=0)

    image_id = made[1].images[0].image_id
    await service.rate(ADA, image_id, 4)
    with pytest.raises(NotFound):  # Ada's private image, by its (guessable) number
        await service.rate(BOB, image_id, "2", source="reaction")
    await service.remember_message(made[1].job_id, BOB.platform, None, 501)  # shown where Bob sees it
    await service.rate(BOB, image_id, "2", source="reaction", via=Via(None, 501))
    entry = [e for e in (await service.history(ADA)).entries if e.job_id == made[1].job_id][0]
    shown = entry.images[0]
    assert shown.my_stars == 4 and shown.ratings == 2 and shown.average == pytest.approx(3.0)
    with pytest.raises(InvalidRequest, match="from 1 to 5"):
        await service.rate(ADA, image_id, 9)
    with pytest.raises(NotFound):
        await service.rate(ADA, 99999, 3)
    assert await service.unrate(ADA, image_id, source="reaction") is False  # a button rating stays
    assert await service.unrate(ADA, image_id) is True
    entry = [e for e in (await service.history(ADA)).entries if e.job_id == made[1].job_id][0]
    assert entry.images[0].my_stars is None and entry.images[0].ratings == 1


# -- forget, export, admin --------------------------------------------------------------------


async def test_forget_deletes_rows_and_unshared_files(env) -> None:
    service = env.service
    mine = await asyncio.wait_for((await service.imagine(ADA, "only mine --steps 1")).delivery(), TIMEOUT)
    shared = await asyncio.wait_for((await service.imagine(ADA, "shared --seed 1 --steps 1")).delivery(), TIMEOUT)
    await service.share(ADA, f"{shared.job_id}-1")  # public: Bob's identical request gets its pixels free
    bobs = await asyncio.wait_for((await service.imagine(BOB, "shared --seed 1 --steps 1")).delivery(), TIMEOUT)
    assert bobs.cached and bobs.images[0].path != shared.images[0].path  # in a file of his own
    export = await service.export(ADA)
    outcome = await service.forget(ADA)
    assert outcome.files_deleted == 3  # mine, the shared one, the export zip; Bob's copy stays
    assert not mine.images[0].path.exists() and not shared.images[0].path.exists()
    assert bobs.images[0].path.exists()
    assert not export.exists()
    kept = await users.get_by_platform(env.db, "telegram", "1001")
    assert kept is not None and kept.settings == {}  # the identity stays, holding protections
    assert (await service.history(ADA)).total == 0
    assert (await service.history(BOB)).total == 1
    assert await service.forget(ADA) == type(outcome)(0, 0)


async def test_forget_keeps_the_spent_quota_of_this_window(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny, daily_quota=2) as env:
        await asyncio.wait_for((await env.service.imagine(ADA, "a cat --n 2 --steps 1")).delivery(), TIMEOUT)
        await env.service.forget(ADA)
        with pytest.raises(QuotaExceeded, match="no images left"):
            await env.service.imagine(ADA, "again --steps 1")
        env.clock.advance(hours=13)  # the next window is a fresh one, as for anyone
        ticket = await env.service.imagine(ADA, "next day --steps 1")
        await asyncio.wait_for(ticket.delivery(), TIMEOUT)


async def test_forget_keeps_an_admin_block_and_a_personal_limit(env) -> None:
    service = env.service
    await service.admin_set_quota(ROOT, ADA.platform, ADA.user_id, 1)
    await service.admin_block(ROOT, ADA.platform, ADA.user_id)
    await service.settings(ADA, style=None)
    await service.forget(ADA)
    with pytest.raises(NotAllowed, match="blocked"):
        await service.imagine(ADA, "a fox --steps 1")
    await service.admin_unblock(ROOT, ADA.platform, ADA.user_id)
    assert (await service.quota(ADA)).limit == 1  # the personal limit survived /forget
    await service.forget(ADA)
    assert (await service.quota(ADA)).limit == 1


async def test_forget_outcome_text_says_what_is_kept() -> None:
    for word in ("block", "strikes", "cooldowns", "quota", "limit"):
        assert word in FORGET_KEEPS


async def test_export_zip_contents(env) -> None:
    service = env.service
    delivery = await asyncio.wait_for((await service.imagine(ADA, "export me --n 2 --steps 1")).delivery(), TIMEOUT)
    await service.rate(ADA, delivery.images[0].image_id, 5)
    path = await service.export(ADA)
    assert path.is_absolute() and path.suffix == ".zip"
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        data = json.loads(archive.read("export.json"))
        assert names == {"export.json", f"images/{delivery.job_id}-1.png", f"images/{delivery.job_id}-2.png"}
        assert archive.read(f"images/{delivery.job_id}-2.png") == delivery.images[1].path.read_bytes()
    assert data["user"]["platform_user_id"] == "1001"
    assert data["jobs"][0]["images"][0]["file"] == f"images/{delivery.job_id}-1.png"
    assert data["ratings"][0]["stars"] == 5
    with pytest.raises(NotFound):
        await service.export(STRANGER)


async def test_admin_commands_refuse_non_admins(env) -> None:
    service = env.service
    for call in (
        service.admin_set_quota(ADA, "discord", "2002", 1),
        service.admin_block(ADA, "discord", "2002"),
        service.admin_unblock(ADA, "discord", "2002"),
        service.admin_stats(ADA),
    ):
        with pytest.raises(NotAllowed, match="admins"):
            await call
    status = await service.admin_set_quota(ROOT, "discord", "2002", 1)
    assert status.limit == 1 and status.remaining == 1
    assert (await service.quota(BOB)).limit == 1
    with pytest.raises(QuotaExceeded):
        await service.imagine(BOB, "two --n 2")
    await service.admin_set_quota(ROOT, "discord", "2002", None)
    assert (await service.quota(BOB)).limit == 50
    with pytest.raises(InvalidRequest):
        await service.admin_set_quota(ROOT, "discord", "2002", -1)
    stats = await service.admin_stats(ROOT)
    assert stats["users"] >= 1 and "queue" in stats and stats["model"] == env.queue.model_id


def test_settings_are_frozen_and_checked(tmp_path: Path) -> None:
    from bot.service import ServiceSettings

    settings = ServiceSettings(admins={"console:me"}, data_dir=str(tmp_path))
    assert settings.admins == frozenset({"console:me"}) and settings.data_dir == tmp_path
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.daily_quota = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="quota_window"):
        ServiceSettings(quota_window="monthly")
