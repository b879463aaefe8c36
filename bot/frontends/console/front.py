"""Terminal chat front end: type /imagine lines, get PNG files in an output folder.

Thin on purpose: every command is one :class:`~bot.service.ImagineService` call and some
printing. A line without a leading slash is an ``/imagine``. Several requests can run at once:
each accepted one is followed by its own task that shows progress and writes
``<output_dir>/<job>-<n>.png`` when it is done, then marks the job delivered.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import shutil
import sys
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import TextIO

from bot.options import help_text
from bot.service import (
    Cancelled,
    Delivery,
    Failed,
    Finished,
    ImagineService,
    Queued,
    Recovered,
    Running,
    Ticket,
    Who,
)
from generation.errors import ImagineError

__all__ = ["COMMANDS", "Console", "run_console", "stdin_lines"]

_MODERATION = ("/appeal", "/appeals", "/lift", "/reject", "/strikes", "/policy", "/modlog")

logger = logging.getLogger(__name__)

COMMANDS = """Commands:
  /imagine PROMPT [options]   make images (a line without a slash does the same)
  /history [SEARCH]           your recent requests and their image ids
  /rate IMAGE_ID STARS        rate an image 1-5
  /quota                      images left today
  /settings [key=value ...]   show or change defaults: aspect, style, count, steps, private
  /cancel [JOB]               cancel your latest (or the given) queued/running request
  /reroll JOB                 the same request with a new seed
  /variation JOB N            variations of image N of a request
  /forget                     delete everything stored about you (asks to confirm)
  /export                     a zip of your data and images
  /appeal [MESSAGE]           ask an admin to review your strikes, cooldown or block
  /help                       this text and the /imagine options
  /quit                       leave (waits for running requests)
