"""The rules of ARCHITECTURE.md as code: read a source tree with :mod:`ast`, report what breaks them.

:func:`check` takes a root folder holding ``bot/``, ``generation/`` and ``storage/`` and returns
every broken rule as a line ``module: what is wrong``. ``tests/test_architecture.py`` runs it on
the real tree (it must find nothing) and on small broken trees (it must find each break).

How imports are read:

- every ``import`` statement counts, wherever it is: at module level ("load": it runs when the
  module is imported), under ``if TYPE_CHECKING:`` ("typing") or inside a function ("call");
- ``from a.b import c`` is an import of the module ``a.b.c`` when that is a module of the tree,
  else of ``a.b``; relative imports are resolved against the importing module's package;
- a banned library is banned *transitively*: a module must not reach it through any chain of
  "load" imports (importing ``a.b.c`` also loads the packages ``a`` and ``a.b``), nor import it
  itself in any way. A lazy ("call") import inside another module is that module's business:
  it runs only when called, e.g. the safety package's own classifier session;
- import circles are looked for among all imports: a circle that only type checking or a
  function's lazy import closes is still two modules that each need the other.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("bot", "generation", "storage")
MAX_LINES = 450
SIZE_REASON = "Size:"  # a module docstring line that says why a file is longer

# -- the layers ------------------------------------------------------------------------------------

# (prefix, layer): a module belongs to the longest prefix that matches it
LAYERS: tuple[tuple[str, int], ...] = (
    ("storage", 0),
    ("generation", 0),
    ("bot.options", 1),
    ("bot.safety", 1),
    ("bot.maintenance", 1),
    ("bot.service", 2),
    ("bot.frontends", 3),
    ("bot.config", 4),
    ("bot.config_schema", 4),
    ("bot.app", 4),
    ("bot.__main__", 4),
    ("bot.cli", 4),
    ("bot.health", 4),
    ("bot", 4),  # bot/__init__.py only
)
ROOT_LAYER = 4  # the composition root may import anything below it, and sideways

# generation: sub-package -> the sub-packages it may import besides itself
GENERATION: dict[str, tuple[str, ...]] = {
    "core": (),
    "tools": ("core",),  # img2img inputs, upscale, outpaint: image operations the pipeline runs
    "model": ("core", "tools"),
    "prompts": ("core", "model"),
    "quality": ("core", "model"),
    "scheduling": ("core", "model"),
}

# bot.service: the parts ImagineService is made of; they never import each other, and the
# service's other modules (context, tickets, the helpers) never import a part
SERVICE_PARTS = ("jobs", "outcomes", "inbox", "toolbox", "history", "accounts", "admin", "keys", "gallery", "links",
                 "sessions", "studio", "metrics", "describing")

# bot.frontends: what every front end may import besides its own package
FRONTEND_SHARED = ("bot.frontends", "bot.frontends.common", "bot.frontends.edits")

# -- the libraries ---------------------------------------------------------------------------------

PLATFORM_LIBS = ("discord", "telegram")
MODEL_LIBS = ("torch", "diffusers", "transformers", "onnxruntime")
# third-party packages that load a banned library when imported
CARRIERS = {
    "compel": "torch", "torchao": "torch", "torchvision": "torch", "torchmetrics": "torch",
    "torch_fidelity": "torch", "spandrel": "torch", "accelerate": "torch", "peft": "torch",
    "safetensors.torch": "torch", "nudenet": "onnxruntime", "open_clip": "torch", "xformers": "torch",
    "discord_webhook": "discord", "telegram.ext": "telegram",
}


def banned_for(module: str) -> dict[str, str]:
    """The libraries ``module`` may not reach, each with the rule's reason."""
    try:
        prefix, layer = owner(module)
    except ValueError:  # reported as in no layer
        return {}
    banned: dict[str, str] = {}
    if layer < 3:
        banned.update(dict.fromkeys(PLATFORM_LIBS, "only front ends talk to a platform"))
    if prefix in ("bot.service", "bot.frontends"):
        banned.update(dict.fromkeys(MODEL_LIBS, "front ends and the service never load a model library"))
    if module == "generation.core" or module.startswith("generation.core."):
        banned.update(dict.fromkeys(MODEL_LIBS, "generation.core is the engine's pure-Python vocabulary"))
    if prefix == "storage":
        banned.update(dict.fromkeys(MODEL_LIBS, "storage is SQLite and files"))
    return banned


# -- reading a tree --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    target: str  # a dotted module name (of the tree, or a library)
    line: int
    when: str  # "load", "typing" or "call"


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    imports: list[Import] = field(default_factory=list)
    nodes: list[ast.AST] = field(default_factory=list)  # every node, walked once


