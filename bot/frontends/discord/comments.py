"""💬 Comment: after rating a result (1️⃣–5️⃣), a user can put words beside the rating.

The button (:class:`~.views.CommentButton`) opens a modal; its answer goes to the service, which
checks the words with the prompt filter and keeps them beside the rating (so ``/export`` carries
them and ``/forget`` deletes them). Someone who has not rated gets the rating hint instead of the
form. :class:`CommentHandlers` is a part of :class:`~.front.DiscordFrontEnd`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot.frontends.discord.messages import RATE_HINT, who_of
from bot.service import MAX_COMMENT_CHARS, ImagineService

__all__ = ["CommentHandlers", "CommentModal"]


class CommentModal(discord.ui.Modal):
    """The form behind 💬: one paragraph, sent to the front end on submit."""

    def __init__(self, front: CommentHandlers, job_id: str, index: int | None) -> None:
        which = "these images" if index is None else f"image {index + 1}"
        super().__init__(title=f"Your comment on {which}"[:45], timeout=900,
                         custom_id=f"imagine:commentform:{job_id}:{'a' if index is None else index}")
        self.front, self.job_id, self.index = front, job_id, index
        self.text: discord.ui.TextInput[CommentModal] = discord.ui.TextInput(
            custom_id="comment", style=discord.TextStyle.paragraph, min_length=1, max_length=MAX_COMMENT_CHARS,
            placeholder="What works, what does not?")
        self.add_item(discord.ui.Label(text="Comment", description="Kept beside your rating", component=self.text))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Store the comment (the service checks it)."""
        await self.front.on_comment_text(interaction, self.job_id, self.index, self.text.value)


class CommentHandlers:
    """The 💬 button and its form (a part of the front end)."""

    service: ImagineService

    if TYPE_CHECKING:  # provided by the front end
        async def guard(self, interaction: discord.Interaction, action: Callable[[], Awaitable[None]],
                        *, remove_thinking: bool = False) -> None: ...

    async def on_comment(self, interaction: discord.Interaction, job_id: str, index: int | None) -> None:
        """💬: the form, when the clicker has rated (answered at once: a modal must be the first answer)."""
        async def open_form() -> None:
            if not await self.service.rated_count(who_of(interaction.user), job_id, index):
                await interaction.response.send_message(f"Rate it first: {RATE_HINT} Then add your comment.",
                                                        ephemeral=True)
                return
            await interaction.response.send_modal(CommentModal(self, job_id, index))

        await self.guard(interaction, open_form)

    async def on_comment_text(self, interaction: discord.Interaction, job_id: str, index: int | None,
                              text: str) -> None:
        """The form's answer: kept beside the rating, or the reason it was not."""
        async def save() -> None:
            saved = await self.service.comment_job(who_of(interaction.user), job_id, text, index)
            count = len(saved)
            await interaction.response.send_message(
                f"💬 Thanks: your comment is kept beside your rating{'s' if count > 1 else ''} "
                f"({count} image{'s' if count > 1 else ''}).", ephemeral=True)

        await self.guard(interaction, save)
