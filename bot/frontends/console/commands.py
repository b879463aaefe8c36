"""What the console's commands do (a line without a slash is an /imagine).

:class:`CommandHandlers` is a part of :class:`~bot.frontends.console.front.Console`; the
moderation commands are :mod:`bot.frontends.console.moderation`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.frontends.common import (
    FORGET_WARNING,
    UNLINKED,
    api_key_text,
    forgotten_counts,
    image_ref,
    link_code_text,
    linked_text,
    on_off,
    quota_text,
    settings_changes,
    share_image,
    stats_lines,
    upload_too_large,
    web_link_text,
)
from bot.frontends.console.moderation import MODERATION_COMMANDS, ConsoleModeration
from bot.options import help_text
from bot.service import ImagineService, Ticket, Who
from generation.core.errors import InvalidRequest

__all__ = ["COMMANDS", "CommandHandlers"]

COMMANDS = """Commands:
  /imagine PROMPT [options]   make images (a line without a slash does the same);
                              --image PATH starts from a picture, --strength 0.4 how much changes
  /history [SEARCH]           your recent requests and their image ids
  /rate IMAGE STARS           rate an image 1-5 (IMAGE: its number, or JOB-N as the API names it)
  /comment IMAGE WORDS         after rating it: a comment beside your rating
  /quota                      images left in this quota window (hour, day or week)
  /settings [key=value ...]   show or change defaults: aspect, style, count, steps, private, refine, model
  /cancel [JOB]               cancel your latest (or the given) queued/running request
  /reroll JOB                 the same request with a new seed
  /variation JOB N            variations of image N of a request
  /upscale JOB N [subtle|creative]   image N at twice the size (costs quota.upscale_cost)
  /zoom JOB N 1.5|2 [PROMPT]  zoom out of image N (a new prompt is allowed)
  /pan JOB N left|right|up|down [PROMPT]   extend image N to that side
  /forget                     delete everything stored about you, and its images in the output
                              folder (asks to confirm: /forget confirm as the next command)
  /export                     a zip of your data and images
  /share JOB N | /unshare JOB N   put image N of a request in the public web gallery, or take it out
                              (or name the image: JOB-N, or its number from /history)
  /link [CODE]                without a code: a one-time code to enter on another platform;
                              with one: join that platform's account (shared quota and history)
  /unlink                     stop sharing an account with another platform
  /apikey [list | revoke ID]  a new key for the HTTP API (shown once), your keys, or revoke one
  /web                        a one-time sign-in link to the web studio (10 minutes)
  /appeal [MESSAGE]           ask an admin to review your strikes, cooldown or block
  /loras                      the LoRA adapters: names, trigger words, base model
  /models                     the bot's models (--model NAME picks one): share, images, ratings, speed
  /help                       this text and the /imagine options
  /quit                       leave (waits for running requests)
Admin (PLATFORM:USER is e.g. discord:1234, telegram:5678, cli:alice):
  /admin stats                jobs, images, users and the queue
  /admin quota PLATFORM:USER LIMIT|default   a user's own images per window
  /admin block PLATFORM:USER  refuse a user's requests;  /admin unblock PLATFORM:USER
  /models compare A B | promote NAME [SHARE] | retire NAME   ratings compared; rollout shares, live
  /appeals                    open appeals, oldest first
  /lift APPEAL|PLATFORM:USER  lift a block, cooldown and strikes (closes the appeal)
  /reject APPEAL              close an appeal without lifting
  /strikes PLATFORM:USER      a user's strikes, cooldown and block
  /policy [SCOPE] [explicit=block|spoiler] [allow=CATEGORY,...]   show or set a scope's policy
  /modlog [PLATFORM:USER]     the newest moderation decisions"""


_IMAGE_FLAG = re.compile(r"""(?:^|\s)--image(?:=|\s+)("[^"]*"|'[^']*'|\S+)""", re.IGNORECASE)


def split_image_flag(text: str) -> tuple[str, str | None]:
    """``--image PATH`` taken out of a terminal line: (the rest, PATH or None). PATH may be quoted."""
    match = _IMAGE_FLAG.search(text)
    if match is None:
        if re.search(r"(?:^|\s)--image\s*$", text, re.IGNORECASE):
            raise InvalidRequest("image", "--image needs the path of a picture, e.g. --image photo.jpg")
        return text, None
    path = match.group(1)
    if path[:1] in "\"'" and path[-1:] == path[:1] and len(path) > 1:
        path = path[1:-1]
    return (text[:match.start()] + " " + text[match.end():]).strip(), path


