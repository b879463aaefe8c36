"""Telegram front end (python-telegram-bot 22): commands, a paced status message, inline buttons.

* ``/imagine`` → a 👀 reaction on the user's message at once (costs no message), then a
  placeholder photo whose caption is the status (queue place, ETA, progress; paced, with a
  ❌ Cancel button) → the result replaces it (``editMessageMedia``): one photo, or
  a grid of the images, with an inline keyboard. Re-delivery after a crash edits it again.
* Every update is stored in the service's inbox before PTB can confirm it to Telegram, and
  what was stored but not handled is handled after a restart (``inbox.py``).
* Buttons carry stateless data, so they work after a restart; reactions to the bot's result
  messages become ratings.
* /history and /export are private: from a group they go to the user's private chat.
* Moderation: a cooldown/block refusal carries a 📝 Appeal button; /appeal files one too;
  /admin appeals|lift|reject|strikes|modlog|policy for admins.

Modules::

    front.py       TelegramFrontEnd: lifetime, update plumbing, errors (built from the parts below)
    commands.py    the commands and the command menu (COMMANDS)
    buttons.py     what inline buttons and reactions do
    delivery.py    following a job: the placeholder, its progress, the result edited into it
    inbox.py       updates stored before they are confirmed; replay after a crash
    pacing.py      Telegram's flood limits kept in every sliding window, calls in priority lanes
    retry.py       sends retried with backoff on 5xx/network errors (and 429s waited out)
    keyboards.py   the inline keyboards;  callbacks.py  their data (pure)
    messages.py    who a user is and the texts of the messages (pure)
    status.py      the paced status (a caption);  settings.py  the [telegram] config
    moderation.py  /admin moderation and appeals (receives the front end it serves)
"""

from bot.frontends.telegram.front import COMMANDS, TelegramFrontEnd
from bot.frontends.telegram.settings import TelegramSettings

__all__ = ["COMMANDS", "TelegramFrontEnd", "TelegramSettings"]