Admin:
  /appeals                    open appeals, oldest first
  /lift APPEAL|PLATFORM:USER  lift a block, cooldown and strikes (closes the appeal)
  /reject APPEAL              close an appeal without lifting
  /strikes PLATFORM:USER      a user's strikes, cooldown and block
  /policy [SCOPE] [explicit=block|spoiler] [allow=CATEGORY,...]   show or set a scope's policy
  /modlog [PLATFORM:USER]     the newest moderation decisions"""


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


class Console:
    """One terminal user's chat session with the service."""

    def __init__(self, service: ImagineService, *, who: Who, output_dir: Path, out: TextIO) -> None:
        self.service = service
        self.who = who
        self.output_dir = Path(output_dir)
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._tasks: set[asyncio.Task[None]] = set()
        self._confirm_forget = False

    def say(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K")
        self.out.write(text + "\n")
        self.out.flush()

    def status(self, text: str) -> None:
        """A progress line: rewritten in place on a terminal, a plain line otherwise."""
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
        else:
            self.say(text)

    async def run(self, lines: AsyncIterable[str] | Iterable[str]) -> None:
        """Handle lines until /quit or the end of input, then wait for running requests."""
        self.say(f"imagine-bot console — model {self.service.model_id}. /help for commands.")
        async for raw in _aiter(lines):
            line = raw.strip()
            if not line:
                continue
            if line.split()[0].lower() in ("/quit", "/exit"):
                break
            await self.handle(line)
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
            ref = uuid.uuid4().hex[:8]
            logger.exception("console command %r failed (reference %s)", line[:80], ref)
            self.say(f"Sorry, something went wrong (reference {ref}).")

    async def _dispatch(self, line: str) -> None:
        if not line.startswith("/"):
            line = "/imagine " + line
        command, _, rest = line.partition(" ")
        command = command.lower()
        rest = rest.strip()
        args = rest.split()
        if command != "/forget":
            self._confirm_forget = False
        if command == "/imagine":
            self.follow(await self.service.imagine(self.who, rest, target={"console": True}))
        elif command == "/help":
            self.say(COMMANDS + "\n\n" + help_text(self.service.caps))
        elif command == "/history":
            await self._history(rest)
        elif command == "/rate":
            if len(args) != 2:
                self.say("Usage: /rate IMAGE_ID STARS (1-5)")
                return
            rating = await self.service.rate(self.who, args[0], args[1], source="command")
            self.say(f"Rated image {rating.image_id}: {'★' * rating.stars}")
        elif command == "/quota":
            used, limit, remaining, resets_at = await self.service.quota(self.who)
            self.say(f"Used {used} of {limit} images; {remaining} left. Resets {resets_at:%Y-%m-%d %H:%M} UTC.")
        elif command == "/settings":
            await self._settings(rest)
        elif command == "/cancel":
            outcome = await self.service.cancel(self.who, args[0] if args else None)
            self.say(f"Cancelled {outcome.job_id} ({outcome.text}); {outcome.refunded} image(s) refunded.")
        elif command == "/reroll":
            if len(args) != 1:
                self.say("Usage: /reroll JOB")
                return
            self.follow(await self.service.reroll(self.who, args[0], target={"console": True}))
        elif command == "/variation":
            if len(args) != 2 or not args[1].isdecimal() or int(args[1]) < 1:
                self.say("Usage: /variation JOB N (N is the image number, from 1)")
                return
            ticket = await self.service.variation(self.who, args[0], int(args[1]) - 1, target={"console": True})
            self.follow(ticket)
        elif command == "/forget":
            if args[:1] == ["confirm"] and self._confirm_forget:
                outcome = await self.service.forget(self.who)
                self._confirm_forget = False
                self.say(f"Forgotten: everything about you is deleted "
                         f"({outcome.jobs_cancelled} running request(s) cancelled, "
                         f"{outcome.files_deleted} file(s) removed).")
            else:
                self._confirm_forget = True
                self.say("This deletes your history, ratings, settings and images for good. "
                         "Type /forget confirm to go ahead.")
        elif command == "/export":
            path = await self.service.export(self.who)
            self.say(f"Your data: {path}")
        elif command in _MODERATION:
            await self._moderation(command, rest, args)
        else:
            self.say(f"Unknown command {command}. /help lists the commands.")

    async def _moderation(self, command: str, rest: str, args: list[str]) -> None:
        """/appeal and the admins' moderation commands."""
        moderation = self.service.moderation
        if command == "/appeal":
            appeal = await moderation.appeal(self.who, rest)
            self.say(f"Appeal #{appeal.id} filed; an admin will review it.")
        elif command == "/appeals":
            found = await moderation.appeals(self.who)
            self.say("No open appeals." if not found else f"{len(found)} open appeal(s):")
            for a in found:
                self.say(f"  #{a.id} {a.user_key} {a.created_at[:16].replace('T', ' ')} "
                         f"{a.state or 'strikes'} ({a.strikes} strike(s)) {a.message!r}")
        elif command == "/lift" and len(args) == 1:
            standing = await moderation.lift(self.who, args[0])
            self.say(f"Lifted {standing.user_key}: no block, no cooldown, strikes reset.")
        elif command == "/reject" and len(args) == 1:
            appeal = await moderation.reject(self.who, args[0].lstrip("#"))
            self.say(f"Appeal #{appeal.id} of {appeal.user_key} rejected.")
        elif command == "/strikes" and len(args) == 1:
            s = await moderation.user_standing(self.who, args[0])
            until = f"{s.cooldown_until:%Y-%m-%d %H:%M} UTC" if s.cooldown_until else "none"
            self.say(f"{s.user_key}: {s.strikes} strike(s), cooldown {until}, "
                     f"{'blocked' if s.blocked else 'not blocked'}"
                     + (f", appeal #{s.appeal.id} open" if s.appeal else ""))
        elif command == "/policy":
            await self._policy(args)
        elif command == "/modlog" and len(args) <= 1:
            for e in await moderation.decisions(self.who, args[0] if args else None):
                self.say(f"  {e.created_at[:19].replace('T', ' ')} {e.user_key} {e.kind} {e.action}"
                         f" {e.rule or ''} scope={e.scope}" + (f" about={e.subject}" if e.subject else ""))
        else:
            self.say(f"Usage: see /help ({command}).")

    async def _policy(self, args: list[str]) -> None:
        scope = "*"
        if args and "=" not in args[0]:
            scope, args = args[0], args[1:]
        changes: dict[str, object] = {}
        for pair in args:
            key, eq, value = pair.partition("=")
            if key == "explicit" and eq:
                changes["explicit"] = value
            elif key == "allow" and eq:
                changes["allow"] = [c.strip() for c in value.replace("_", " ").split(",") if c.strip()]
            else:
                self.say("Usage: /policy [SCOPE] [explicit=block|spoiler] [allow=CATEGORY,...]")
                return
        moderation = self.service.moderation
        if changes:
            policy = await moderation.set_policy(self.who, scope, **changes)  # type: ignore[arg-type]
        else:
            policy = await moderation.policy_for(scope)
        self.say(f"Policy of {scope}: explicit images {policy.explicit}; "
                 f"allowed prompt categories: {', '.join(policy.allow) or 'none'}")

    async def _history(self, search: str) -> None:
        view = await self.service.history(self.who, search=search or None)
        if not view.entries:
            self.say("No requests found." if search else "You have no requests yet.")
            return
        self.say(f"Your requests ({view.total} in all, newest first):")
        for entry in view.entries:
            self.say(f"  {entry.job_id}  {entry.created_at[:16].replace('T', ' ')}  {entry.status:<9}  {entry.text}")
            for shown in entry.images:
                stars = f" your rating {shown.my_stars}★" if shown.my_stars else ""
                self.say(f"      image {shown.image.image_id} (#{shown.image.index + 1}, seed {shown.image.seed}){stars}")

    async def _settings(self, rest: str) -> None:
        changes: dict[str, str] = {}
        for pair in shlex.split(rest):
            key, eq, value = pair.partition("=")
            if not eq:
                self.say("Usage: /settings key=value … (keys: aspect, style, count, steps, private)")
                return
            changes[key.strip().lower()] = value
        current = await self.service.settings(self.who, **changes)
        self.say(("Saved. " if changes else "") + "Your settings: "
                 + ", ".join(f"{k}={'on' if v is True else 'off' if v is False else v}" for k, v in current.items()))

    # -- following jobs ------------------------------------------------------------------------

    def follow(self, ticket: Ticket) -> None:
        """Show the ticket's progress and write its images, in the background."""
        if ticket.cached:
            self.say(f"{ticket.job_id}: already made; sending the stored images.")
        else:
            self.say(f"{ticket.job_id}: queued, position {ticket.position} (~{ticket.eta:.0f} s)")
        task = asyncio.create_task(self._watch(ticket), name=f"console-{ticket.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, ticket: Ticket) -> None:
        try:
            last_position = ticket.position
            started = False
            async for update in ticket.updates():
                if isinstance(update, Queued) and update.position != last_position:
                    last_position = update.position
                    self.status(f"{ticket.job_id}: queued, position {update.position} (~{update.eta:.0f} s)")
                elif isinstance(update, Running):
                    if self.tty:
                        self.status(f"{ticket.job_id}: step {update.step}/{update.steps}")
                    elif not started:
                        self.say(f"{ticket.job_id}: generating…")
                    started = True
                elif isinstance(update, Finished):
                    await self.deliver(update.delivery)
                elif isinstance(update, (Failed, Cancelled)):
                    self.say(f"{ticket.job_id}: {update.message}")
        except Exception:
            ref = uuid.uuid4().hex[:8]
            logger.exception("console delivery of %s failed (reference %s)", ticket.job_id, ref)
            self.say(f"Sorry, {ticket.job_id} could not be shown (reference {ref}).")

    async def deliver(self, delivery: Delivery) -> list[Path]:
        """Copy the images to the output folder, print their paths, mark the job delivered."""
        paths = await asyncio.to_thread(self._copy, delivery)
        note = " (already made earlier: no quota used)" if delivery.cached else ""
        self.say(f"{delivery.job_id}: done{note} — {delivery.text}")
        for image, path in zip(delivery.images, paths):
            self.say(f"  [{image.index + 1}] image {image.image_id} seed {image.seed}: {path}")
        await self.service.mark_delivered(delivery.job_id)
        return paths

    def _copy(self, delivery: Delivery) -> list[Path]:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for image in delivery.images:
            dest = self.output_dir / f"{delivery.job_id}-{image.index + 1}{image.path.suffix}"
            shutil.copyfile(image.path, dest)
            paths.append(dest.resolve())
        return paths

    async def resume(self, recovered: Recovered) -> None:
        """Deliver results owed from before a restart and follow re-run jobs (console targets)."""
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