def read_image_file(path: str) -> bytes:
    """The bytes of a local picture for ``--image`` (InvalidRequest saying what is wrong)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidRequest("image", f"There is no file {path!r}; give the path of a PNG, JPEG or WebP picture.")
    size = file.stat().st_size
    too_large = upload_too_large(size)
    if too_large:
        raise InvalidRequest("image", too_large)
    return file.read_bytes()


class CommandHandlers:
    """The slash commands (a part of the console: needs its service, user and output)."""

    service: ImagineService
    who: Who
    moderation: ConsoleModeration
    _confirm_forget: bool
    _forget_expired: bool  # a /forget was asked, then another command came first

    if TYPE_CHECKING:  # provided by the console
        def say(self, text: str) -> None: ...

        def follow(self, ticket: Ticket) -> None: ...

        def remove_copies(self, job_ids: Sequence[str]) -> int: ...

    async def _dispatch(self, line: str) -> None:
        if not line.startswith("/"):
            line = "/imagine " + line
        command, _, rest = line.partition(" ")
        command = command.lower()
        rest = rest.strip()
        args = rest.split()
        if command != "/forget" and self._confirm_forget:
            self._confirm_forget, self._forget_expired = False, True
        if command == "/imagine":
            rest, path = split_image_flag(rest)  # --image PATH: start from a local picture
            image = await asyncio.to_thread(read_image_file, path) if path else None
            ticket = await self.service.imagine(self.who, rest, target={"console": True}, image=image)
            for note in ticket.notes:  # --refine: the refined prompt, or why the user's own was used
                self.say(note)
            self.follow(ticket)
        elif command == "/loras":
            self.say(self.service.loras_text())
        elif command == "/help":
            self.say(COMMANDS + "\n\n" + help_text(self.service.caps))
        elif command == "/history":
            await self._history(rest)
        elif command == "/rate":
            if len(args) != 2:
                self.say("Usage: /rate IMAGE STARS (1-5); IMAGE is its number (/history) or JOB-N")
                return
            rating = await self.service.rate(self.who, args[0], args[1], source="command")
            self.say(f"Rated image {rating.image_id}: {'★' * rating.stars}")
        elif command == "/comment":
            image_id, _, words = rest.partition(" ")
            if not image_id or not words.strip():
                self.say("Usage: /comment IMAGE WORDS (rate the image first); IMAGE is its number or JOB-N")
                return
            rating = await self.service.comment(self.who, image_id, words)
            self.say(f"💬 Comment kept beside your {rating.stars}★ rating of image {rating.image_id}.")
        elif command == "/quota":
            used, limit, remaining, resets_at = await self.service.quota(self.who)
            self.say(quota_text(used, limit, remaining, self.service.config.quota_window,
                                f"{resets_at:%Y-%m-%d %H:%M} UTC"))
        elif command == "/admin":
            await self._admin(args)
        elif command == "/models":
            self.say(await self.service.models_command(self.who, rest))
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
        elif command == "/upscale":
            mode = args[2].lower() if len(args) == 3 else "subtle"
            if len(args) not in (2, 3) or not args[1].isdecimal() or int(args[1]) < 1:
                self.say("Usage: /upscale JOB N [subtle|creative] (N is the image number, from 1)")
                return
            ticket = await self.service.upscale(self.who, args[0], int(args[1]) - 1, mode, target={"console": True})
            self.follow(ticket)
        elif command in ("/zoom", "/pan"):
            kind = command[1:]
            if len(args) < 3 or not args[1].isdecimal() or int(args[1]) < 1:
                self.say(f"Usage: {command} JOB N {'1.5|2' if kind == 'zoom' else 'left|right|up|down'} [new prompt]")
                return
            ticket = await self.service.outpaint(self.who, args[0], int(args[1]) - 1, kind, args[2].lower(),
                                                 prompt=" ".join(args[3:]) or None, target={"console": True})
            self.follow(ticket)
        elif command == "/forget":
            if args[:1] == ["confirm"] and self._confirm_forget:
                outcome = await self.service.forget(self.who)
                self._confirm_forget = False
                copies = await asyncio.to_thread(self.remove_copies, outcome.job_ids)
                self.say(f"Forgotten: everything about you is deleted {forgotten_counts(outcome, copies)}")
            else:
                expired = args[:1] == ["confirm"] and self._forget_expired
                self._confirm_forget, self._forget_expired = True, False
                self.say(("That confirmation expired: /forget confirm must be the very next command after "
                          "/forget. " if expired else "") + f"{FORGET_WARNING} Type /forget confirm to go ahead.")
        elif command == "/export":
            path = await self.service.export(self.who)
            self.say(f"Your data: {path}")
        elif command == "/web":
            self.say(web_link_text(await self.service.web_signin_link(self.who)))
        elif command in ("/share", "/unshare", "/link", "/unlink", "/apikey"):
            await self._web_command(command, args)
        elif command in MODERATION_COMMANDS:
            await self.moderation.run(command, rest, args)
        else:
            self.say(f"Unknown command {command}. /help lists the commands.")

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
                self.say(f"      image {shown.image.image_id} = {entry.job_id}-{shown.image.index + 1} "
                         f"(seed {shown.image.seed}){stars}")

    async def _admin(self, args: list[str]) -> None:
        """/admin stats | quota USER LIMIT|default | block USER | unblock USER (the service checks who)."""
        sub = args[0].lower() if args else ""
        user = args[1].split(":", 1) if len(args) > 1 else []
        if sub == "stats" and len(args) == 1:
            stats = await self.service.admin_stats(self.who)
            for line in stats_lines(stats):
                self.say(f"  {line}")
        elif sub == "quota" and len(args) == 3 and len(user) == 2 and all(user) \
                and (args[2].isdecimal() or args[2] == "default"):
            limit = None if args[2] == "default" else int(args[2])
            status = await self.service.admin_set_quota(self.who, user[0], user[1], limit)
            self.say(f"{args[1]}: {status.limit} images per window"
                     + (" (the default)" if limit is None else "") + f"; {status.remaining} left now.")
        elif sub in ("block", "unblock") and len(args) == 2 and len(user) == 2 and all(user):
            if sub == "block":
                await self.service.admin_block(self.who, user[0], user[1])
            else:
                await self.service.admin_unblock(self.who, user[0], user[1])
            self.say(f"{args[1]} is {sub}ed.")
        else:
            self.say("Usage: /admin stats | /admin quota PLATFORM:USER LIMIT|default | "
                     "/admin block PLATFORM:USER | /admin unblock PLATFORM:USER")

    async def _settings(self, rest: str) -> None:
        changes = settings_changes(rest)
        if changes is None:
            self.say("Usage: /settings key=value … (keys: aspect, style, count, steps, private, refine, model)")
            return
        current = await self.service.settings(self.who, **changes)
        self.say(("Saved. " if changes else "") + "Your settings: "
                 + ", ".join(f"{k}={on_off(v)}" for k, v in current.items()))

    async def _web_command(self, command: str, args: list[str]) -> None:
        """The web gallery, account linking and API keys."""
        if command in ("/share", "/unshare"):
            ref = image_ref(args)
            if ref is None:
                self.say(f"Usage: {command} JOB N (N is the image number, from 1), or {command} JOB-N, "
                         f"or {command} IMAGE (its number from /history)")
            else:
                self.say(await share_image(self.service, self.who, ref, command == "/share"))
        elif command == "/link":
            if not args:
                self.say(link_code_text(await self.service.link_code(self.who)))
            else:
                self.say(linked_text(await self.service.link(self.who, args[0])))
        elif command == "/unlink":
            self.say(UNLINKED[await self.service.unlink(self.who)])
        elif args[:1] == ["revoke"] and len(args) == 2 and args[1].isdecimal():
            self.say(await api_key_text(self.service, self.who, "revoke", int(args[1])))
        elif args[:1] == ["list"]:
            self.say(await api_key_text(self.service, self.who, "list"))
        elif args:
            self.say("Usage: /apikey (a new key) | /apikey list | /apikey revoke ID")
        else:
            self.say(await api_key_text(self.service, self.who, "new"))
