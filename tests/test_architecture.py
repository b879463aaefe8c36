"""ARCHITECTURE.md's rules hold on the real tree, and the checker (tests/architecture.py) can fail.

The checker is proven on small trees built in ``tmp_path``: a clean one it must pass, and the
same tree with one deliberate break each, whose every reported line it must name exactly.
A second, independent check imports each layer package in a fresh interpreter and looks at
``sys.modules``: what the static reading misses (a dynamic import, a library that loads torch
itself) shows up there.
"""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.architecture import (
    GENERATION,
    LAYERS,
    MODEL_LIBS,
    PLATFORM_LIBS,
    SERVICE_PARTS,
    banned_for,
    check,
    read_tree,
)

ROOT = Path(__file__).resolve().parent.parent


# -- the real tree ---------------------------------------------------------------------------------


def test_the_real_tree_keeps_every_rule() -> None:
    assert read_tree(ROOT), "no source files found"
    assert check(ROOT) == []


def test_the_rules_name_what_architecture_md_names() -> None:
    doc = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for prefix, _ in LAYERS:
        assert prefix in doc, f"{prefix} is a layer in the checker but not in ARCHITECTURE.md"
    for part in SERVICE_PARTS:
        assert f"`{part}`" in doc, f"service part {part} is not listed in ARCHITECTURE.md"
    for sub in GENERATION:
        assert f"{sub}/" in doc, f"generation/{sub}/ is not drawn in ARCHITECTURE.md"
        assert (ROOT / "generation" / sub / "__init__.py").exists()


def test_the_service_parts_are_imagine_service_s_bases() -> None:
    init = ROOT / "bot" / "service" / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    source_of = {alias.asname or alias.name: node.module.rpartition(".")[2]
                 for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
                 for alias in node.names}
    service = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ImagineService")
    bases = {source_of[b.id] for b in service.bases if isinstance(b, ast.Name)}
    assert bases == set(SERVICE_PARTS)


def test_generation_has_no_module_outside_its_sub_packages() -> None:
    loose = [p.name for p in (ROOT / "generation").glob("*.py") if p.name != "__init__.py"]
    folders = {p.name for p in (ROOT / "generation").iterdir() if (p / "__init__.py").exists()}
    assert loose == [] and folders == set(GENERATION)


