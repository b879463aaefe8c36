"""Terminal chat front end: type /imagine lines, get PNG files in an output folder.

The front end when no chat token is configured (and for local testing)::

    front.py       Console: read lines, follow jobs, write <output_dir>/<job>-<n>.png; run_console
    commands.py    what the commands do (/imagine, /history, /rate, /settings, /reroll, …)
    keyboards.py   the typed commands that stand in for buttons, printed under each result
    moderation.py  /appeal and the admins' moderation commands (receives the console it serves)

A terminal has no buttons: what the chat front ends put on buttons (reroll, variation, rate,
confirm /forget) are typed commands here, and keyboards.py prints them where buttons would be.
"""

from bot.frontends.console.front import COMMANDS, Console, run_console, stdin_lines

__all__ = ["COMMANDS", "Console", "run_console", "stdin_lines"]
