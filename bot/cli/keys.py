"""``imagine-bot keys create|list|revoke USER``: API keys for the HTTP API, straight on the database."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Config

__all__ = ["add_parser", "keys_command"]


def add_parser(sub: argparse._SubParsersAction, config_help: str) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="API keys for the HTTP API: create, list or revoke a user's keys")
    keys.add_argument("action", choices=("create", "list", "revoke"))
    keys.add_argument("user", help='the account, as "platform:user_id", e.g. "telegram:1234" or "web:ada"')
    keys.add_argument("key_id", nargs="?", type=int, help="the key to revoke (its id from 'list')")
    keys.add_argument("--label", default="", help="a note shown in 'list'")
    keys.add_argument("--config", help=config_help)


async def keys_command(config: Config, args: argparse.Namespace) -> int:
    """``imagine-bot keys create|list|revoke USER``: straight on the database (the bot may run)."""
    from bot.service.keys import operator_create, operator_list, operator_revoke
    from storage import Database

    async with Database.open(config.storage.database) as db:
        try:
            if args.action == "create":
                key, row = await operator_create(db, args.user, args.label)
                print(f"key {row.id} for {args.user} (shown only now; store it safely):\n{key}")
            elif args.action == "list":
                for row in await operator_list(db, args.user):
                    state = f"revoked {row.revoked_at[:16]}" if row.revoked_at else "live"
                    used = f"last used {row.last_used_at[:16]}" if row.last_used_at else "never used"
                    print(f"{row.id}\t{row.prefix}…\t{state}\tcreated {row.created_at[:16]}\t{used}\t{row.label}")
            elif args.key_id is None:
                print("imagine-bot: keys revoke USER KEY_ID (the id from 'keys list')", file=sys.stderr)
                return 2
            elif not await operator_revoke(db, args.user, args.key_id):
                print(f"imagine-bot: {args.user} has no live key {args.key_id}", file=sys.stderr)
                return 1
            else:
                print(f"revoked key {args.key_id} of {args.user}")
        except ValueError as exc:
            print(f"imagine-bot: {exc}", file=sys.stderr)
            return 2
    return 0
