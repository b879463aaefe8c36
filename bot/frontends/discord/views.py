"""Discord views: buttons that survive restarts, and the pages of /history.

Every button is a :class:`discord.ui.DynamicItem`: its ``custom_id`` carries what it acts on
(``imagine:up:<job>:<index>``), so a click on a message sent before a restart still works. The
callbacks only hand the click to the front end (``interaction.client.front``).

    imagine:reroll:<job>          🔄 the same request with a new seed
    imagine:up:<job>:<i>          U1…U4: post image i at full size
    imagine:var:<job>:<i>         V1…V4: variations of image i
    imagine:del:<job>             🗑 delete the message (the requester or an admin)
    imagine:hist:<page>:<search>  ◀ ▶ paging of /history
    imagine:forget:<yes|no>:<uid> the /forget confirmation
    imagine:share:<job>:<i>       🌐 put image i in the public web gallery (its owner; :mod:`.accounts`)
    imagine:unshare:<job>:<i>     take it out again (its owner or an admin)
    imagine:tool:<code>:<job>:<i>  the toolbox under one image (bot.frontends.common.TOOLS): upscale,
                                  zoom out, pan
    imagine:comment:<job>[:<i>]   💬 a comment beside your rating (of image i, or every image rated),
                                  in a modal (:mod:`.comments`)
    imagine:appeal                Appeal on a blocked/cooldown refusal (``bot.frontends.discord.moderation``)
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol

import discord

from bot.frontends.common import TOOLS, thumbnail
from bot.service import Delivery, HistoryView

__all__ = [
    "CommentButton",
    "DeleteButton",
    "ForgetButton",
    "HistoryButton",
    "RerollButton",
    "ShareButton",
    "ToolButton",
    "UpscaleButton",
    "VariationButton",
    "DYNAMIC_ITEMS",
    "forget_view",
    "history_page",
    "result_view",
    "share_view",
    "upscale_view",
]

_SEARCH_MAX = 60  # characters of a /history search kept in a paging button's custom_id


class _Front(Protocol):
    async def on_reroll(self, interaction: discord.Interaction, job_id: str) -> None: ...
    async def on_upscale(self, interaction: discord.Interaction, job_id: str, index: int) -> None: ...
    async def on_variation(self, interaction: discord.Interaction, job_id: str, index: int) -> None: ...
    async def on_delete(self, interaction: discord.Interaction, job_id: str) -> None: ...
    async def on_history_page(self, interaction: discord.Interaction, page: int, search: str) -> None: ...
    async def on_forget(self, interaction: discord.Interaction, confirm: bool, user_id: int) -> None: ...
    async def on_share(self, interaction: discord.Interaction, job_id: str, index: int, share: bool) -> None: ...
    async def on_tool(self, interaction: discord.Interaction, action: str, job_id: str, index: int) -> None: ...
    async def on_comment(self, interaction: discord.Interaction, job_id: str, index: int | None) -> None: ...


def _front(interaction: discord.Interaction) -> _Front:
    return interaction.client.front  # type: ignore[attr-defined,no-any-return]


# -- buttons -----------------------------------------------------------------------------------


class RerollButton(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:reroll:(?P<job>\w+)"):
    """🔄: the same request again with a new seed."""

    def __init__(self, job_id: str, row: int = 0) -> None:
        super().__init__(discord.ui.Button(emoji="🔄", style=discord.ButtonStyle.secondary,
                                           custom_id=f"imagine:reroll:{job_id}", row=row))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> RerollButton:
        return cls(match["job"], item.row or 0)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Reroll the job."""
        await _front(interaction).on_reroll(interaction, self.job_id)


