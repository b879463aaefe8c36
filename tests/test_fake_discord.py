"""The fake Discord drives the real discord.py client: slash commands, views, DMs, 429s, reactions."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fake_discord import FakeDiscord, fake_discord_server, running_client


def _png(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


class AgainView(discord.ui.View):
    """One button; records who clicked it."""

    def __init__(self, bot: PingBot) -> None:
        super().__init__(timeout=None)
        self.bot = bot

    @discord.ui.button(label="Again", style=discord.ButtonStyle.primary, custom_id="ping:again")
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button[AgainView]) -> None:
        """Acknowledge the click ephemerally."""
        await interaction.response.send_message("clicked", ephemeral=True)
        await interaction.followup.send("again!", file=discord.File(io.BytesIO(PNG), filename="again.png"))
        self.bot.clicks.put_nowait(interaction)


@dataclass
class PingSeen:
    text: str | None
    nsfw: bool | None
    in_guild: bool
    filesize_limit: int
    locale: str


class PingBot(commands.Bot):
    """A tiny bot with the shapes the real front end uses."""

    def __init__(self) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.pings: asyncio.Queue[PingSeen] = asyncio.Queue()
        self.clicks: asyncio.Queue[discord.Interaction] = asyncio.Queue()
        self.reactions: asyncio.Queue[tuple[str, discord.RawReactionActionEvent]] = asyncio.Queue()
        self.release_slow = asyncio.Event()
        self.slow_outcome: asyncio.Queue[str] = asyncio.Queue()
        self.late_outcome: asyncio.Queue[int] = asyncio.Queue()
        self.tree.add_command(app_commands.Command(name="ping", description="pong", callback=self.ping))
        self.tree.add_command(app_commands.Command(name="slow", description="slow", callback=self.slow))
        self.tree.add_command(app_commands.Command(name="late", description="late", callback=self.late))

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def ping(self, interaction: discord.Interaction, text: str | None = None) -> None:
        """Defer, then edit the original response with a file and a view."""
        await interaction.response.defer()
        channel = interaction.channel
        nsfw = channel.is_nsfw() if isinstance(channel, discord.TextChannel) else None
        self.pings.put_nowait(
            PingSeen(text, nsfw, interaction.guild is not None, interaction.filesize_limit, str(interaction.locale))
        )
        await interaction.edit_original_response(
            content=f"pong {text or ''}".strip(),
            attachments=[discord.File(io.BytesIO(PNG), filename="pong.png")],
            view=AgainView(self),
        )

    async def slow(self, interaction: discord.Interaction) -> None:
        """Defer, wait past the token's life, then fall back to a channel message."""
        await interaction.response.defer()
        await self.release_slow.wait()
        try:
            await interaction.edit_original_response(content="done")
        except discord.NotFound as exc:
            assert interaction.channel is not None
            await interaction.channel.send("done (token expired)")  # type: ignore[union-attr]
            self.slow_outcome.put_nowait(f"fallback {exc.code}")
        else:
            self.slow_outcome.put_nowait("edited")

    async def late(self, interaction: discord.Interaction) -> None:
        """Miss the initial-response deadline."""
        await asyncio.sleep(0.3)
        try:
            await interaction.response.defer()
        except discord.NotFound as exc:
            self.late_outcome.put_nowait(exc.code)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.reactions.put_nowait(("add", payload))

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self.reactions.put_nowait(("remove", payload))


async def _get(queue: asyncio.Queue[object], timeout: float = 3.0) -> object:
    return await asyncio.wait_for(queue.get(), timeout)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with fake_discord_server() as server:
        yield server
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert leaked == [], leaked


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[PingBot]:
    async with running_client(PingBot()) as client:
        yield client
    assert client.is_closed()
    assert fake.unhandled == [], [f"{r.method} {r.path}" for r in fake.unhandled]
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert leaked == [], leaked


def _callback(inter: dict[str, object]) -> str:
    return rf"/interactions/{inter['id']}/{re.escape(str(inter['token']))}/callback"


def _original(fake: FakeDiscord, inter: dict[str, object]) -> str:
    return rf"/webhooks/{fake.app_id}/{re.escape(str(inter['token']))}/messages/@original"


async def test_login_sync_and_identify(fake: FakeDiscord, bot: PingBot) -> None:
    login = fake.requests_to("GET", "/users/@me")
    assert login and login[0].headers["Authorization"] == "Bot fake-token"
    put = fake.requests_to("PUT", rf"/applications/{fake.app_id}/commands")[0]
    assert sorted(c["name"] for c in put.json) == ["late", "ping", "slow"]
    assert all(c["id"] and c["application_id"] == str(fake.app_id) for c in put.response)
    assert fake.intents == discord.Intents.default().value
    assert fake.gateway_connections[0].heartbeats >= 1 and bot.latency < 1
    assert bot.user is not None and bot.user.id == fake.app_id
    assert bot.application_id == fake.app_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None
    nsfw = guild.get_channel(fake.nsfw_channel_id)
    assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()


