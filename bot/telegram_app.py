"""Telegram front end: the public names (the code lives in the :mod:`bot.telegram` package)."""

from bot.telegram import COMMANDS, TelegramFrontEnd, TelegramSettings

__all__ = ["COMMANDS", "TelegramFrontEnd", "TelegramSettings"]
