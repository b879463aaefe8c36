"""Parts of the Discord front end (``bot.discord_app``): buttons, result images, history pages.

Import this package as ``bot.discord``; inside it ``import discord`` is still discord.py
(absolute imports), so the name does not shadow the library.
"""
