"""Terminal front end driven by scripted lines: output text, image files, delivered rows."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import pytest

from bot.frontends.console import run_console
from bot.service import Who
from storage import jobs
from tests.fakes import FakePipeline
from tests.service_support import ROOT, service_env

ME = Who("console", "me", "me")
TIMEOUT = 60.0


async def _run(env, lines: list[str], out_dir: Path, timeout: float = TIMEOUT) -> str:
    out = io.StringIO()
    await asyncio.wait_for(run_console(env.service, who=ME, output_dir=out_dir, lines=lines, out=out), timeout)
    return out.getvalue()


async def test_imagine_lines_write_files_and_mark_delivered(tmp_path: Path, tiny) -> None:
    out_dir = tmp_path / "out"
    async with service_env(tmp_path, tiny) as env:
        text = await _run(env, [
            "a red fox in snow --n 2 --steps 1",       # bare line = /imagine
            "/imagine a blue whale --steps 1",          # typed while the first runs
            "/imagine --ar 2:9 nope",
            "/quit",
            "/imagine never read",
        ], out_dir)
        done = re.findall(r"^(\w+): done — (.*)$", text, re.M)
        assert len(done) == 2
        assert {t.split(" --")[0] for _, t in done} == {"a red fox in snow", "a blue whale"}
        assert "Aspect ratio 2:9 is beyond 4:1" in text
        assert "never read" not in text
        files = sorted(p.name for p in out_dir.iterdir())
        fox = [job for job, t in done if t.startswith("a red fox")][0]
        assert f"{fox}-1.png" in files and f"{fox}-2.png" in files and len(files) == 3
        for job_id, _ in done:
            assert (await jobs.get(env.db, job_id)).status == "delivered"
        assert str(out_dir / f"{fox}-1.png") in text

        # both of its names: the chat's image number and the API's job-index name
        image_id = int(re.search(rf"\[1\] image (\d+) = {fox}-1, seed", text).group(1))
        text = await _run(env, [
            f"/rate {fox}-2 3",                         # the API's name works in the chat too
            f"/comment {image_id} before rating",
            f"/rate {image_id} 5",
            "/rate 1",
            f"/comment {image_id}   the fur is lovely",
            "/comment",
            "/history fox",
            "/quota",
            "/settings aspect=16:9 count=2",
            "/settings aspect=2:9",
            "/settings",
            "/frobnicate",
        ], out_dir)
        assert f"Rated image {image_id}: ★★★★★" in text and f"Rated image {image_id + 1}: ★★★" in text
        assert "Usage: /rate IMAGE STARS (1-5); IMAGE is its number (/history) or JOB-N" in text
        assert "Rate the image first" in text and "Usage: /comment IMAGE WORDS" in text
        assert f"💬 Comment kept beside your 5★ rating of image {image_id}." in text
        assert await env.db.fetchval("SELECT comment FROM ratings WHERE image_id = ?", (image_id,)) == \
            "the fur is lovely"
        assert f"{fox}" in text and "your rating 5★" in text and "a blue whale" not in text
        assert f"image {image_id} = {fox}-1 (seed" in text and f"image {image_id + 1} = {fox}-2 (seed" in text
        assert "Used 3 of 50 images; 47 left this day (daily quota)." in text
        assert "Saved. Your settings: aspect=16:9, style=none, count=2" in text
        assert "aspect: Aspect ratio 2:9 is beyond 4:1" in text
        assert "Unknown command /frobnicate" in text
        assert "Unknown command /frobnicate" in text



async def test_help_cancel_reroll_forget_export(tmp_path: Path) -> None:
    fake = FakePipeline()
    async with service_env(tmp_path, fake) as env:
        out_dir = tmp_path / "out"
        fake.pause()
        text = await _run(env, ["/help", "a slow fox", "/cancel", "/cancel"], out_dir)
        fake.resume()
        assert "/variation JOB N" in text and "--ar W:H" in text
        assert re.search(r"^Cancelled \w+ \(a slow fox --ar 1:1 --seed \d+\); 1 image\(s\) refunded.$", text, re.M)
        assert "You have no queued or running request to cancel." in text
        assert re.search(r"^\w+: Your request was cancelled.$", text, re.M)

        text = await _run(env, ["a fox --seed 4"], out_dir)
        job_id = re.search(r"^(\w+): done", text, re.M).group(1)

        (out_dir / "mine.png").write_bytes(b"not the bot's")  # a file of the user's own stays
        text = await _run(env, [f"/reroll {job_id}", "/reroll", "/variation nope 1", "/export"], out_dir)
        assert re.search(r"^\w+: done — a fox --ar 1:1 --seed \d+$", text, re.M)
        assert "Usage: /reroll JOB" in text
        assert "There is no request nope that you can use." in text
        export = Path(re.search(r"Your data: (\S+)", text).group(1))
        copies = sorted(p.name for p in out_dir.iterdir() if p.name != "mine.png")
        assert len(copies) == 2 and f"{job_id}-1.png" in copies  # the fox and its reroll

        # another command came between: the confirmation expired, and says so (and asks again)
        text = await _run(env, ["/forget", "/quota", "/forget confirm"], out_dir)
        expired = "That confirmation expired: /forget confirm must be the very next command after /forget."
        assert expired in text and text.rstrip().endswith("Type /forget confirm to go ahead.")
        assert "Forgotten" not in text and (await env.service.history(ME)).total == 3  # nothing deleted
        text = await _run(env, ["/forget", "/forget confirm"], out_dir)
        assert "Forgotten:" in text and "expired" not in text
        assert "2 copied image(s) removed from the output folder" in text
        assert "Kept, because they protect others" in text and ".." not in text
        assert [p.name for p in out_dir.iterdir()] == ["mine.png"]
        assert not export.exists()
        assert (await env.service.history(ME)).total == 0
        used = (await env.service.quota(ME)).used
        assert used == 2  # the fox and its reroll: /forget never gives quota back

        # /forget confirm without asking first only asks (nothing expired)
        text = await _run(env, ["/forget confirm"], out_dir)
        assert "Type /forget confirm" in text and "Forgotten" not in text and "expired" not in text


async def test_unexpected_errors_get_a_reference(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        async def broken(who):
            raise RuntimeError("database on fire")

        env.service.quota = broken  # type: ignore[method-assign]
        text = await _run(env, ["/quota"], tmp_path / "out")
        ref = re.search(r"Sorry, something went wrong \(reference (\w+)\)", text).group(1)
        assert "database on fire" not in text
        assert any(ref in r.getMessage() and r.exc_info for r in caplog.records)


async def test_async_line_source_and_failed_job(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline(fail_prompt="explode")) as env:
        out = io.StringIO()

        async def lines():
            yield "/imagine explode now"
            # typed once the first has failed, so the two never share a batch (a batch fails whole)
            await _until(lambda: "failed because of an internal error" in out.getvalue())
            yield "/imagine a calm lake"

        await asyncio.wait_for(run_console(env.service, who=ME, output_dir=tmp_path / "o", lines=lines(), out=out),
                               TIMEOUT)
        text = out.getvalue()
        assert re.search(r"^\w+: Image generation failed because of an internal error", text, re.M)
        assert re.search(r"^\w+: done — a calm lake", text, re.M)


def test_each_result_lists_the_typed_commands_that_stand_in_for_buttons() -> None:
    from pathlib import Path as _Path

    from bot.frontends.console.keyboards import actions_line
    from bot.service import Delivery, StoredImage
    from generation.core.request import GenerationRequest

    image = StoredImage(42, 1, 7, _Path("x.png"), 64, 64, "sha", "ok")
    line = actions_line(Delivery("abc123", GenerationRequest(prompt="a fox"), "a fox", (image,), False, {}))
    assert line.strip().startswith("next:")
    assert "/reroll abc123" in line and "/variation abc123 2" in line and "/rate 42 5" in line


async def test_a_variation_names_the_command_for_another(tmp_path: Path) -> None:
    """The terminal has no V buttons: the hint under a variation is the typed command."""
    async with service_env(tmp_path, FakePipeline()) as env:
        text = await _run(env, ["a fox --seed 4 --n 2"], tmp_path / "out")
        job = re.search(r"^(\w+): done", text, re.M).group(1)
        text = await _run(env, [f"/variation {job} 2"], tmp_path / "out")
        assert re.search(rf"^\w+: done — variation of image 2 of {job} \(a fox[^)]*\)$", text, re.M), text
        assert f"/variation {job} 2 (another of the original)" in text
        assert "V2" not in text and "on its images" not in text


async def test_the_first_eta_says_estimating_until_a_batch_was_timed(tmp_path: Path) -> None:
    """No number before this bot has timed a batch (the cold guess can be far off); then seconds."""
    fake = FakePipeline()
    async with service_env(tmp_path, fake) as env:
        fake.pause()
        lines: asyncio.Queue[str] = asyncio.Queue()
        out = io.StringIO()

        async def typed():  # type: ignore[no-untyped-def]
            while (line := await lines.get()) != "/quit":
                yield line

        console = asyncio.create_task(run_console(env.service, who=ME, output_dir=tmp_path / "out",
                                                  lines=typed(), out=out))
        for line in ("a first fox", "a second fox"):
            lines.put_nowait(line)
        await _until(lambda: out.getvalue().count("queued, position") == 2)
        first = out.getvalue()
        # the place in line depends on whether the worker picked the first before the second came
        assert len(re.findall(r"^\w+: queued, position [12] \(estimating the time\)$", first, re.M)) == 2, first
        assert " s)" not in first  # the cold guess (pixels x steps) is not shown as if it were known
        fake.resume()
        await _until(lambda: out.getvalue().count(": done") == 2)
        fake.pause()
        for line in ("a third fox", "a fourth fox"):
            lines.put_nowait(line)
        await _until(lambda: out.getvalue().count("queued, position") == 4)
        later = out.getvalue()[len(first):]
        assert len(re.findall(r"^\w+: queued, position [12] \(about \d+ s\)$", later, re.M)) == 2, later
        assert "estimating" not in later
        fake.resume()
        lines.put_nowait("/quit")
        await asyncio.wait_for(console, TIMEOUT)


async def _until(condition) -> None:  # type: ignore[no-untyped-def]
    for _ in range(600):  # bounded: 30 s
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_admin_commands_for_cli_admins_and_the_real_quota_window(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline(), quota_window="weekly") as env:
        out = io.StringIO()
        lines = ["/admin quota console:me 2", "/admin block console:bob", "/admin stats", "/admin quota me x"]
        await asyncio.wait_for(run_console(env.service, who=ROOT, output_dir=tmp_path / "o", lines=lines,
                                           out=out), TIMEOUT)
        text = out.getvalue()
        assert "console:me: 2 images per window; 2 left now." in text
        assert "console:bob is blocked." in text
        assert re.search(r"^  queue: queued_jobs=0, ", text, re.M)
        assert "Usage: /admin stats | /admin quota PLATFORM:USER LIMIT|default" in text
        assert (await env.service.quota(ME)).limit == 2

        text = await _run(env, ["/quota", "/admin unblock console:bob"], tmp_path / "o")
        assert re.search(r"^Used 0 of 2 images; 2 left this week \(weekly quota\)\. Resets ", text, re.M)
        assert "Only the bot's admins can do that." in text
        bob = Who("console", "bob", "bob")
        with pytest.raises(Exception, match="blocked"):
            await env.service.imagine(bob, "a fox")

        out = io.StringIO()
        await run_console(env.service, who=ROOT, output_dir=tmp_path / "o", lines=["/admin unblock console:bob"],
                          out=out)
        assert "console:bob is unblocked." in out.getvalue()
        ticket = await env.service.imagine(bob, "a fox")
        assert ticket.job_id


async def test_a_terminal_shows_an_input_prompt_and_a_pipe_does_not(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        terminal = _Terminal()
        await asyncio.wait_for(run_console(env.service, who=ME, output_dir=tmp_path / "o", lines=["/quota"],
                                           out=terminal), TIMEOUT)
        shown = terminal.getvalue()
        # one prompt before the first line, one after its answer
        assert shown.count("imagine> ") >= 2
        assert shown.index("imagine> ") < shown.index("Used 0 of")
        assert "imagine> " in shown.split("Used 0 of")[1]
        assert "imagine> " not in await _run(env, ["/quota"], tmp_path / "o")


class _CommittedCheck(io.StringIO):
    """Output that, when "queued" is printed, reads the job row back through another connection."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
        self.seen: list[tuple[str, str | None]] = []

    def write(self, text: str) -> int:
        if m := re.match(r"(\w+): queued", text):
            import sqlite3

            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as conn:
                row = conn.execute("SELECT status FROM jobs WHERE id = ?", (m.group(1),)).fetchone()
            self.seen.append((m.group(1), row[0] if row else None))
        return super().write(text)