class UpscaleButton(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:up:(?P<job>\w+):(?P<index>\d)"):
    """U1…U4: that image alone, at full size."""

    def __init__(self, job_id: str, index: int, row: int = 0) -> None:
        super().__init__(discord.ui.Button(label=f"U{index + 1}", style=discord.ButtonStyle.secondary,
                                           custom_id=f"imagine:up:{job_id}:{index}", row=row))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> UpscaleButton:
        return cls(match["job"], int(match["index"]), item.row or 0)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Post the image at full size."""
        await _front(interaction).on_upscale(interaction, self.job_id, self.index)


class VariationButton(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:var:(?P<job>\w+):(?P<index>\d)"):
    """V1…V4: variations of that image."""

    def __init__(self, job_id: str, index: int, row: int = 1, label: str | None = None) -> None:
        super().__init__(discord.ui.Button(label=label or f"V{index + 1}", style=discord.ButtonStyle.secondary,
                                           custom_id=f"imagine:var:{job_id}:{index}", row=row))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> VariationButton:
        return cls(match["job"], int(match["index"]), item.row or 0, item.label)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Make variations of the image."""
        await _front(interaction).on_variation(interaction, self.job_id, self.index)


class ToolButton(discord.ui.DynamicItem[discord.ui.Button],
                 template=r"imagine:tool:(?P<action>[a-z0-9]+):(?P<job>\w+):(?P<index>\d)"):
    """A toolbox action on image i of a job (a new job owned by the clicker)."""

    def __init__(self, action: str, job_id: str, index: int, row: int = 0) -> None:
        super().__init__(discord.ui.Button(label=TOOLS[action][0] if action in TOOLS else action,
                                           style=discord.ButtonStyle.secondary,
                                           custom_id=f"imagine:tool:{action}:{job_id}:{index}", row=row))
        self.action, self.job_id, self.index = action, job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ToolButton:
        return cls(match["action"], match["job"], int(match["index"]), item.row or 0)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Run the action on the image."""
        await _front(interaction).on_tool(interaction, self.action, self.job_id, self.index)


class DeleteButton(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:del:(?P<job>\w+)"):
    """🗑: delete the message (only the requester, or an admin)."""

    def __init__(self, job_id: str, row: int = 1) -> None:
        super().__init__(discord.ui.Button(emoji="🗑️", style=discord.ButtonStyle.danger,
                                           custom_id=f"imagine:del:{job_id}", row=row))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> DeleteButton:
        return cls(match["job"], item.row or 0)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Delete the message."""
        await _front(interaction).on_delete(interaction, self.job_id)


class HistoryButton(discord.ui.DynamicItem[discord.ui.Button], template=r"(?s)imagine:hist:(?P<page>\d+):(?P<search>.*)"):
    """◀ / ▶ on a /history page."""

    def __init__(self, page: int, search: str, label: str, disabled: bool = False) -> None:
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary,
                                           custom_id=f"imagine:hist:{page}:{search[:_SEARCH_MAX]}",
                                           disabled=disabled))
        self.page, self.search = page, search[:_SEARCH_MAX]

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> HistoryButton:
        return cls(int(match["page"]), match["search"], item.label or "")

    async def callback(self, interaction: discord.Interaction) -> None:
        """Show another page."""
        await _front(interaction).on_history_page(interaction, self.page, self.search)


