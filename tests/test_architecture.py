"""The import rules of ARCHITECTURE.md, checked on the real source tree.

Layers, lowest first; a module may import its own layer's package and anything below it::

    0  storage                                     (no bot, no generation)
    0  generation                                  (no bot, no storage)
    1  bot.options  bot.safety  bot.maintenance    (pure parser, safety, scheduled upkeep)
    2  bot.service                                 (platform-neutral; no front end)
    3  bot.frontends.<one>                         (its own package + bot.frontends.common)
    4  bot.config  bot.config_schema  bot.app  bot.__main__  bot.cli  bot.health
                                                   (the composition root may import anything)

Besides: front ends never import torch or diffusers; nothing below the front ends imports
discord or telegram; no front end imports another.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "generation", "storage")
SHARED_FRONTEND = ("bot.frontends.common",)
MAX_LINES = 450
SIZE_REASON = "Size:"  # a module docstring line that says why a file is longer

LAYERS: tuple[tuple[str, int], ...] = (
    ("storage", 0),
    ("generation", 0),
    ("bot.options", 1),
    ("bot.safety", 1),
    ("bot.maintenance", 1),
    ("bot.service", 2),
    ("bot.frontends", 3),
    ("bot.config", 4),
    ("bot.app", 4),
    ("bot.__main__", 4),
    ("bot.cli", 4),
    ("bot.config_schema", 4),
    ("bot.health", 4),
    ("bot", 4),  # bot/__init__.py only
)
PLATFORM_LIBS = ("discord", "telegram")
TORCH_LIBS = ("torch", "diffusers", "transformers")


def _owner(module: str) -> tuple[str, int]:
    for prefix, layer in LAYERS:
        if module == prefix or (prefix != "bot" and module.startswith(prefix + ".")):
            return prefix, layer
    raise AssertionError(f"{module} is in no layer of ARCHITECTURE.md; add it to LAYERS and the doc")


def _frontend(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["bot", "frontends"] and len(parts) > 2 and module not in SHARED_FRONTEND:
        return parts[2]
    return None


def violations(imports: Mapping[str, Iterable[str]]) -> list[str]:
    """Every broken rule, as 'importer -> imported: why'."""
    found: list[str] = []
    for module, targets in imports.items():
        prefix, layer = _owner(module)
        for target in targets:
            top = target.split(".")[0]
            if top in PLATFORM_LIBS and layer < 3:
                found.append(f"{module} -> {target}: only front ends talk to a platform")
            if top in TORCH_LIBS and (prefix.startswith("bot.frontends") or prefix == "bot.service"):
                found.append(f"{module} -> {target}: front ends and the service never touch torch")
            if top not in PACKAGES:
                continue
            t_prefix, t_layer = _owner(target)
            if t_prefix == prefix:
                pass
            elif t_layer > layer or (t_layer == layer and layer < 4):
                found.append(f"{module} -> {target}: layer {layer} may not import layer {t_layer}")
            mine, theirs = _frontend(module), _frontend(target)
            if mine and theirs and mine != theirs:
                found.append(f"{module} -> {target}: a front end never imports another front end")
    return found


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # "from bot import service" imports the submodule bot.service
            for alias in node.names:
                candidate = f"{name}.{alias.name}"
                if (ROOT / Path(*candidate.split("."))).exists() or (
                        ROOT / Path(*candidate.split("."))).with_suffix(".py").exists():
                    found.add(candidate)
    return found


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_the_real_tree_keeps_the_import_rules() -> None:
    imports = {_module_name(p): _imports(p, _module_name(p)) for p in source_files()}
    assert imports, "no source files found"
    assert violations(imports) == []


def test_front_ends_have_the_same_shape() -> None:
    root = ROOT / "bot" / "frontends"
    fronts = sorted(p for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert {p.name for p in fronts} >= {"discord", "telegram", "console"}
    for front in fronts:
        names = {p.name for p in front.glob("*.py")}
        missing = {"__init__.py", "front.py", "commands.py", "moderation.py"} - names
        assert not missing, f"{front.name} lacks {sorted(missing)}"
        assert names & {"views.py", "keyboards.py"}, f"{front.name} has neither views.py nor keyboards.py"


def test_no_module_grows_past_the_limit_without_saying_why() -> None:
    too_long = []
    for path in source_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES:
            doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
            if SIZE_REASON not in doc:
                too_long.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert too_long == []


# -- the checker itself can fail -------------------------------------------------------------------


@pytest.mark.parametrize(("module", "target", "why"), [
    ("storage.jobs", "bot.service", "layer 0 may not import layer 2"),
    ("generation.scheduling.queue", "bot.options", "layer 0 may not import layer 1"),
    ("generation.scheduling.worker", "discord", "only front ends talk to a platform"),
    ("bot.service.jobs", "bot.frontends.discord.front", "layer 2 may not import layer 3"),
    ("bot.service.jobs", "torch", "never touch torch"),
    ("bot.frontends.telegram.front", "bot.frontends.discord.views", "never imports another front end"),
    ("bot.frontends.console.front", "diffusers", "never touch torch"),
    ("bot.safety.moderation", "bot.service", "layer 1 may not import layer 2"),
    ("bot.options", "bot.safety", "layer 1 may not import layer 1"),
])
def test_the_checker_catches_each_kind_of_break(module: str, target: str, why: str) -> None:
    found = violations({module: [target]})
    assert len(found) >= 1 and why in " ".join(found)


@pytest.mark.parametrize(("module", "target"), [
    ("bot.frontends.discord.front", "bot.service"),
    ("bot.frontends.discord.front", "bot.frontends.common"),
    ("bot.frontends.telegram.commands", "bot.frontends.telegram.keyboards"),
    ("bot.service.jobs", "generation.scheduling.queue"),
    ("bot.service.jobs", "storage.jobs"),
    ("bot.app", "bot.frontends.discord"),
    ("bot.safety.moderation", "storage.moderation"),
])
def test_the_checker_allows_what_the_layers_allow(module: str, target: str) -> None:
    assert violations({module: [target]}) == []


def test_a_module_outside_every_layer_is_reported() -> None:
    with pytest.raises(AssertionError, match="no layer"):
        violations({"bot.newthing": ["storage"]})
