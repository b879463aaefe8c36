"""Telegram front end (python-telegram-bot 22): see :mod:`bot.telegram.front`."""

from bot.telegram.front import COMMANDS, TelegramFrontEnd
from bot.telegram.settings import TelegramSettings

__all__ = ["COMMANDS", "TelegramFrontEnd", "TelegramSettings"]
