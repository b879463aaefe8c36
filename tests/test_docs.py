"""The README and the documentation site: generated pages complete, links that lead somewhere.

The site itself is built with ``make docs`` (``mkdocs build --strict``, in CI too); these checks
run without MkDocs, on the same generators its hook uses (docs/gen_pages.py).
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _gen_pages():
    spec = importlib.util.spec_from_file_location("docs_gen_pages", DOCS / "gen_pages.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _gen_pages()


@pytest.fixture(scope="module")
def generated(gen) -> dict[str, str | bytes]:
    return gen.generated_files()


def _outside_code(text: str) -> str:
    """The Markdown without fenced blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """Python-Markdown's toc slug (what MkDocs uses for heading anchors)."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(markdown: str) -> set[str]:
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def _links(markdown: str) -> list[str]:
    return [a or b for a, b in LINK.findall(_outside_code(markdown))]


# --- the configuration reference ---------------------------------------------------------------

def test_config_reference_lists_every_schema_key_with_its_meaning(gen) -> None:
    from bot.config import config_keys

    keys = config_keys()
    page = gen.config_reference()
    listed = re.findall(r"^\| `([a-zA-Z_0-9.]+)` \|", page, flags=re.M)  # models.NAME.kind: a placeholder
    assert sorted(listed) == sorted(keys)
    notes = gen.config_notes()
    assert sorted(k for k in keys if not notes.get(k, "").strip()) == [], "keys without a note"
    assert sorted(set(notes) - set(keys)) == [], "notes for keys the program does not have"
    for section in {k.split(".")[0] for k in keys}:
        assert f"## [{section}]" in page or f"## [{section}.NAME]" in page


def test_config_reference_shows_the_loaders_defaults_and_types(gen) -> None:
    from bot.config import load_config

    rows = {key: (kind, default) for _, key, kind, default, _ in gen.config_rows()}
    defaults = load_config(None, env={})
    assert rows["queue.max_batch_images"] == ("a whole number (int)", f"`{defaults.queue.max_batch_images}`")
    assert rows["quota.window"] == ("a string (str)", f'`"{defaults.quota.window}"`')
    assert rows["model.steps"][1] == "`[" + ", ".join(map(str, defaults.model.steps)) + "]`"
    assert rows["maintenance.backups"] == ("true or false (bool)", "`true`")
    assert rows["telegram.webhook.port"][0] == "a whole number (int)"  # a sub-table key, by its dotted name
    assert "`DISCORD_TOKEN` (or `DISCORD_TOKEN_FILE`" in gen.config_reference()
    assert "token" not in {key.split(".")[-1] for key in rows}  # secrets are never config keys


def test_config_reference_follows_a_new_key(gen, monkeypatch: pytest.MonkeyPatch) -> None:
    """A field added to a settings class appears on the page at once, and its missing note is caught."""
    import dataclasses

    import bot.config as config
    from bot.config_schema import Section

    @dataclasses.dataclass(frozen=True)
    class Extra:
        """[extra]: a section that does not exist."""

        brand_new: float = 2.5

    real = config.sections()
    monkeypatch.setattr(config, "sections", lambda: {**real, "extra": Section(Extra)})
    page = gen.config_reference()
    assert "| `extra.brand_new` | a number (float) | `2.5` |  |" in page
    assert "extra.brand_new" not in gen.config_notes()


# --- the HTTP API reference --------------------------------------------------------------------

def test_api_reference_lists_every_route_of_the_app(gen, generated) -> None:
    import json

    schema = json.loads(generated["openapi.json"])
    page = generated["reference/http-api.md"]
    operations = [(m.upper(), p) for p, ops in schema["paths"].items() for m in ops]
    assert ("POST", "/v1/images") in operations and ("GET", "/healthz") in operations
    for method, path in operations:
        assert f"## `{method} {path}`" in page
    assert "| `prompt` | string | yes | length ≥ 1, length ≤ 4000 |" in page  # the request body, from pydantic
    assert "| `idempotency-key` | header |" in page


# --- links --------------------------------------------------------------------------------------

def _check_links(source: Path, text: str, pages: dict[str, str], base: Path) -> list[str]:
    broken = []
    for link in _links(text):
        if re.match(r"^[a-z]+:", link) or link.startswith("//"):
            continue  # external
        target, _, anchor = link.partition("#")
        if not target:
            path = source
        else:
            path = (source.parent / target).resolve()
        rel = path.relative_to(base.resolve()).as_posix() if path.is_relative_to(base.resolve()) else None
        if rel in pages:
            content = pages[rel]
        elif path.exists():
            content = path.read_text(encoding="utf-8") if path.suffix == ".md" else ""
        else:
            broken.append(f"{source.name}: {link}")
            continue
        if anchor and path.suffix == ".md" and anchor not in _anchors(content):
            broken.append(f"{source.name}: {link} (no such heading)")
    return broken


def test_every_link_in_the_docs_leads_to_a_page_and_heading(generated) -> None:
    pages = {rel: c if isinstance(c, str) else "" for rel, c in generated.items()}
    for path in DOCS.rglob("*.md"):
        pages[path.relative_to(DOCS).as_posix()] = path.read_text(encoding="utf-8")
    pages["architecture.md"] = pages["architecture.md"].replace(
        '--8<-- "ARCHITECTURE.md"', (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    broken = []
    for rel, text in pages.items():
        if rel.endswith(".md"):
            broken += _check_links(DOCS / rel, text, pages, DOCS)
    assert broken == []


def test_the_link_check_catches_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "a.md"
    text = "# A\n\n## Two words\n\n[ok](#two-words) [gone](b.md) [no heading](#three) `[code](x.md)`\n"
    assert _check_links(page, text, {"a.md": text}, tmp_path) == ["a.md: b.md", "a.md: #three (no such heading)"]


def test_readme_is_short_and_its_links_lead_somewhere() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    pages = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md")}
    assert _check_links(ROOT / "README.md", text, pages, ROOT) == []
    for must in ("make run", "make test", "make install", "make demo", "imagine-bot download",
                 ".venv/bin/imagine-bot", "source .venv/bin/activate"):
        assert must in text, must


def test_mkdocs_is_strict_and_lets_unlisted_pages_through() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["strict"] is True and config["theme"]["name"] == "material"
    assert config["validation"]["links"]["not_found"] == "warn"  # a warning fails a strict build
    assert config["validation"]["links"]["anchors"] == "warn"
    assert config["validation"]["nav"]["omitted_files"] == "info"  # a page not yet in the nav is fine

    def nav_pages(items) -> list[str]:
        out = []
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out += nav_pages(value) if isinstance(value, list) else [value]
        return out

    for page in nav_pages(config["nav"]):
        assert (DOCS / page).exists() or page in {"reference/config.md", "reference/http-api.md",
                                                   "reference/modules.md", "bench-runs.md"}, page


# --- what the pages name exists -----------------------------------------------------------------

def _doc_texts() -> dict[str, str]:
    texts = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md")}
    texts["README.md"] = (ROOT / "README.md").read_text(encoding="utf-8")
    texts["docs/config-notes.toml"] = (DOCS / "config-notes.toml").read_text(encoding="utf-8")
    return texts


def test_files_commands_and_make_targets_the_docs_name_exist() -> None:
    import os
    import subprocess
    import sys

    usage = subprocess.run([sys.executable, "-m", "bot", "--help"], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120, check=True).stdout
    subcommands = set(re.search(r"\{([a-z,-]+)\}", usage).group(1).split(","))
    assert {"run", "generate", "download"} <= subcommands
    missing = []
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    for name, text in _doc_texts().items():
        for path in re.findall(r"`((?:bot|generation|storage|bench|deploy|tests|docs)/[^`\s]*)`", text):
            if not any(c in path for c in "*<{…") and not (ROOT / path.rstrip("/")).exists():
                missing.append(f"{name}: {path}")
        for target in re.findall(r"(?:`|^)make ([a-z][\w-]*)", text, flags=re.M):
            if target not in targets:
                missing.append(f"{name}: make {target}")
        for command in re.findall(r"imagine-bot ([a-z]+(?:-[a-z]+)*)\b", text):
            if command not in subcommands:
                missing.append(f"{name}: imagine-bot {command}")
    assert missing == []
