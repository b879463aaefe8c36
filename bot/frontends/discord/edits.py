"""🖌️ Vary (Region) and /describe on Discord.

    🖌️ Vary (Region)   the toolbox button (``imagine:tool:vr:<job>:<i>``) opens a modal with two
                       fields, what to change and what to paint there instead; its answer is a
                       job-making request like any click (stored, deferred, submitted: :mod:`.intake`)
    /describe image    the picture's caption and four prompts, with the picture attached again and
                       buttons Imagine 1…4 (the prompt alone) and 🖼 1…4 (the picture as the start)
    Imagine n          reads prompt n back from the answer it is under (nothing is kept elsewhere)

:class:`EditHandlers` is a part of :class:`~.front.DiscordFrontEnd`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.frontends.common import clip, upload_too_large
from bot.frontends.discord.intake import download_attachment
from bot.frontends.discord.messages import file_of, who_of
from bot.frontends.edits import EDIT_BUTTON, describe_lines, suggestion_from
from bot.service import ImagineService

__all__ = ["DescribeButton", "EditHandlers", "EditModal", "build_edit_commands"]

MAX_WORDS = 200


class EditModal(discord.ui.Modal):
    """The form behind 🖌️ Vary (Region): what to change, and the new text."""

    def __init__(self, front: EditHandlers, job_id: str, index: int) -> None:
        super().__init__(title=f"{EDIT_BUTTON} of image {index + 1}"[:45], timeout=900,
                         custom_id=f"imagine:editform:{job_id}:{index}")
        self.front, self.job_id, self.index = front, job_id, index
        self.words: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
            custom_id="words", style=discord.TextStyle.short, min_length=1, max_length=MAX_WORDS,
            placeholder="the cat")
        self.prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
            custom_id="prompt", style=discord.TextStyle.paragraph, min_length=1, max_length=1000,
            placeholder="a small red fox, sitting")
        self.add_item(discord.ui.Label(text="What to change", description="Name it in a few words",
                                       component=self.words))
        self.add_item(discord.ui.Label(text="Paint there instead", description="The new text for that region",
                                       component=self.prompt))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Make the edit job (the service finds the region and checks everything)."""
        await self.front.on_edit_text(interaction, self.job_id, self.index, self.words.value, self.prompt.value)


class DescribeButton(discord.ui.DynamicItem[discord.ui.Button],
                     template=r"imagine:desc:(?P<n>[1-4])(?P<img>:img)?"):
    """Imagine n (or 🖼 n, starting from the described picture) under a /describe answer."""

    def __init__(self, number: int, with_image: bool = False, row: int = 0) -> None:
        label = f"🖼 {number}" if with_image else f"Imagine {number}"
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.primary if not with_image
                                           else discord.ButtonStyle.secondary,
                                           custom_id=f"imagine:desc:{number}{':img' if with_image else ''}",
                                           row=row))
        self.number, self.with_image = number, with_image

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> DescribeButton:
        return cls(int(match["n"]), bool(match["img"]), item.row or 0)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Start /imagine with the prompt it names."""
        await interaction.client.front.on_describe_pick(interaction, self.number,  # type: ignore[attr-defined]
                                                        self.with_image)


def describe_view(count: int, with_image: bool) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for number in range(1, count + 1):
        view.add_item(DescribeButton(number, False, 0))
    if with_image:
        for number in range(1, count + 1):
            view.add_item(DescribeButton(number, True, 1))
    return view


class EditHandlers:
    """🖌️ Vary (Region)'s form and /describe (a part of the front end)."""

    service: ImagineService

    if TYPE_CHECKING:  # provided by the front end
        async def guard(self, interaction: discord.Interaction, action: Callable[[], Awaitable[None]],
                        *, remove_thinking: bool = False) -> None: ...

        async def accept(self, interaction: discord.Interaction, kind: str, **fields: Any) -> None: ...

    async def on_edit_button(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        """🖌️: the form (a modal must be the first answer, so nothing slow comes before it)."""
        await interaction.response.send_modal(EditModal(self, job_id, index))

    async def on_edit_text(self, interaction: discord.Interaction, job_id: str, index: int, words: str,
                           prompt: str) -> None:
        """The form's answer: an edit job, stored before it is acknowledged like any click."""
        await self.accept(interaction, "edit", job_id=job_id, index=index, words=words, prompt=prompt)

    async def describe(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """/describe: the caption and four prompts to start from (free; limited per hour)."""
        too_large = upload_too_large(image.size)
        if too_large:
            await interaction.response.send_message(too_large, ephemeral=True)
            return
        await interaction.response.defer(thinking=True)

        async def answer() -> None:
            data = await download_attachment(interaction.client, {  # type: ignore[arg-type]
                "url": image.url, "filename": image.filename, "size": image.size})
            found = await self.service.describe(who_of(interaction.user), data, target={"platform": "discord"})
            again = len(data) <= interaction.filesize_limit  # attached again: 🖼 n starts from it
            files = [file_of(data, f"describe-{image.filename}"[:80], False)] if again else []
            text = describe_lines(found) + ("\nImagine n: the prompt alone; 🖼 n: starting from your picture."
                                            if again else "")
            await interaction.edit_original_response(content=clip(text, 1900), attachments=files,
                                                     view=describe_view(len(found.suggestions), again))

        await self.guard(interaction, answer, remove_thinking=True)

    async def on_describe_pick(self, interaction: discord.Interaction, number: int, with_image: bool) -> None:
        """Imagine n / 🖼 n: /imagine with prompt n of the answer clicked (and its picture)."""
        message = interaction.message
        prompt = suggestion_from(message.content if message is not None else "", number)
        if prompt is None:
            await interaction.response.send_message("That answer has no prompt " + str(number) + "; use "
                                                    "/describe again.", ephemeral=True)
            return
        extra: dict[str, Any] = {}
        if with_image:
            attached = message.attachments[0] if message is not None and message.attachments else None
            if attached is None:
                await interaction.response.send_message("The picture is no longer attached; use /describe "
                                                        "again.", ephemeral=True)
                return
            extra["image"] = {"url": attached.url, "filename": attached.filename, "size": attached.size}
        await self.accept(interaction, "imagine", prompt=prompt, options={}, **extra)


def build_edit_commands(front: EditHandlers) -> list[app_commands.Command[Any, Any, Any]]:
    """/describe, bound to ``front``."""

    @app_commands.command(name="describe", description="Four prompts to start from, made from a picture")
    @app_commands.describe(image="The picture to describe (PNG, JPEG or WebP, up to 20 MB)")
    async def describe(interaction: discord.Interaction, image: discord.Attachment) -> None:
        await front.describe(interaction, image)

    return [describe]
