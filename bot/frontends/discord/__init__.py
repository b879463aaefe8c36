"""Discord front end (discord.py 2.7): slash commands, live progress, buttons, reaction ratings.

Commands work in guild channels and in DMs with the bot::

    /imagine prompt [aspect count seed negative style]   flags in the prompt work too (--ar …)
    /history [search]   your requests as paged embeds, sent by DM
    /quota  /settings [aspect style count private]  /cancel [job]  /forget  /export
    /admin quota|block|unblock|stats                  only for ids in the config's admins
    /appeal [message]   ask an admin to review your strikes, cooldown or block
    /admin appeals|lift|reject|strikes|policy|modlog  moderation; /admin policy also for
                        members with Manage Server, for their server

Moderation: a request refused for a block or cooldown (or a blocked prompt) is answered
ephemerally with an Appeal button; images the image policy blocks are never uploaded (the
"thinking…" message is edited to say so; the quota is refunded). With the "spoiler" policy,
explicit images go out as SPOILER_ attachments in age-restricted channels only.

Results: one image, or a 2-column grid of them, with buttons: U1…U4 post one image at full
size, V1…V4 make variations, 🔄 rerolls with a new seed, 🗑 deletes the message (requester or
admin), 💬 adds a comment beside your rating. Buttons carry the job id, so they work after a restart.

Modules::

    front.py       DiscordFrontEnd: lifetime, errors, reaction ratings (built from the parts below)
    commands.py    the slash commands and what they and the buttons do
    intake.py      job-making interactions stored before the deferral, replayed after a restart
    delivery.py    following a job: paced progress edits, the result (interaction, channel or DM),
                   each way safe to repeat after a crash (same response edited, or a nonce)
    views.py       buttons (DynamicItems that survive restarts), /history pages
    comments.py    💬 Comment: the form that puts words beside a rating
    moderation.py  /appeal, the Appeal button, /admin moderation (receives the front end)
    messages.py    who a user is, attachments, DM limits;  settings.py  the [discord] config

Inside this package ``import discord`` is still discord.py (absolute imports).
"""

from bot.frontends.discord.front import RATING_EMOJIS, DiscordFrontEnd, DiscordLoginFailed
from bot.frontends.discord.settings import DiscordSettings

__all__ = ["DiscordFrontEnd", "DiscordLoginFailed", "DiscordSettings", "RATING_EMOJIS"]