async def test_queued_is_printed_only_after_the_job_row_is_committed(tmp_path: Path, tiny) -> None:
    """The console's "acknowledge only what is stored": "queued" is its acknowledgement."""
    async with service_env(tmp_path, tiny) as env:
        out = _CommittedCheck(tmp_path / "bot.db")
        await asyncio.wait_for(run_console(env.service, who=ME, output_dir=tmp_path / "out",
                                           lines=["a heron --steps 1", "/quit"], out=out), TIMEOUT)
        assert len(out.seen) == 1 and out.seen[0][1] is not None, out.seen  # visible to another reader


async def test_imagine_with_image_starts_from_a_local_picture(tmp_path: Path, tiny) -> None:
    from PIL import Image

    from storage import inputs
    from tests.upload_support import animated_gif, photo

    (tmp_path / "my photo.png").write_bytes(photo(300, 200))
    (tmp_path / "moving.gif").write_bytes(animated_gif())
    async with service_env(tmp_path, tiny) as env:
        text = await _run(env, [
            f'/imagine a harbour --seed 4 --image "{tmp_path / "my photo.png"}" --strength 0.5',
            f"/imagine a harbour --image {tmp_path / 'missing.png'}",
            f"/imagine a harbour --image {tmp_path / 'moving.gif'}",
            "/imagine a harbour --image",
        ], tmp_path / "out")
        (job_id,) = re.findall(r"^(\w+): done — .*from your image", text, re.M)
        row = await jobs.get(env.db, job_id)
        assert row.request["kind"] == "img2img" and row.request["strength"] == 0.5
        assert await inputs.for_job(env.db, job_id) is not None
        assert Image.open(tmp_path / "out" / f"{job_id}-1.png").size == (304, 208)
        assert "There is no file" in text and "Animated images" in text and "--image needs the path" in text
        assert (await env.service.quota(ME)).used == 1


@pytest.mark.slow
async def test_upscale_zoom_pan_commands(tmp_path: Path, tiny) -> None:
    async with service_env(tmp_path, tiny) as env:
        text = await _run(env, ["a harbour --steps 1 --seed 2"], tmp_path / "out")
        (job_id,) = re.findall(r"^(\w+): done", text, re.M)
        text = await _run(env, [f"/upscale {job_id} 1 creative", f"/upscale {job_id}", f"/upscale {job_id} 1 wild"],
                          tmp_path / "out", 600)
        (upscaled,) = re.findall(r"^(\w+): done — .*upscale \(creative\)", text, re.M)
        from PIL import Image
        assert Image.open(tmp_path / "out" / f"{upscaled}-1.png").size == (512, 512)
        assert "Usage: /upscale JOB N" in text and "subtle or creative" in text
        text = await _run(env, [f"/zoom {job_id} 1 2 a harbour from afar", f"/pan {job_id} 1 right", "/pan x"],
                          tmp_path / "out", 600)
        assert re.search(r"^\w+: done — .*zoom out 2x of image 1", text, re.M)
        assert re.search(r"^\w+: done — .*pan right of image 1", text, re.M)
        assert "Usage: /pan JOB N left|right|up|down" in text
