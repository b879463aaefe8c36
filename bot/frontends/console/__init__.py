"""Console front end."""

from bot.frontends.console.front import COMMANDS, Console, run_console, stdin_lines

__all__ = ["COMMANDS", "Console", "run_console", "stdin_lines"]
