"""``imagine-bot web-link PLATFORM:USER_ID``: a one-time sign-in link to the web studio, for operators."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import Config

__all__ = ["add_parser", "web_link_command"]


def add_parser(sub: Any, config_help: str) -> None:
    """Add ``web-link`` to ``sub`` (argparse's sub-parsers action, which has no public type name)."""
    link = sub.add_parser("web-link", help="a one-time sign-in link to the web studio for a chat account "
                                           "(valid 10 minutes, used once)")
    link.add_argument("user", help='the account, as "platform:user_id", e.g. "telegram:1234" or "discord:5678"')
    link.add_argument("--config", help=config_help)


async def web_link_command(config: Config, args: argparse.Namespace) -> int:
    """Print the link; straight on the database (the bot may be running)."""
    from bot.service.sessions import operator_web_link
    from storage import Database

    if config.web is None:
        print("imagine-bot: the web front end is off: add a [web] section (enabled = true) to the config",
              file=sys.stderr)
        return 2
    async with Database.open(config.storage.database) as db:
        try:
            url = await operator_web_link(db, args.user, config.web.url)
        except ValueError as exc:
            print(f"imagine-bot: {exc}", file=sys.stderr)
            return 2
    print(f"sign-in link for {args.user} (valid 10 minutes, once; hand it only to them):\n{url}")
    return 0
