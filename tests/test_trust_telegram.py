"""Issue #22, item 1 on Telegram (the real python-telegram-bot client against FakeTelegram): a
forged button naming another user's private result grants nothing; in a group, a member may
vary, upscale and reroll a result the chat shows them, charged to themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.service import Who
from storage import jobs, quotas, ratings, users
from tests.fake_telegram import FakeTelegram, make_chat, make_user
from tests.fakes import FakePipeline
from tests.telegram_support import callback_data, running, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type")

ALICE = make_user(1001, "Alice", "alice")
BOB = make_user(2002, "Bob", "bob")
GROUP = make_chat(-1009876543210, "supergroup", "Imagine fans")
GEN = 30.0
DENIED = ("that you can use", "There is no image")  # the job's or (share) the image's refusal


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


async def _result(fake: FakeTelegram, text: str, user, chat=None):  # type: ignore[no-untyped-def]
    """Send /imagine and wait for its result (the placeholder edited into the image)."""
    mark = fake.mark()
    fake.push(fake.message_update(text, user, chat))
    photo = await fake.wait_for_call("editMessageMedia", since=mark, timeout=GEN)
    return photo, callback_data(photo)[0].removeprefix("r:")


async def _jobs_of(env, telegram_id: int) -> list:  # type: ignore[no-untyped-def]
    user = await users.get_by_platform(env.db, "telegram", str(telegram_id))
    return [] if user is None else list((await jobs.history(env.db, user.id, limit=50)).jobs)


async def _used(env, telegram_id: int) -> int:  # type: ignore[no-untyped-def]
    user = await users.get_by_platform(env.db, "telegram", str(telegram_id))
    return await quotas.used(env.db, user.id, quotas.window_start(env.clock(), "daily"))


async def test_forged_buttons_on_another_users_private_result_grant_nothing(tmp_path: Path,
                                                                            fake: FakeTelegram) -> None:
    async with running(tmp_path, FakePipeline(), fake) as r:
        _, alice_job = await _result(fake, "/imagine a secret garden --n 2", ALICE)  # her private chat
        bob_photo, bob_job = await _result(fake, "/imagine an owl", BOB)
        alice_image = (await r.env.service.job_delivery(Who("telegram", "1001"), alice_job)).images[0]
        used = await _used(r.env, 2002)

        for data in (f"r:{alice_job}", f"v:{alice_job}:1", f"u:{alice_job}:1", f"k:{alice_job}:1",
                     f"s:{alice_job}:1:5", f"g:{alice_job}:1"):
            mark = fake.mark()
            # Bob edits the button data of a message he can see (his own result) to name Alice's job
            fake.push(fake.callback_query_update(data, bob_photo.result, BOB))
            answer = await fake.wait_for_call("answerCallbackQuery", since=mark, timeout=GEN)
            text = answer.params.get("text", "")
            assert any(d in text for d in DENIED) and answer.params.get("show_alert"), (data, answer.params)
            assert not fake.calls("sendDocument", since=mark), data  # no full-quality copy of her image
            assert not fake.calls("sendPhoto", since=mark), data  # no job placeholder: nothing made

        assert [j.id for j in await _jobs_of(r.env, 2002)] == [bob_job]
        assert await _used(r.env, 2002) == used
        bob = await users.get_by_platform(r.env.db, "telegram", "2002")
        assert await ratings.get(r.env.db, alice_image.image_id, bob.id) is None
        assert len(await _jobs_of(r.env, 1001)) == 1


async def test_a_group_member_may_vary_upscale_and_reroll_a_result_posted_there(tmp_path: Path,
                                                                                fake: FakeTelegram) -> None:
    async with running(tmp_path, FakePipeline(), fake) as r:
        photo, alice_job = await _result(fake, "/imagine a harbour at dawn --n 2", ALICE, GROUP)
        alice_used = await _used(r.env, 1001)

        mark = fake.mark()
        fake.push(fake.callback_query_update(f"u:{alice_job}:2", photo.result, BOB))
        document = await fake.wait_for_call("sendDocument", since=mark, timeout=GEN)
        assert document.params["chat_id"] == GROUP["id"]

        fake.push(fake.callback_query_update(f"s:{alice_job}:1:4", photo.result, BOB))
        image = (await r.env.service.job_delivery(Who("telegram", "1001"), alice_job)).images[0]
        bob_id = lambda: users.get_by_platform(r.env.db, "telegram", "2002")  # noqa: E731

        async def bob_rated() -> bool:
            bob = await bob_id()
            return bob is not None and await ratings.get(r.env.db, image.image_id, bob.id) is not None
        await wait_until(bob_rated, GEN)

        for data in (f"v:{alice_job}:1", f"r:{alice_job}"):
            fake.push(fake.callback_query_update(data, photo.result, BOB))
        await wait_until(lambda: _count_delivered(r.env, 2002, 2), GEN)
        made = await _jobs_of(r.env, 2002)
        kinds = sorted(j.request.get("kind", "txt2img") for j in made)
        assert kinds == ["img2img", "txt2img"] and all(j.charged == 2 for j in made)
        assert await _used(r.env, 2002) == 4  # charged to Bob …
        assert await _used(r.env, 1001) == alice_used  # … not to Alice


async def _count_delivered(env, telegram_id: int, n: int) -> bool:  # type: ignore[no-untyped-def]
    return sum(j.status == "delivered" for j in await _jobs_of(env, telegram_id)) == n
