"""Discord slash commands and what they and the buttons do.

Each command or click is one :class:`~bot.service.ImagineService` call plus Discord messages::

    /imagine prompt [aspect count seed negative style lora refine image strength model]
                        flags in the prompt work too (--ar …); aspect: a short list, or type any W:H
    /history [search]   your requests as paged embeds, sent by DM
    /quota  /settings [aspect style count private model]  /cancel [job]  /forget  /export  /models
    /admin quota|block|unblock|stats                  only for ids in the config's admins

The moderation commands (/appeal, /admin appeals|lift|reject|strikes|policy|modlog) are in
:mod:`bot.frontends.discord.moderation`. :class:`CommandHandlers` is a part of
:class:`~bot.frontends.discord.front.DiscordFrontEnd`; :func:`build_commands` binds the slash
commands to it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.frontends.common import (
    FORGET_WARNING,
    clip,
    forgotten_counts,
    on_off,
    quota_text,
    render_single,
    upload_too_large,
)
from bot.frontends.discord.messages import (DM_LIMIT, DMS_CLOSED, DMS_CLOSED_TEXT, PLATFORM, RATE_HINT, file_of, via_of,
                                            who_of)
from bot.frontends.discord.models import model_choices, model_commands
from bot.frontends.discord.moderation import DiscordModeration
from bot.frontends.discord.views import forget_view, history_page, upscale_view
from bot.options import parse_imagine
from bot.service import ImagineService, Who
from generation.core.errors import ImagineError, InvalidRequest
from generation.core.request import MAX_COUNT, MAX_SEED
from generation.core.styles import STYLES

__all__ = ["CommandHandlers", "build_commands"]


class CommandHandlers:
    """The slash commands and buttons (a part of the front end: needs its service and delivery)."""

    service: ImagineService
    moderation: DiscordModeration

    if TYPE_CHECKING:  # provided by the front end and by Delivering
        async def guard(self, interaction: discord.Interaction, action: Callable[[], Awaitable[None]],
                        *, remove_thinking: bool = False) -> None: ...

        async def accept(self, interaction: discord.Interaction, kind: str, **fields: Any) -> None: ...

    # -- /imagine, reroll, variation -----------------------------------------------------------

    async def imagine(self, interaction: discord.Interaction, prompt: str,
                      image: discord.Attachment | None = None, **options: Any) -> None:
        """Check the options; store, defer, submit, follow the job (see :mod:`~.intake`).

        An attached ``image`` is downloaded after the deferral (its URL is stored with the
        request) and checked by the service before anything is charged.
        """
        typed = {k: v for k, v in options.items() if v is not None}
        try:  # pure and fast: a typo gets an ephemeral answer before anything is public
            too_large = upload_too_large(image.size) if image is not None else None
            if too_large:
                raise InvalidRequest("image", too_large)
            size = (image.width or 1, image.height or 1) if image is not None else None
            parse_imagine(prompt, caps=self.service.caps, models=self.service.parse_models, image_size=size, **typed)
        except InvalidRequest as err:
            await interaction.response.send_message(str(err), ephemeral=True)
            return
        extra = {"image": {"url": image.url, "filename": image.filename, "size": image.size}} if image else {}
        await self.accept(interaction, "imagine", prompt=prompt, options=typed, **extra)

    async def on_reroll(self, interaction: discord.Interaction, job_id: str) -> None:
        """🔄: a new message follows the rerolled job (the service checks the clicked message)."""
        await self.accept(interaction, "reroll", job_id=job_id)

    async def on_variation(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        """V1…V4: a new message follows the variation job."""
        await self.accept(interaction, "variation", job_id=job_id, index=index)

    async def on_tool(self, interaction: discord.Interaction, action: str, job_id: str, index: int) -> None:
        """Upscale, zoom out or pan under one image: a new message follows the new job."""
        await self.accept(interaction, "tool", job_id=job_id, index=index, action=action)

    # -- buttons -------------------------------------------------------------------------------

    async def on_upscale(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        """U1…U4: post image ``index`` of the job alone, at full size."""
        await interaction.response.defer(thinking=True)

        async def post() -> None:
            delivery = await self.service.job_delivery(who_of(interaction.user), job_id, via=via_of(interaction),
                                                       index=index)
            image = next((i for i in delivery.images if i.index == index), None)
            if image is None:
                raise ImagineError(f"That request has no image {index + 1}.")
            data, ext = await asyncio.to_thread(render_single, image.path, interaction.filesize_limit)
            content = (f"**{clip(delivery.text, 1500)}** — image #{index + 1} (seed {image.seed}) — "
                       f"<@{interaction.user.id}>\n{RATE_HINT}")
            message = await interaction.edit_original_response(
                content=content, attachments=[file_of(data, f"{job_id}-{index + 1}.{ext}", image.spoiler)],
                view=upscale_view(job_id, index))
            await self.service.remember_message(job_id, PLATFORM, None, message.id, index=index)

        await self.guard(interaction, post, remove_thinking=True)

    async def on_delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """🗑: delete the message, if the clicker asked for it (or is an admin)."""
        async def delete() -> None:
            if not await self.service.owns(who_of(interaction.user), job_id):
                await interaction.response.send_message("Only the person who asked for these images can "
                                                        "delete them.", ephemeral=True)
                return
            await interaction.response.defer()
            await interaction.delete_original_response()

        await self.guard(interaction, delete)

    async def on_forget(self, interaction: discord.Interaction, confirm: bool, user_id: int) -> None:
        """The /forget confirmation buttons."""
        async def answer() -> None:
            if interaction.user.id != user_id:
                await interaction.response.send_message("This is not your confirmation.", ephemeral=True)
                return
            if not confirm:
                await interaction.response.edit_message(content="Nothing was deleted.", view=None)
                return
            await interaction.response.defer()
            outcome = await self.service.forget(who_of(interaction.user))
            await interaction.edit_original_response(
                content=("Forgotten: your history, ratings, settings and images are deleted "
                         f"{forgotten_counts(outcome)}"), view=None)

        await self.guard(interaction, answer)

    async def on_history_page(self, interaction: discord.Interaction, page: int, search: str) -> None:
        """◀ ▶ on a /history message: show that page in place."""
        await interaction.response.defer()

        async def show() -> None:
            content, embeds, files, view = await self._history(who_of(interaction.user), page, search)
            await interaction.edit_original_response(
                content=content, embeds=embeds, attachments=[file_of(d, n) for n, d in files], view=view)

        await self.guard(interaction, show)

    # -- other commands ------------------------------------------------------------------------

    async def _history(self, who: Who, page: int, search: str) -> tuple[str, list[discord.Embed],
                                                                          list[tuple[str, bytes]], Any]:
        view = await self.service.history(who, page=page, per_page=5, search=search or None)
        return await asyncio.to_thread(history_page, view, search)

    async def history(self, interaction: discord.Interaction, search: str | None) -> None:
        """/history: the first page by DM (in a DM with the bot: right here)."""
        in_dm = interaction.guild_id is None
        await interaction.response.defer(ephemeral=not in_dm, thinking=True)

        async def send() -> None:
            who = who_of(interaction.user)
            content, embeds, files, view = await self._history(who, 0, search or "")
            if in_dm:
                kwargs: dict[str, Any] = {"content": content, "embeds": embeds,
                                          "attachments": [file_of(d, n) for n, d in files]}
                if view is not None:
                    kwargs["view"] = view
                await interaction.edit_original_response(**kwargs)
                return
            try:
                kwargs = {"embeds": embeds, "files": [file_of(d, n) for n, d in files]}
                if view is not None:
                    kwargs["view"] = view
                await interaction.user.send(content, **kwargs)
            except discord.Forbidden as err:
                if err.code != DMS_CLOSED:
                    raise
                await self.service.set_dm_closed(who)
                await interaction.edit_original_response(content=DMS_CLOSED_TEXT)
                return
            await self.service.set_dm_closed(who, False)
            await interaction.edit_original_response(content="📬 Sent your history to your DMs.")

        await self.guard(interaction, send)

    async def quota(self, interaction: discord.Interaction) -> None:
        """/quota."""
        async def show() -> None:
            used, limit, remaining, resets_at = await self.service.quota(who_of(interaction.user))
            await interaction.response.send_message(quota_text(
                used, limit, remaining, self.service.config.quota_window,
                discord.utils.format_dt(resets_at, "R")), ephemeral=True)

        await self.guard(interaction, show)

    async def settings_command(self, interaction: discord.Interaction, **changes: Any) -> None:
        """/settings: change the given ones, show all."""
        async def save() -> None:
            given = {k: v for k, v in changes.items() if v is not None}
            current = await self.service.settings(who_of(interaction.user), **given)
            shown = ", ".join(f"{k}: {on_off(v)}" for k, v in current.items())
            await interaction.response.send_message(("Saved. " if given else "") + f"Your settings — {shown}.",
                                                    ephemeral=True)

        await self.guard(interaction, save)

    async def cancel(self, interaction: discord.Interaction, job: str | None) -> None:
        """/cancel."""
        await interaction.response.defer(ephemeral=True, thinking=True)

        async def run() -> None:
            outcome = await self.service.cancel(who_of(interaction.user), job or None)
            await interaction.followup.send(
                f"Cancelled {outcome.job_id} ({clip(outcome.text, 300)}); "
                f"{outcome.refunded} image(s) refunded.", ephemeral=True)

        await self.guard(interaction, run)

    async def forget(self, interaction: discord.Interaction) -> None:
        """/forget: ask first."""
        await interaction.response.send_message(
            f"{FORGET_WARNING} Are you sure?",
            view=forget_view(interaction.user.id), ephemeral=True)

    async def export(self, interaction: discord.Interaction) -> None:
        """/export: the zip by DM, unless it is over the upload limit."""
        await interaction.response.defer(ephemeral=True, thinking=True)

        async def run() -> None:
            who = who_of(interaction.user)
            path = await self.service.export(who)
            size = path.stat().st_size
            if size > DM_LIMIT:
                await interaction.followup.send(
                    f"Your export is {size / 2**20:.1f} MiB, over the {DM_LIMIT / 2**20:.0f} MiB upload "
                    f"limit, so I can't send it here. Ask the bot's operator for `{path.name}`.", ephemeral=True)
                return
            try:
                await interaction.user.send("Your data export (export.json and your images).",
                                            file=discord.File(path, filename=path.name))
            except discord.Forbidden as err:
                if err.code != DMS_CLOSED:
                    raise
                await self.service.set_dm_closed(who)
                await interaction.followup.send(DMS_CLOSED_TEXT, ephemeral=True)
                return
            await self.service.set_dm_closed(who, False)
            await interaction.followup.send("📬 Sent your export to your DMs.", ephemeral=True)

        await self.guard(interaction, run)

    async def admin(self, interaction: discord.Interaction, action: str, user: discord.User | None = None,
                    limit: int | None = None) -> None:
        """/admin subcommands (the service checks that the caller is an admin)."""
        async def run() -> None:
            me = who_of(interaction.user)
            if action == "stats":
                stats = await self.service.admin_stats(me)
                text = "```json\n" + clip(json.dumps(stats, indent=1, default=str), 1900) + "\n```"
            elif action == "quota":
                if user is None:
                    return
                status = await self.service.admin_set_quota(me, PLATFORM, user.id, limit)
                text = f"{user.mention} now has {status.limit} images per window ({status.used} used)."
            elif action == "block":
                if user is None:
                    return
                await self.service.admin_block(me, PLATFORM, user.id)
                text = f"{user.mention} is blocked."
            else:
                if user is None:
                    return
                await self.service.admin_unblock(me, PLATFORM, user.id)
                text = f"{user.mention} is unblocked."
            await interaction.response.send_message(text, ephemeral=True,
                                                    allowed_mentions=discord.AllowedMentions.none())

        await self.guard(interaction, run)


# -- app command definitions -------------------------------------------------------------------


async def _style_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    text = current.strip().lower()
    found = [s for s in STYLES.values() if text in s.name or text in s.description.lower()]
    return [app_commands.Choice(name=clip(f"{s.name} — {s.description}", 100), value=s.name) for s in found][:25]


def lora_choices(names: list[str], current: str) -> list[app_commands.Choice[str]]:
    """Completions of the typed ``lora`` option: the last name of a comma-separated list
    (``ink:0.8, ne`` offers ``ink:0.8, neon``)."""
    done, _, last = current.rpartition(",")
    head = f"{done.strip()}, " if done.strip() else ""
    chosen = {part.strip().split(":")[0].lower() for part in done.split(",")}
    word = last.strip().split(":")[0].lower()
    left = [name for name in names if name.lower() not in chosen and word in name.lower()]
    found = [head + name for name in sorted(left, key=lambda n: not n.lower().startswith(word))]
    return [app_commands.Choice(name=value, value=value) for value in found if len(value) <= 100][:25]


def aspect_choices(caps: Any, current: str) -> list[app_commands.Choice[str]]:
    """Completions of the typed ``aspect`` option: the named ratios that match, and what was typed
    when it is a ratio the bot takes (any W:H up to 4:1), with the size it gives."""
    text = current.strip()
    found = [app_commands.Choice(name=f"{ar} ({w}x{h})", value=ar) for ar, (w, h) in caps.sizes().items()
             if ar.startswith(text)]
    if text and text not in caps.sizes():
        try:
            width, height = caps.size_for(text)
        except InvalidRequest:
            pass
        else:
            found.insert(0, app_commands.Choice(name=f"{text} ({width}x{height})", value=text))
    return found[:25]


def build_commands(front: CommandHandlers) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    """The slash commands, bound to ``front``."""

    async def _aspect_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return aspect_choices(front.service.caps, current)

    async def _lora_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return lora_choices([name for name, _ in front.service.caps.loras], current)

    async def _model_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return model_choices(front.service, current)

    @app_commands.command(name="imagine", description="Make images from a prompt (flags like --ar 16:9 work too)")
    @app_commands.describe(prompt="What to draw; may include --ar W:H --seed N --no TEXT --n N --style NAME",
                           aspect="Aspect ratio", count="Number of images (1-4)", seed="Seed for repeatable images",
                           negative="What to avoid (negative prompt)", style="A style preset",
                           lora="LoRA adapters: name or name:0.8, comma-separated (/loras lists them)",
                           refine="Let a small language model write a detailed prompt from yours",
                           image="A picture to start from (PNG, JPEG or WebP, up to 20 MB)",
                           strength="With an image: how much of it changes, 0.1 (little) to 1 (all)",
                           model="Which of the bot's models draws it (/models lists them)")
    @app_commands.autocomplete(aspect=_aspect_autocomplete, style=_style_autocomplete, lora=_lora_autocomplete,
                               model=_model_autocomplete)
    async def imagine(interaction: discord.Interaction, prompt: str,
                      aspect: str | None = None,
                      count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
                      seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
                      negative: str | None = None, style: str | None = None,
                      lora: str | None = None, refine: bool | None = None,
                      image: discord.Attachment | None = None,
                      strength: app_commands.Range[float, 0.1, 1.0] | None = None,
                      model: str | None = None) -> None:
        await front.imagine(interaction, prompt, image, aspect=aspect, count=count, seed=seed, negative=negative,
                            style=style, lora=lora, refine=refine, strength=strength, model=model)

    @app_commands.command(name="loras", description="The LoRA adapters: names, trigger words, base model")
    async def loras(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(clip(front.service.loras_text(), 1900), ephemeral=True)

    @app_commands.command(name="history", description="Your requests, sent to you by DM")
    @app_commands.describe(search="Only requests whose prompt contains this")
    async def history(interaction: discord.Interaction, search: str | None = None) -> None:
        await front.history(interaction, search)

    @app_commands.command(name="quota", description="How many images you have left")
    async def quota(interaction: discord.Interaction) -> None:
        await front.quota(interaction)

    @app_commands.command(name="settings", description="Show or change your defaults")
    @app_commands.describe(aspect="Default aspect ratio", style="Default style", count="Default number of images",
                           private="Send results to your DMs", refine="Refine every prompt (--refine)",
                           model="Your default model (\"default\": the bot's)")
    @app_commands.autocomplete(aspect=_aspect_autocomplete, style=_style_autocomplete, model=_model_autocomplete)
    async def settings(interaction: discord.Interaction, aspect: str | None = None,
                       style: str | None = None, count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
                       private: bool | None = None, refine: bool | None = None, model: str | None = None) -> None:
        await front.settings_command(interaction, aspect=aspect, style=style,
                                     count=count, private=private, refine=refine, model=model)

    @app_commands.command(name="cancel", description="Cancel your latest (or the given) queued request")
    @app_commands.describe(job="A request id (default: your latest)")
    async def cancel(interaction: discord.Interaction, job: str | None = None) -> None:
        await front.cancel(interaction, job)

    @app_commands.command(name="forget", description="Delete everything stored about you")
    async def forget(interaction: discord.Interaction) -> None:
        await front.forget(interaction)

    @app_commands.command(name="export", description="Your data and images as a zip, by DM")
    async def export(interaction: discord.Interaction) -> None:
        await front.export(interaction)

    admin = app_commands.Group(name="admin", description="Bot admin tools (admins only)")

    @admin.command(name="stats", description="Jobs, images, users and the queue")
    async def stats(interaction: discord.Interaction) -> None:
        await front.admin(interaction, "stats")

    @admin.command(name="quota", description="Set a user's images per window (empty: back to the default)")
    async def admin_quota(interaction: discord.Interaction, user: discord.User,
                          limit: app_commands.Range[int, 0, 1_000_000] | None = None) -> None:
        await front.admin(interaction, "quota", user, limit)

    @admin.command(name="block", description="Refuse a user's requests")
    async def block(interaction: discord.Interaction, user: discord.User) -> None:
        await front.admin(interaction, "block", user)

    @admin.command(name="unblock", description="Accept a user's requests again")
    async def unblock(interaction: discord.Interaction, user: discord.User) -> None:
        await front.admin(interaction, "unblock", user)

    moderation = front.moderation.commands(admin)  # /appeal; /admin appeals|lift|reject|strikes|policy|modlog
    models = model_commands(front, admin)  # /models; /admin models
    return [imagine, loras, history, quota, settings, cancel, forget, export, admin, *moderation, *models]
