"""The front ends: one package per platform, all of the same shape; none imports another.

::

    bot/frontends/
      common.py     what they share: clip, error references and the apology, settings parsing,
                    /forget texts, progress meter, Coalescer, grid/single/thumbnail image rendering
      discord/      discord.py 2.7 slash commands, buttons, reaction ratings
      telegram/     python-telegram-bot 22 commands, inline keyboards, a paced status message
      console/      the terminal chat (the front end when no chat token is configured)

    each package:   __init__.py  the front-end class (and its settings / COMMANDS)
                    front.py     the adapter class: lifetime (start, resume, close), errors
                    commands.py  what the commands do
                    views.py (Discord) | keyboards.py (Telegram)   buttons; the console has none
                    moderation.py  /appeal and admin moderation; receives the front end it
                                   serves through a Protocol, never imports it

Imports go one way: ``bot.frontends.<platform> -> bot.frontends.common -> bot.service``. Front
ends see service types only through :mod:`bot.service`; :mod:`bot.app` builds them.
Importing this package loads no platform library; import the platform package you need.
"""
