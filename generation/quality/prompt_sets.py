"""Prompt sets for ``imagine-bot eval``: the bundled ``parti-mini`` or a file the operator has.

A file is one prompt a line (``#`` lines and blank lines skipped), or a table with tabs: with a
header row that has a ``Prompt`` column (PartiPrompts' ``PartiPrompts.tsv``, DrawBench exports)
that column, otherwise the last field of each line (the bundled file's ``CATEGORY TAB CHALLENGE
TAB PROMPT``). Image ``i`` of a run uses prompt ``i mod len(prompts)`` and seed ``seed + i``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUNDLED", "PromptSet", "load_prompt_set"]

BUNDLED = "parti-mini"
_BUNDLED_FILE = Path(__file__).with_name("parti_mini.txt")


@dataclass(frozen=True)
class PromptSet:
    """A named list of prompts (``digest`` tells two files of one name apart)."""

    name: str
    prompts: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.prompts).encode()).hexdigest()[:16]

    def prompt_for(self, index: int) -> str:
        return self.prompts[index % len(self.prompts)]


def load_prompt_set(path: Path | None = None) -> PromptSet:
    """The prompts of ``path`` (None: the bundled parti-mini); ValueError saying what is wrong."""
    source = _BUNDLED_FILE if path is None else path
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{source} is not UTF-8 text: save the prompts as UTF-8, one a line") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    column: int | None = None
    if lines and "\t" in lines[0]:
        header = [cell.strip().lower() for cell in lines[0].split("\t")]
        if "prompt" in header:
            column, lines = header.index("prompt"), lines[1:]
    prompts = []
    for number, line in enumerate(lines, 1):
        cells = line.split("\t")
        prompt = (cells[column] if column is not None and column < len(cells) else cells[-1]).strip()
        if prompt:
            prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{source} holds no prompts: write one prompt a line")
    return PromptSet(BUNDLED if path is None else path.name, tuple(prompts))
