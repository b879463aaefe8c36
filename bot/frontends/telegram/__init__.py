"""Telegram front end (python-telegram-bot 22): see :mod:`bot.frontends.telegram.front`."""

from bot.frontends.telegram.front import COMMANDS, TelegramFrontEnd
from bot.frontends.telegram.settings import TelegramSettings

__all__ = ["COMMANDS", "TelegramFrontEnd", "TelegramSettings"]