def read_tree(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Module]:
    """Every module under ``root/<package>``, with its imports resolved."""
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            text = path.read_text(encoding="utf-8")
            modules[".".join(parts)] = Module(".".join(parts), path, ast.parse(text, filename=str(path)),
                                              len(text.splitlines()))
    for module in modules.values():
        module.nodes = list(ast.walk(module.tree))
        module.imports = list(_imports(module, modules))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(node: ast.AST, when: str) -> Iterator[tuple[ast.AST, str]]:
    """Every node under ``node`` with when it runs: "load", "typing" or "call"."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test) and when == "load":
            for statement in child.body:
                yield statement, "typing"
                yield from _statements(statement, "typing")
            for statement in child.orelse:
                yield statement, when
                yield from _statements(statement, when)
            continue
        inner = "call" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else when
        yield child, inner
        yield from _statements(child, inner)


def _imports(module: Module, modules: dict[str, Module]) -> Iterator[Import]:
    is_package = module.path.name == "__init__.py"
    package = module.name if is_package else module.name.rpartition(".")[0]
    for node, when in _statements(module.tree, "load"):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno, when)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            for alias in node.names:
                candidate = f"{name}.{alias.name}"
                yield Import(candidate if candidate in modules else name, node.lineno, when)


# -- the rules -------------------------------------------------------------------------------------


def owner(module: str) -> tuple[str, int]:
    """The layer package a module belongs to, and its layer."""
    best: tuple[str, int] | None = None
    for prefix, layer in LAYERS:
        matches = module == prefix or (prefix != "bot" and module.startswith(prefix + "."))
        if matches and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    if best is None:
        raise ValueError(f"{module} is in no layer of ARCHITECTURE.md; add it to LAYERS and the doc")
    return best


def _in_tree(target: str) -> bool:
    return target.split(".")[0] in PACKAGES


def _frontend(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["bot", "frontends"] and len(parts) > 2 and module not in FRONTEND_SHARED:
        return parts[2]
    return None


def _generation_part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "generation" and len(parts) > 1 else None


def _service_module(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if parts[:2] == ["bot", "service"] and len(parts) > 2 else None


def import_rules(module: str, target: str) -> list[str]:
    """What importing ``target`` (a module of the tree) from ``module`` breaks."""
    found: list[str] = []
    prefix, layer = owner(module)
    t_prefix, t_layer = owner(target)
    if t_prefix != prefix:
        if t_layer > layer:
            found.append(f"layer {layer} ({prefix}) may not import layer {t_layer} ({t_prefix}): imports go downwards")
        elif t_layer == layer and layer < ROOT_LAYER:
            found.append(f"{prefix} may not import {t_prefix} sideways: both are in layer {layer}")
    mine, theirs = _frontend(module), _frontend(target)
    if mine and theirs and mine != theirs:
        found.append(f"a front end never imports another front end ({mine} -> {theirs})")
    if _generation_part(module) is not None or module == "generation":
        part, t_part = _generation_part(module), _generation_part(target)
        if part is None and t_part is not None:
            found.append("generation/__init__.py imports none of its sub-packages")
        elif part is not None and part not in GENERATION:
            found.append(f"generation.{part} is in no sub-package of ARCHITECTURE.md")
        elif t_part is not None and t_part != part and t_part in GENERATION and t_part not in GENERATION[part]:
            why = "imports go downwards only" if part in GENERATION[t_part] else "siblings never import each other"
            found.append(f"generation.{part} may not import generation.{t_part}: {why}")
    here, there = _service_module(module), _service_module(target)
    if here is not None and there in SERVICE_PARTS and there != here:
        if here in SERVICE_PARTS:
            found.append(f"service parts never import each other ({here} -> {there})")
        else:
            found.append(f"bot.service.{here} is not a part and may not import the part {there}")
    return found


def _banned_lib(target: str) -> str | None:
    """The banned library ``target`` is, or loads (through a known carrier), or None."""
    for name, carried in CARRIERS.items():
        if target == name or target.startswith(name + "."):
            return carried
    top = target.split(".")[0]
    return top if top in PLATFORM_LIBS + MODEL_LIBS else None


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def load_chains(modules: dict[str, Module], start: str) -> dict[str, list[str]]:
    """For each library ``start`` loads on import: the shortest chain of "load" imports to it."""
    previous: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for name in frontier:
            module = modules.get(name)
            for target in [i.target for i in module.imports if i.when == "load"] if module else []:
                for step in [*_parents(target), target]:
                    if step not in previous:
                        previous[step] = name
                        following.append(step)
        frontier = [name for name in following if _in_tree(name)]
    chains: dict[str, list[str]] = {}
    for step in previous:  # in the order found: the first of each library is the shortest chain
        library = _banned_lib(step)
        if library is not None and library not in chains:
            chain = [step]
            while previous[chain[-1]] is not None:
                chain.append(previous[chain[-1]])  # type: ignore[arg-type]
            chains[library] = chain[::-1]
    return chains


def library_rules(modules: dict[str, Module]) -> Iterator[str]:
    """No module reaches a library its layer bans, directly (any import) or through load imports."""
    for name, module in modules.items():
        banned = banned_for(name)
        if not banned:
            continue
        direct = set()
        for imp in module.imports:
            library = _banned_lib(imp.target)
            if library in banned and library not in direct:
                direct.add(library)
                yield f"{name}:{imp.line} imports {imp.target}: {banned[library]}"
        for library, chain in load_chains(modules, name).items():
            if library in banned and library not in direct:
                yield f"{name} loads {library} through {' -> '.join(chain)}: {banned[library]}"


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Import circles, counting every import (under TYPE_CHECKING and inside functions too)."""
    graph = {name: sorted({i.target for i in m.imports if i.target in modules} - {name})
             for name, m in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


# SQL as the storage layer writes it: upper-case keywords
SQL = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\b(?:CREATE|DROP|ALTER)\s+(?:TEMP\s+|UNIQUE\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b|\bPRAGMA\s+\w+")
SQL_CALLS = ("execute", "executemany", "executescript")


def _docstrings(module: Module) -> set[int]:
    ids = set()
    for node in module.nodes:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sql_rules(modules: dict[str, Module]) -> Iterator[str]:
    """No SQL text and no cursor calls in bot/service/ (SQL is storage's)."""
    for name, module in modules.items():
        if not (name == "bot.service" or name.startswith("bot.service.")):
            continue
        docs = _docstrings(module)
        for node in module.nodes:
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if SQL.search(node.value):
                    yield f"{name}:{node.lineno} holds SQL ({node.value.strip()[:40]!r}): SQL lives in storage/"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
                yield f"{name}:{node.lineno} calls .{node.func.attr}(): SQL lives in storage/"


# private names of other code that the tree uses on purpose: (module, expression) -> why
REACH_IN_ALLOWED = {
    ("bot.cli.keys", "argparse._SubParsersAction"): "argparse's sub-parser type has no public name",
    ("bot.cli.reports", "argparse._SubParsersAction"): "argparse's sub-parser type has no public name",
    ("bot.cli.evaluate", "argparse._SubParsersAction"): "argparse's sub-parser type has no public name",
    ("generation.quality.extractors", "self.model._torch_fidelity_forward"):
        "torchmetrics' Inception wrapper gives both heads (pool features and logits) in one pass only there",
    ("bot.frontends.discord.intake", "bot._connection"):
        "discord.py builds an Interaction from stored data only with the client's connection state",
    ("generation.model.prompting", "pipe._imagine_prompt_encoder"):
        "our own cache kept on a diffusers pipeline object, named so it cannot clash with diffusers'",
}


def _own_private_names(module: Module) -> set[str]:
    """Underscore names this module defines: functions, methods, class attributes, self._x."""
    own: set[str] = set()
    for node in module.nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        if isinstance(node, ast.ClassDef):
            for statement in node.body:
                targets = statement.targets if isinstance(statement, ast.Assign) else (
                    [statement.target] if isinstance(statement, ast.AnnAssign) else [])
                own.update(t.id for t in targets if isinstance(t, ast.Name))
        if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")):
            own.add(node.attr)
    return {name for name in own if name.startswith("_")}


def _is_self(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id in ("self", "cls")) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super")


def reach_in_rules(modules: dict[str, Module]) -> Iterator[str]:
    """A class changes another's state only through that class's methods: no module reads, sets
    or calls an underscore attribute that another module defines, or imports an underscore name."""
    for name, module in modules.items():
        own = _own_private_names(module)
        for node in module.nodes:
            if isinstance(node, ast.ImportFrom) and node.module and _in_tree(node.module):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        yield f"{name}:{node.lineno} imports the private {node.module}.{alias.name}"
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            if _is_self(node.value) or node.attr in own:
                continue
            expression = ast.unparse(node)
            if (name, expression) not in REACH_IN_ALLOWED:
                yield (f"{name}:{node.lineno} reaches into {expression}: another class's private state; "
                       "give that class a public method")


def size_rules(modules: dict[str, Module]) -> Iterator[str]:
    for name, module in modules.items():
        if module.lines > MAX_LINES and SIZE_REASON not in (ast.get_docstring(module.tree) or ""):
            yield f"{name} has {module.lines} lines (over {MAX_LINES}) and no `{SIZE_REASON}` line saying why"


def check(root: Path) -> list[str]:
    """Every rule of ARCHITECTURE.md that the tree under ``root`` breaks."""
    modules = read_tree(root)
    found: list[str] = []
    for name, module in modules.items():
        try:
            owner(name)
        except ValueError as err:
            found.append(str(err))
            continue
        for imp in module.imports:
            if _in_tree(imp.target):
                try:
                    broken = import_rules(name, imp.target)
                except ValueError as err:
                    broken = [str(err)]
                found.extend(f"{name}:{imp.line} imports {imp.target}: {why}" for why in broken)
    found.extend(library_rules(modules))
    found.extend(f"import circle: {' <-> '.join(c)}" for c in cycles(modules))
    found.extend(sql_rules(modules))
    found.extend(reach_in_rules(modules))
    found.extend(size_rules(modules))
    return sorted(found, key=_by_place)


def _by_place(line: str) -> tuple[str, int, str]:
    """Order report lines by module, then line number."""
    match = re.match(r"([\w.]+):(\d+) ", line)
    return (match.group(1), int(match.group(2)), line) if match else (line.split(" ")[0], 0, line)