async def test_ping_defers_edits_with_file_and_view_then_button_click(fake: FakeDiscord, bot: PingBot) -> None:
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    inter = await fake.send_interaction(fake.slash("ping", {"text": "hello"}, channel=fake.nsfw_channel_id))

    defer = await fake.wait_for_request("POST", _callback(inter), timeout=3)
    assert defer.received_at - sent_at < 3
    assert defer.json == {"type": 5} and defer.query["with_response"] == "1" and defer.status == 200
    seen = await _get(bot.pings)
    assert seen == PingSeen("hello", True, True, fake.upload_limit, "en-US")

    edit = await fake.wait_for_request("PATCH", _original(fake, inter))
    assert edit.status == 200 and edit.is_multipart
    assert [(f.filename, f.data) for f in edit.files] == [("pong.png", PNG)]
    button = edit.json["components"][0]["components"][0]
    assert button["custom_id"] == "ping:again" and button["label"] == "Again"
    message = fake.original_response(inter["token"])
    assert message is not None and message["content"] == "pong hello" and message["flags"] == 0
    attachment = message["attachments"][0]
    assert (attachment["width"], attachment["height"], attachment["size"]) == (64, 48, len(PNG))
    assert fake.attachment_bytes(attachment) == PNG
    assert fake.channel_messages(fake.nsfw_channel_id) == [message]

    bob = fake.make_user("bob")
    click = await fake.send_interaction(fake.button("ping:again", message, bob))
    clicked = await _get(bot.clicks)
    assert isinstance(clicked, discord.Interaction) and clicked.user.id == int(bob["id"])
    assert clicked.message is not None and clicked.message.id == int(message["id"])
    reply = await fake.wait_for_request("POST", _callback(click))
    assert reply.json["type"] == 4 and reply.json["data"]["flags"] == 64
    assert reply.response["resource"]["message"]["content"] == "clicked"
    followup = await fake.wait_for_request("POST", rf"/webhooks/{fake.app_id}/{re.escape(click['token'])}")
    assert followup.query["wait"] == "1" and followup.files[0].filename == "again.png"
    assert [m["content"] for m in fake.channel_messages(fake.nsfw_channel_id)] == ["pong hello", "clicked", "again!"]


async def test_ping_in_a_dm(fake: FakeDiscord, bot: PingBot) -> None:
    dm = fake.dm_channel_for(fake.user["id"])
    inter = await fake.send_interaction(fake.slash("ping", channel=dm, attachment_size_limit=25 * 2**20))
    seen = await _get(bot.pings)
    assert seen == PingSeen(None, None, False, 25 * 2**20, "en-US")
    await fake.wait_for_request("PATCH", _original(fake, inter))
    assert [m["content"] for m in fake.dm_messages(fake.user["id"])] == ["pong"]


async def test_dm_to_user_with_closed_dms_raises_forbidden_50007(fake: FakeDiscord, bot: PingBot) -> None:
    fake.close_dms(fake.user["id"])
    user = await asyncio.wait_for(bot.fetch_user(int(fake.user["id"])), 5)
    with pytest.raises(discord.Forbidden) as caught:
        await asyncio.wait_for(user.send("your image is ready"), 5)
    assert caught.value.code == 50007 and caught.value.status == 403
    assert fake.dm_messages(fake.user["id"]) == []

    carol = fake.make_user("carol")
    other = await asyncio.wait_for(bot.fetch_user(int(carol["id"])), 5)
    sent = await asyncio.wait_for(other.send("hi", file=discord.File(io.BytesIO(PNG), "a.png")), 5)
    assert isinstance(sent.channel, discord.DMChannel) and sent.attachments[0].filename == "a.png"
    assert await asyncio.wait_for(sent.attachments[0].read(), 5) == PNG


async def test_429_is_waited_out_and_retried_once(fake: FakeDiscord, bot: PingBot) -> None:
    path = rf"/channels/{fake.text_channel_id}/messages"
    fake.rate_limit_next("POST", path, retry_after=0.2)
    channel = bot.get_channel(fake.text_channel_id)
    assert isinstance(channel, discord.TextChannel)
    message = await asyncio.wait_for(channel.send("after a 429"), 5)
    first, second = fake.requests_to("POST", path)
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 0.2
    assert message.content == "after a 429" and message.id == int(second.response["id"])