def test_front_ends_have_the_same_shape() -> None:
    root = ROOT / "bot" / "frontends"
    fronts = sorted(p for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert {p.name for p in fronts} >= {"discord", "telegram", "console"}
    for front in fronts:
        names = {p.name for p in front.glob("*.py")}
        missing = {"__init__.py", "front.py", "commands.py", "moderation.py"} - names
        assert not missing, f"{front.name} lacks {sorted(missing)}"
        assert names & {"views.py", "keyboards.py"}, f"{front.name} has neither views.py nor keyboards.py"


@functools.lru_cache(maxsize=1)
def _real_modules() -> tuple[str, ...]:
    return tuple(read_tree(ROOT))


def _packages_with_bans() -> list[str]:
    """The packages whose modules are banned libraries: each layer package, each front end."""
    names = {prefix for prefix, layer in LAYERS if layer < 3} | {"generation.core"}
    names -= {"generation"}  # only generation.core is held to a ban
    names |= {f"bot.frontends.{p.name}" for p in (ROOT / "bot" / "frontends").iterdir() if (p / "__init__.py").exists()}
    return sorted(names)


@pytest.mark.slow
@pytest.mark.parametrize("package", _packages_with_bans())
def test_importing_a_package_loads_no_banned_library(package: str) -> None:
    """Every module of ``package`` imported in a fresh interpreter: the libraries loaded."""
    modules = sorted(m for m in _real_modules() if m == package or m.startswith(package + "."))
    banned = set(banned_for(modules[0]))
    script = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
              "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    assert banned and set(run.stdout.split()) & banned == set()


# -- the checker can fail: a clean small tree, then one break at a time ----------------------------

CLEAN: dict[str, str] = {
    "bot/__init__.py": "",
    "bot/app.py": "from bot.frontends.console import front\nfrom bot.service import ImagineService\n"
                  "from generation.scheduling import local\nfrom storage import jobs\n",
    "bot/options/__init__.py": "from generation.core import request\n",
    "bot/safety/__init__.py": "from bot.safety.check import check\n",
    "bot/safety/check.py": "import re\n\ndef check(text):\n    return re.sub('x', '', text)\n",
    "bot/safety/classifier.py": "def session():\n    import onnxruntime\n    return onnxruntime\n",
    "bot/service/__init__.py": "from bot.service.history import HistoryPart\nfrom bot.service.jobs import JobsPart\n\n\n"
                               "class ImagineService(JobsPart, HistoryPart):\n    pass\n",
    "bot/service/context.py": "from storage import jobs\n\n\nclass Context:\n    def __init__(self):\n"
                              "        self._tickets = {}\n",
    "bot/service/tickets.py": "from generation.scheduling.events import Queued\n\n\nclass Ticket:\n"
                              "    def push(self, update):\n        self._last = update\n",
    "bot/service/jobs.py": "from bot.options import request\nfrom bot.safety import check\n"
                           "from bot.service.context import Context\nfrom bot.service.tickets import Ticket\n"
                           "from generation.scheduling import queue\n\n\nclass JobsPart(Context):\n"
                           "    def follow(self, ticket: Ticket):\n        ticket.push(1)\n"
                           "        self._tickets[1] = ticket\n",
    "bot/service/history.py": "from bot.service.context import Context\nfrom storage import jobs\n\n\n"
                              "class HistoryPart(Context):\n    def page(self):\n        return jobs.page()\n",
    "bot/frontends/__init__.py": "",
    "bot/frontends/common.py": "from bot.service import ImagineService\n",
    "bot/frontends/console/__init__.py": "",
    "bot/frontends/console/front.py": "from bot.frontends.common import ImagineService\nfrom bot.service import tickets\n",
    "bot/frontends/discord/__init__.py": "",
    "bot/frontends/discord/front.py": "import discord\nfrom bot.frontends import common\n",
    "generation/__init__.py": "",
    "generation/core/__init__.py": "",
    "generation/core/request.py": "from generation.core.errors import Invalid\n",
    "generation/core/errors.py": "class Invalid(Exception):\n    pass\n",
    "generation/model/__init__.py": "",
    "generation/model/pipeline.py": "import torch\nfrom generation.core import request\n",
    "generation/prompts/__init__.py": "",
    "generation/prompts/refine.py": "from generation.core import request\n\n\ndef tiny():\n"
                                    "    from generation.model import pipeline\n    import transformers\n",
    "generation/scheduling/__init__.py": "",
    "generation/scheduling/events.py": "from generation.core import request\n\n\nclass Queued:\n    pass\n",
    "generation/scheduling/job.py": "from typing import TYPE_CHECKING, Protocol\nfrom generation.scheduling import events\n"
                                    "\n\nclass JobHost(Protocol):\n    def cancel(self, job): ...\n",
    "generation/scheduling/queue.py": "from generation.scheduling import events, job\n",
    "generation/scheduling/local.py": "from generation.model import pipeline\nfrom generation.scheduling import queue\n",
    "storage/__init__.py": "",
    "storage/jobs.py": "def page(db):\n    return db.execute('SELECT * FROM jobs WHERE id = ?')\n",
}

# who reaches the service and so whatever it loads (bot.service.history through its package)
_USERS_OF_THE_SERVICE = ["bot.service loads torch", "bot.service.history loads torch through bot.service.history -> "
                         "bot.service -> bot.service.jobs", "bot.frontends.common loads torch",
                         "bot.frontends.console.front loads torch", "bot.frontends.discord.front loads torch"]

BREAKS = [
    pytest.param({"generation/scheduling/job.py": CLEAN["generation/scheduling/job.py"]
                  + "if TYPE_CHECKING:\n    from generation.scheduling.queue import Queue\n"},
                 ["import circle: generation.scheduling.job <-> generation.scheduling.queue"],
                 id="a-circle-closed-only-under-TYPE_CHECKING"),
    pytest.param({"generation/scheduling/job.py": CLEAN["generation/scheduling/job.py"]
                  + "\n\ndef later():\n    from generation.scheduling import queue\n"},
                 ["import circle: generation.scheduling.job <-> generation.scheduling.queue"],
                 id="a-circle-closed-only-inside-a-function"),
    pytest.param({"bot/safety/check.py": "from bot.safety import model\n", "bot/safety/model.py": "import torch\n"},
                 ["bot.service.jobs loads torch through bot.service.jobs -> bot.safety.check -> bot.safety.model -> torch",
                  *_USERS_OF_THE_SERVICE],
                 id="torch-into-the-service-through-bot.safety"),
    pytest.param({"generation/core/errors.py": "import torch\n"},
                 ["generation.core.errors:1 imports torch: generation.core is the engine's pure-Python vocabulary",
                  "generation.core.request loads torch through generation.core.request -> generation.core.errors",
                  "bot.service.jobs loads torch through bot.service.jobs -> bot.options -> generation.core.request "
                  "-> generation.core.errors -> torch", "bot.service.tickets loads torch", *_USERS_OF_THE_SERVICE],
                 id="torch-into-the-service-through-generation.core"),
    pytest.param({"bot/service/history.py": CLEAN["bot/service/history.py"]
                  + "        return f'SELECT id FROM jobs WHERE user = {self}'\n"},
                 ["bot.service.history:8 holds SQL"], id="sql-in-a-service-module"),
    pytest.param({"bot/service/history.py": CLEAN["bot/service/history.py"] + "\n    def rows(self):\n"
                  "        return self.db.execute(QUERY)\n"},
                 ["bot.service.history:10 calls .execute()"], id="a-cursor-call-in-a-service-module"),
    pytest.param({"bot/service/history.py": "from bot.service.jobs import JobsPart\n" + CLEAN["bot/service/history.py"]},
                 ["bot.service.history:1 imports bot.service.jobs: service parts never import each other"],
                 id="one-service-part-imports-another"),
    pytest.param({"bot/service/tickets.py": "from bot.service import history\n" + CLEAN["bot/service/tickets.py"]},
                 ["bot.service.tickets:1 imports bot.service.history: bot.service.tickets is not a part"],
                 id="a-service-helper-imports-a-part"),
    pytest.param({"generation/prompts/refine.py": "from generation.scheduling import queue\n"},
                 ["generation.prompts may not import generation.scheduling: siblings never import each other"],
                 id="a-generation-sibling-import"),
    pytest.param({"generation/core/request.py": "from generation.model import pipeline\n"},
                 ["generation.core.request:1 imports generation.model.pipeline: generation.core may not import "
                  "generation.model: imports go downwards only",
                  "import circle: generation.core.request <-> generation.model.pipeline",
                  "generation.core.request loads torch through generation.core.request -> generation.model.pipeline"
                  " -> torch", "bot.service.jobs loads torch", "bot.service.tickets loads torch", *_USERS_OF_THE_SERVICE],
                 id="an-upward-import-inside-generation"),
    pytest.param({"storage/jobs.py": "from bot.service import context\n"},
                 ["storage.jobs:1 imports bot.service.context: layer 0 (storage) may not import layer 2",
                  "import circle: bot.service.context <-> storage.jobs"],
                 id="an-upward-import-between-layers"),
    pytest.param({"storage/jobs.py": "from generation.core import request\n"},
                 ["storage may not import generation sideways"], id="a-sideways-import-in-layer-0"),
    pytest.param({"bot/frontends/console/front.py": "from bot.frontends.discord import front\n"},
                 ["a front end never imports another front end (console -> discord)",
                  "bot.frontends.console.front:1 imports bot.frontends.discord.front"],
                 id="a-front-end-imports-another"),
    pytest.param({"bot/options/__init__.py": "from bot.options import emoji\n", "bot/options/emoji.py": "import discord\n"},
                 ["bot.options.emoji:1 imports discord: only front ends talk to a platform",
                  "bot.options loads discord through bot.options -> bot.options.emoji -> discord",
                  "bot.service.jobs loads discord through bot.service.jobs -> bot.options -> bot.options.emoji",
                  "bot.service loads discord through", "bot.service.history loads discord through"],
                 id="a-platform-library-below-the-front-ends"),
    pytest.param({"bot/frontends/console/front.py": "import compel\n"},
                 ["bot.frontends.console.front:1 imports compel"], id="torch-through-a-third-party-library"),
    pytest.param({"bot/service/history.py": CLEAN["bot/service/history.py"] + "\n    def f(self):\n"
                  "        import diffusers\n"},
                 ["bot.service.history:10 imports diffusers"], id="a-lazy-model-import-in-the-service"),
    pytest.param({"bot/service/jobs.py": CLEAN["bot/service/jobs.py"] + "        ticket._last = None\n"},
                 ["bot.service.jobs:12 reaches into ticket._last: another class's private state"], id="a-reach-into-another-class"),
    pytest.param({"bot/service/jobs.py": "from bot.service.tickets import _helper\n" + CLEAN["bot/service/jobs.py"]},
                 ["imports the private bot.service.tickets._helper"], id="a-private-name-imported"),
    pytest.param({"storage/big.py": "x = 1\n" * 460},
                 ["storage.big has 460 lines"], id="a-long-module-without-a-reason"),
    pytest.param({"bot/newthing.py": "import storage\n"}, ["bot.newthing is in no layer"], id="a-module-in-no-layer"),
    pytest.param({"generation/extras.py": "from generation.core import request\n"},
                 ["generation.extras is in no sub-package"], id="a-generation-module-outside-the-sub-packages"),
]


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {**CLEAN, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_clean_fixture_passes(tmp_path: Path) -> None:
    assert check(_tree(tmp_path, {})) == []


@pytest.mark.parametrize(("files", "expected"), BREAKS)
def test_each_break_is_reported(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    found = check(_tree(tmp_path, files))
    missing = [e for e in expected if not any(e in line for line in found)]
    unexplained = [line for line in found if not any(e in line for e in expected)]
    assert (missing, unexplained) == ([], [])


def test_a_long_module_that_says_why_passes(tmp_path: Path) -> None:
    long = '"""A table.\n\nSize: one table of 460 rows reads best in one place."""\n' + "x = 1\n" * 460
    assert check(_tree(tmp_path, {"storage/big.py": long})) == []


def test_the_banned_libraries_are_those_of_the_rules() -> None:
    assert set(banned_for("bot.service.jobs")) == set(PLATFORM_LIBS + MODEL_LIBS)
    assert set(banned_for("bot.frontends.discord.front")) == set(MODEL_LIBS)
    assert set(banned_for("generation.core.request")) == set(PLATFORM_LIBS + MODEL_LIBS)
    assert set(banned_for("generation.model.pipeline")) == set(PLATFORM_LIBS)
    assert banned_for("bot.app") == {}
