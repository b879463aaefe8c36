"""Telegram front end (python-telegram-bot 22): commands, a paced status message, inline buttons.

* ``/imagine`` → a status message (queue place, ETA, progress; paced, with a ❌ Cancel button)
  → one photo with an inline keyboard, or an album plus a keyboard message replying to it.
* Buttons carry stateless data, so they work after a restart; reactions to the bot's result
  messages become ratings.
* /history and /export are private: from a group they go to the user's private chat.
* Moderation: a cooldown/block refusal carries a 📝 Appeal button; /appeal files one too;
  /admin appeals|lift|reject|strikes|modlog|policy for admins.

Modules::

    front.py       TelegramFrontEnd: lifetime, update plumbing, errors (built from the parts below)
    commands.py    the commands and the command menu (COMMANDS)
    buttons.py     what inline buttons and reactions do
    delivery.py    following a job: status message, then the photo(s) or documents
    keyboards.py   the inline keyboards;  callbacks.py  their data (pure)
    messages.py    who a user is and the texts of the messages (pure)
    status.py      the paced status message;  settings.py  the [telegram] config
    moderation.py  /admin moderation and appeals (receives the front end it serves)
"""

from bot.frontends.telegram.front import COMMANDS, TelegramFrontEnd
from bot.frontends.telegram.settings import TelegramSettings

__all__ = ["COMMANDS", "TelegramFrontEnd", "TelegramSettings"]
