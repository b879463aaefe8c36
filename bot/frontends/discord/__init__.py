"""Discord front end."""

from bot.frontends.discord.front import RATING_EMOJIS, DiscordFrontEnd, DiscordSettings

__all__ = ["DiscordFrontEnd", "DiscordSettings", "RATING_EMOJIS"]