async def test_raw_reactions_in_guild_and_dm(fake: FakeDiscord, bot: PingBot) -> None:
    channel = bot.get_channel(fake.text_channel_id)
    assert isinstance(channel, discord.TextChannel)
    message = await asyncio.wait_for(channel.send("rate me"), 5)
    await asyncio.wait_for(message.add_reaction("👍"), 5)
    put = await fake.wait_for_request("PUT", rf"/channels/{channel.id}/messages/{message.id}/reactions/👍/@me")
    assert put.status == 204

    refetched = await asyncio.wait_for(channel.fetch_message(message.id), 5)
    assert [(str(r.emoji), r.count, r.me) for r in refetched.reactions] == [("👍", 1, True)]

    await fake.add_reaction("👍", message.id, fake.user)
    kind, event = await _get(bot.reactions)
    assert kind == "add" and event.message_id == message.id and event.user_id == int(fake.user["id"])
    assert event.guild_id == fake.guild_id and event.member is not None and str(event.emoji) == "👍"
    await fake.remove_reaction("👍", message.id, fake.user)
    kind, event = await _get(bot.reactions)
    assert kind == "remove" and event.message_id == message.id

    user = await asyncio.wait_for(bot.fetch_user(int(fake.user["id"])), 5)
    dm_message = await asyncio.wait_for(user.send("your image"), 5)
    await fake.add_reaction("⭐", dm_message.id, fake.user)
    kind, event = await _get(bot.reactions)
    assert kind == "add" and event.guild_id is None and event.channel_id == fake.dm_channel_for(fake.user["id"])


async def test_expired_token_gives_unknown_webhook_and_bot_falls_back(fake: FakeDiscord, bot: PingBot) -> None:
    inter = await fake.send_interaction(fake.slash("slow"))
    await fake.wait_for_request("POST", _callback(inter), status=200)
    fake.expire_interaction(inter)
    bot.release_slow.set()
    assert await _get(bot.slow_outcome) == "fallback 10015"
    edit = await fake.wait_for_request("PATCH", _original(fake, inter))
    assert edit.status == 404 and edit.response["code"] == 10015
    assert fake.channel_messages(fake.text_channel_id)[-1]["content"] == "done (token expired)"


async def test_missing_the_initial_response_deadline_is_unknown_interaction(fake: FakeDiscord, bot: PingBot) -> None:
    fake.initial_response_timeout = 0.1
    inter = await fake.send_interaction(fake.slash("late"))
    assert await _get(bot.late_outcome) == 10062
    callback = await fake.wait_for_request("POST", _callback(inter))
    assert callback.status == 404


async def test_gateway_drop_is_resumed(fake: FakeDiscord, bot: PingBot) -> None:
    first_session = fake.gateway_connections[0].session_id
    await fake.drop_gateway(code=4000)
    await asyncio.wait_for(bot.wait_for("resumed"), 5)
    assert len(fake.identifies) == 1 and fake.gateway_connections[-1].session_id == first_session
    inter = await fake.send_interaction(fake.slash("ping"))
    await fake.wait_for_request("PATCH", _original(fake, inter))


async def test_replies_are_exactly_application_json_and_patches_are_restored() -> None:
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with fake_discord_server() as fake:
        assert discord.http.Route.BASE == fake.api_base
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{fake.api_base}/users/@me") as response:
                assert response.headers["Content-Type"] == "application/json"
                assert (await response.json())["id"] == str(fake.app_id)
            async with session.get(f"{fake.api_base}/nope") as response:
                assert response.status == 404 and response.headers["Content-Type"] == "application/json"
        assert [r.path for r in fake.unhandled] == ["/nope"]
    assert (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == (base, gateway)


async def test_fail_next(fake: FakeDiscord, bot: PingBot) -> None:
    fake.fail_next("GET", rf"/channels/{fake.text_channel_id}", status=403, code=50001, message="Missing Access")
    with pytest.raises(discord.Forbidden) as caught:
        await asyncio.wait_for(bot.fetch_channel(fake.text_channel_id), 5)
    assert caught.value.code == 50001
    fetched = await asyncio.wait_for(bot.fetch_channel(fake.text_channel_id), 5)
    assert isinstance(fetched, discord.TextChannel) and fetched.name == "general"


async def test_upload_over_the_limit_is_413(fake: FakeDiscord, bot: PingBot) -> None:
    fake.upload_limit = len(PNG) - 1
    channel = bot.get_channel(fake.text_channel_id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as caught:
        await asyncio.wait_for(channel.send(file=discord.File(io.BytesIO(PNG), "big.png")), 5)
    assert (caught.value.status, caught.value.code) == (413, 40005)
    assert fake.channel_messages(fake.text_channel_id) == []
