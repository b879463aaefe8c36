"""Terminal chat front end: type /imagine lines, get PNG files in an output folder.

Thin on purpose: every command is one :class:`~bot.service.ImagineService` call and some
printing. A line without a leading slash is an ``/imagine``. Several requests can run at once:
each accepted one is followed by its own task that shows progress and writes
``<output_dir>/<job>-<n>.png`` when it is done, then marks the job delivered.

Never lose, never double (DESIGN.md): a typed line is acknowledged by the "queued" line, and
that is printed only after ``service.imagine`` returned, i.e. after the job row (and its quota)
committed; a kill before that leaves no job and no charge, and no "queued" was shown, so the
line is simply typed again. Lines read ahead but not handled yet were not acknowledged either,
so the console needs no inbox.
Delivery writes fixed file names (``<job>-<n>.png``), so writing them again after a restart
replaces the same files instead of adding copies.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import re
import shutil
import sys
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import TextIO

from bot.frontends.edits import mask_overlay
from bot.frontends.common import apology, eta_phrase, new_reference
from bot.frontends.console.commands import COMMANDS, CommandHandlers
from bot.frontends.console.keyboards import actions_line
from bot.frontends.console.moderation import ConsoleModeration
from bot.service import Cancelled, Delivery, Failed, Finished, ImagineService, Queued, Recovered, Running, Ticket, Who
from generation.core.errors import ImagineError

__all__ = ["COMMANDS", "Console", "run_console", "stdin_lines"]

logger = logging.getLogger(__name__)

PROMPT = "imagine> "


async def stdin_lines() -> AsyncIterator[str]:
    """Lines typed on stdin, without blocking the event loop; ends at EOF.

    A daemon thread reads, so a pending read never keeps the process alive after SIGTERM.
    """
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        while True:
            line = sys.stdin.readline()
            try:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            except RuntimeError:  # the loop has closed: the bot is stopping
                return
            if not line:
                return

    threading.Thread(target=reader, name="stdin", daemon=True).start()
    while line := await lines.get():
        yield line


async def _aiter(lines: AsyncIterable[str] | Iterable[str]) -> AsyncIterator[str]:
    if hasattr(lines, "__aiter__"):
        async for line in lines:  # type: ignore[union-attr]
            yield line
    else:
        for line in lines:  # type: ignore[union-attr]
            yield line


class Console(CommandHandlers):
    """One terminal user's chat session with the service."""

    def __init__(self, service: ImagineService, *, who: Who, output_dir: Path, out: TextIO) -> None:
        self.service = service
        self.who = who
        self.output_dir = Path(output_dir)
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._tasks: set[asyncio.Task[None]] = set()
        self._confirm_forget = False
        self._forget_expired = False
        self._prompting = False  # waiting for a line: output redraws the prompt
        self.moderation = ConsoleModeration(self)  # /appeal, /appeals, /lift, … (admins)

    def say(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K")
        self.out.write(text + "\n")
        if self.tty and self._prompting:
            self.out.write(PROMPT)  # output arrived while typing: show where to type again
        self.out.flush()

    def _prompt(self) -> None:
        """Show the input prompt (on a terminal; piped output stays plain)."""
        self._prompting = True
        if self.tty:
            self.out.write(PROMPT)
            self.out.flush()

    def status(self, text: str) -> None:
        """A progress line: rewritten in place on a terminal, a plain line otherwise."""
        if self.tty:
            self.out.write("\r\x1b[K" + text + ("  " + PROMPT if self._prompting else ""))
            self.out.flush()
        else:
            self.say(text)

    async def run(self, lines: AsyncIterable[str] | Iterable[str]) -> None:
        """Handle lines until /quit or the end of input, then wait for running requests."""
        self.say(f"imagine-bot console — model {self.service.model_id}. /help for commands.")
        self._prompt()
        async for raw in _aiter(lines):
            self._prompting = False
            line = raw.strip()
            if line and line.split()[0].lower() in ("/quit", "/exit"):
                break
            if line:
                await self.handle(line)
            self._prompt()
        self._prompting = False
        if self._tasks:
            self.say(f"Waiting for {len(self._tasks)} running request(s)…")
            # wait, not gather: if this task is cancelled (SIGTERM), the requests keep going
            await asyncio.wait(set(self._tasks))

    async def close(self, timeout: float = 30.0) -> None:
        """Let requests whose outcome is known finish printing and delivering (bounded).

        Call after the queue and the service have settled, before the database closes, so a
        finished batch is delivered and marked delivered exactly once.
        """
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def handle(self, line: str) -> None:
        """One command; user errors are printed, anything else is logged with a reference."""
        try:
            await self._dispatch(line)
        except ImagineError as err:
            self.say(str(err))
        except Exception:
            ref = new_reference()
            logger.exception("console command %r failed (reference %s)", line[:80], ref)
            self.say(apology(ref))

    # -- following jobs ------------------------------------------------------------------------

    def follow(self, ticket: Ticket) -> None:
        """Show the ticket's progress and write its images, in the background."""
        if ticket.cached:
            self.say(f"{ticket.job_id}: already made; sending the stored images.")
        else:
            self.say(f"{ticket.job_id}: queued, position {ticket.position} "
                     f"({eta_phrase(ticket.eta, ticket.eta_measured)})")
        task = asyncio.create_task(self._watch(ticket), name=f"console-{ticket.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, ticket: Ticket) -> None:
        try:
            last_position = ticket.position
            started = False
            preview: Path | None = None  # where the live preview is written (overwritten as the image forms)
            async for update in ticket.updates():
                if isinstance(update, Queued) and update.position != last_position:
                    last_position = update.position
                    self.status(f"{ticket.job_id}: queued, position {update.position} "
                                f"({eta_phrase(update.eta, update.measured)})")
                elif isinstance(update, Running):
                    if update.preview is not None:
                        path = await asyncio.to_thread(self._write_preview, ticket.job_id, update.preview)
                        if preview is None:
                            self.say(f"{ticket.job_id}: preview saved: {path} (updated as the image forms)")
                        preview = path
                    if self.tty:
                        self.status(f"{ticket.job_id}: step {update.step}/{update.steps}")
                    elif not started:
                        self.say(f"{ticket.job_id}: generating…")
                    started = True
                elif isinstance(update, Finished):
                    await self.deliver(update.delivery)
                elif isinstance(update, (Failed, Cancelled)):
                    self.say(f"{ticket.job_id}: {update.message}")
                    await self.service.mark_told(ticket.job_id)
                if update.final and preview is not None:
                    preview.unlink(missing_ok=True)  # the result (or the message) takes its place
        except Exception:
            ref = new_reference()
            logger.exception("console delivery of %s failed (reference %s)", ticket.job_id, ref)
            self.say(f"Sorry, {ticket.job_id} could not be shown (reference {ref}).")

    async def deliver(self, delivery: Delivery) -> list[Path]:
        """Copy the images to the output folder, print their paths, mark the job delivered."""
        paths = await asyncio.to_thread(self._copy, delivery)
        note = " (already made earlier: no quota used)" if delivery.cached else ""
        self.say(f"{delivery.job_id}: done{note} — {delivery.text}")
        for image, path in zip(delivery.images, paths):
            self.say(f"  [{image.index + 1}] image {image.image_id} = {delivery.job_id}-{image.index + 1}, "
                     f"seed {image.seed}: {path}")
        if len(paths) > len(delivery.images):  # an edit: the mask that was used, over the source
            self.say(f"  the region repainted (red): {paths[-1]}")
        self.say(actions_line(delivery))
        await self.service.mark_delivered(delivery.job_id)
        return paths

    def _write_preview(self, job_id: str, data: bytes) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{job_id}-preview.jpg"
        path.write_bytes(data)
        return path.resolve()

    def _copy(self, delivery: Delivery) -> list[Path]:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for image in delivery.images:
            dest = self.output_dir / f"{delivery.job_id}-{image.index + 1}{image.path.suffix}"
            shutil.copyfile(image.path, dest)
            paths.append(dest.resolve())
        shown = mask_overlay(delivery)
        if shown is not None:
            dest = self.output_dir / f"{delivery.job_id}-mask.jpg"
            dest.write_bytes(shown)
            paths.append(dest.resolve())
        return paths

    def remove_copies(self, job_ids: Sequence[str]) -> int:
        """Delete the images :meth:`deliver` wrote for ``job_ids`` (after /forget); how many."""
        removed = 0
        for job_id in job_ids:
            for path in self.output_dir.glob(f"{glob.escape(job_id)}-*"):
                if re.fullmatch(rf"{re.escape(job_id)}-\d+\.\w+", path.name) and path.is_file():
                    path.unlink()
                    removed += 1
        return removed

    async def resume(self, recovered: Recovered) -> None:
        """Deliver results and failures owed from before a restart; follow re-run jobs (console targets)."""
        for untold in recovered.untold:
            if untold.target.get("console"):
                self.say(f"{untold.job_id}: {untold.message} ({untold.text})")
                await self.service.mark_told(untold.job_id)
        for delivery in recovered.deliveries:
            if delivery.target.get("console"):
                await self.deliver(delivery)
        for ticket in recovered.tickets:
            if ticket.target.get("console"):
                self.follow(ticket)


async def run_console(
    service: ImagineService,
    *,
    who: Who,
    output_dir: str | Path,
    lines: AsyncIterable[str] | Iterable[str] | None = None,
    out: TextIO | None = None,
    recovered: Recovered | None = None,
) -> None:
    """Run the terminal chat until /quit or end of input (stdin unless ``lines`` is given)."""
    console = Console(service, who=who, output_dir=Path(output_dir), out=out or sys.stdout)
    if recovered is not None:
        await console.resume(recovered)
    await console.run(stdin_lines() if lines is None else lines)