class ForgetButton(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:forget:(?P<answer>yes|no):(?P<uid>\d+)"):
    """The /forget confirmation: yes deletes everything, no keeps it."""

    def __init__(self, confirm: bool, user_id: int) -> None:
        super().__init__(discord.ui.Button(
            label="Delete everything" if confirm else "Keep my data",
            style=discord.ButtonStyle.danger if confirm else discord.ButtonStyle.secondary,
            custom_id=f"imagine:forget:{'yes' if confirm else 'no'}:{user_id}",
        ))
        self.confirm, self.user_id = confirm, user_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ForgetButton:
        return cls(match["answer"] == "yes", int(match["uid"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Forget (or not)."""
        await _front(interaction).on_forget(interaction, self.confirm, self.user_id)


class ShareButton(discord.ui.DynamicItem[discord.ui.Button],
                  template=r"imagine:(?P<act>share|unshare):(?P<job>\w+):(?P<index>\d)"):
    """🌐: put an image in the public web gallery, or (Unshare) take it out again."""

    def __init__(self, job_id: str, index: int, row: int = 0, label: str | None = None, share: bool = True) -> None:
        super().__init__(discord.ui.Button(
            label=label or ("🌐 Share" if share else "Unshare"),
            style=discord.ButtonStyle.secondary if share else discord.ButtonStyle.danger,
            custom_id=f"imagine:{'share' if share else 'unshare'}:{job_id}:{index}", row=row))
        self.job_id, self.index, self.share = job_id, index, share

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ShareButton:
        return cls(match["job"], int(match["index"]), item.row or 0, item.label, match["act"] == "share")

    async def callback(self, interaction: discord.Interaction) -> None:
        """Share or unshare the image."""
        await _front(interaction).on_share(interaction, self.job_id, self.index, self.share)


class CommentButton(discord.ui.DynamicItem[discord.ui.Button],
                    template=r"imagine:comment:(?P<job>\w+)(?::(?P<index>\d))?"):
    """💬: after rating, a comment beside the rating (a modal asks for the words)."""

    def __init__(self, job_id: str, index: int | None = None, row: int = 0) -> None:
        suffix = "" if index is None else f":{index}"
        super().__init__(discord.ui.Button(label="💬 Comment", style=discord.ButtonStyle.secondary,
                                           custom_id=f"imagine:comment:{job_id}{suffix}", row=row))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> CommentButton:
        return cls(match["job"], None if match["index"] is None else int(match["index"]), item.row or 0)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Open the comment form (once the clicker has rated)."""
        await _front(interaction).on_comment(interaction, self.job_id, self.index)


DYNAMIC_ITEMS = (RerollButton, UpscaleButton, VariationButton, DeleteButton, HistoryButton, ForgetButton,
                 ShareButton, ToolButton, CommentButton)


def _view(*items: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return view


def result_view(delivery: Delivery) -> discord.ui.View:
    """A grid's buttons: U1…U4 + 🔄, then V1…V4 + 🗑, then 🌐 1…🌐 4 + 💬; one image: 🔄 V1 🗑 🌐 💬."""
    job, count = delivery.job_id, len(delivery.images)
    if delivery.request.kind == "upscale":  # the upscaled file: zoom, pan, share or delete it
        return _view(*_outpaint_buttons(job, 0, 0), DeleteButton(job, 2), ShareButton(job, 0, 2))
    if delivery.request.kind in ("zoom", "pan"):  # one image: zoom or pan further
        return _view(*_outpaint_buttons(job, 0, 0), VariationButton(job, 0, 2, "V1"), DeleteButton(job, 2),
                     ShareButton(job, 0, 2))
    if count <= 1:
        return _view(RerollButton(job, 0), VariationButton(job, 0, 0, "V1"), DeleteButton(job, 0),
                     ShareButton(job, 0, 0), CommentButton(job, None, 0))
    return _view(
        *(UpscaleButton(job, i, 0) for i in range(count)), RerollButton(job, 0),
        *(VariationButton(job, i, 1) for i in range(count)), DeleteButton(job, 1),
        *(ShareButton(job, i, 2, f"🌐 {i + 1}") for i in range(count)), CommentButton(job, None, 2),
    )


def upscale_view(job_id: str, index: int) -> discord.ui.View:
    """Buttons under one full-size image, as Midjourney lays them out: the upscales, then vary it,
    delete the message, share it, or comment on it."""
    return _view(ToolButton("ups", job_id, index, 0), ToolButton("upc", job_id, index, 0),
                 *_outpaint_buttons(job_id, index, 1),
                 VariationButton(job_id, index, 3, "🔀 Vary"), DeleteButton(job_id, 3), ShareButton(job_id, index, 3),
                 CommentButton(job_id, index, 3))


def _outpaint_buttons(job_id: str, index: int, row: int) -> list[ToolButton]:
    """Zoom Out 1.5x, 2x on one row; ⬅️ ➡️ ⬆️ ⬇️ on the next."""
    return [ToolButton("z15", job_id, index, row), ToolButton("z2", job_id, index, row),
            *(ToolButton(code, job_id, index, row + 1) for code in ("pl", "pr", "pu", "pd"))]


def share_view(job_id: str, index: int) -> discord.ui.View:
    """Under the answer to 🌐: take the image out of the gallery again."""
    return _view(ShareButton(job_id, index, 0, share=False))


def forget_view(user_id: int) -> discord.ui.View:
    return _view(ForgetButton(True, user_id), ForgetButton(False, user_id))


# -- /history ----------------------------------------------------------------------------------


def _stars(stars: int | None) -> str:
    return "★" * stars + "☆" * (5 - stars) if stars else "not rated"


def history_page(view: HistoryView, search: str) -> tuple[str, list[discord.Embed], list[tuple[str, bytes]],
                                                           discord.ui.View | None]:
    """(content, embeds, thumbnail files as (name, bytes), paging buttons) for one page."""
    if not view.entries:
        text = f"No requests match “{search}”." if search else "You have no requests yet."
        return text, [], [], None
    content = f"Your requests, page {view.page + 1} of {view.pages} ({view.total} in all)"
    if search:
        content += f", matching “{search}”"
    embeds, files = [], []
    for n, entry in enumerate(view.entries):
        jump = entry.target.get("jump_url")
        embed = discord.Embed(title=entry.text[:250] or entry.job_id, url=jump or None)
        first = entry.images[0] if entry.images else None
        if first is not None:
            seeds = ", ".join(str(i.image.seed) for i in entry.images)
            embed.add_field(name="Seed" if len(entry.images) == 1 else "Seeds", value=seeds)
            mine = [i.my_stars for i in entry.images if i.my_stars]
            embed.add_field(name="Your rating", value=_stars(max(mine) if mine else None))
            if first.image.path.is_file():
                name = f"thumb-{n}.jpg"
                files.append((name, thumbnail(first.image.path)))
                embed.set_thumbnail(url=f"attachment://{name}")
        if entry.input_image is not None and entry.input_image.is_file():
            # the picture it started from: beside the result (the thumbnail's place when there is none)
            name = f"from-{n}.jpg"
            files.append((name, thumbnail(entry.input_image)))
            if first is not None and first.image.path.is_file():
                embed.set_author(name="Started from your image", icon_url=f"attachment://{name}")
            else:
                embed.set_thumbnail(url=f"attachment://{name}")
        embed.add_field(name="Date", value=_date(entry.created_at))
        if entry.status not in ("done", "delivered"):
            embed.add_field(name="Status", value=entry.status + (f": {entry.error}" if entry.error else ""))
        if jump:
            embed.description = f"[Jump to the result]({jump})"
        embed.set_footer(text=f"request {entry.job_id}")
        embeds.append(embed)
    buttons = _view(
        HistoryButton(max(0, view.page - 1), search, "◀ Newer", disabled=view.page == 0),
        HistoryButton(view.page + 1, search, "Older ▶", disabled=not view.has_more),
    )
    return content, embeds, files, buttons


def _date(text: str) -> str:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return text[:16]
    return discord.utils.format_dt(when, "f")
