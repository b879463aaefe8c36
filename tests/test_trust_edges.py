"""Issue #22, item 5: the sharp edges — no ``assert`` for control flow in production code, errors
classified by type, refinement only after the duplicate-origin check and with the server's
allow list, LoRA hashes cached by path, size and modification time."""

from __future__ import annotations

import ast
import asyncio
import json
import os
from pathlib import Path

import pytest

from bot.frontends.web.access import error_response
from bot.safety import BlockedPrompt, Restricted
from bot.service import AlreadyAccepted
from generation.model import lora
from generation.model.tiny import TINY_CONTEXT_DIM
from tests.service_support import ADA
from tests.test_moderation import GROUP, moderated
from tests.test_refine import ScriptedRefiner

ROOT = Path(__file__).resolve().parents[1]


def test_no_assert_statements_in_production_code() -> None:
    """``python -O`` drops asserts, and a failed one is a 500 instead of a message: production code
    checks with ``if`` and raises what fits."""
    found = []
    for package in ("bot", "generation", "storage"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, ast.Assert)]
    assert found == []


def test_web_errors_are_classified_by_type_not_by_name() -> None:
    class BlockedLora(BlockedPrompt):  # a subclass the old name check did not know
        pass

    assert error_response(BlockedLora("explicit")).status_code == 403
    assert error_response(Restricted("You are blocked.", "blocked")).status_code == 403
    assert error_response(Restricted("Wait a moment.", "too_soon", retry_after=3)).status_code == 429

    class NotBlocked(Exception):  # the same name elsewhere means nothing
        pass

    NotBlocked.__name__ = "BlockedPrompt"
    assert error_response(NotBlocked("x")).status_code == 500


async def test_a_replayed_request_is_not_refined_again(tmp_path: Path) -> None:
    async with moderated(tmp_path) as env:
        refiner = ScriptedRefiner()
        env.service.refiner = refiner
        origin = ("telegram", "4242")
        await env.service.receive(*origin, {"text": "/imagine a cat --refine"})
        first = await env.service.imagine(ADA, "a cat --refine", origin=origin)
        assert refiner.calls == 1
        with pytest.raises(AlreadyAccepted) as again:
            await env.service.imagine(ADA, "a cat --refine", origin=origin)
        assert again.value.job_id == first.job_id
        assert refiner.calls == 1  # the duplicate is found before the model runs
        await asyncio.wait_for(first.delivery(), 30)


async def test_a_refined_prompt_is_checked_with_the_servers_allow_list(tmp_path: Path) -> None:
    async with moderated(tmp_path) as env:
        await env.service.moderation.set_policy(ADA.__class__("console", "root"), "telegram:chat:-100123",
                                                allow=["explicit sexual content"], scope_admin=True)
        env.service.refiner = ScriptedRefiner("a p0rn scene, soft light")
        allowed = await env.service.imagine(ADA, "a scene --refine", target=GROUP)
        assert allowed.request.prompt == "a p0rn scene, soft light"  # the server allows it, refined or typed
        elsewhere = await env.service.imagine(ADA, "a scene --refine", target={"platform": "telegram", "chat_id": 5})
        assert elsewhere.request.prompt == "a scene" and "did not pass" in elsewhere.notes[0]
        await asyncio.wait_for(asyncio.gather(allowed.delivery(), elsewhere.delivery()), 30)


def write_tiny_lora(path: Path, seed: int) -> None:
    """A Kohya-named LoRA whose cross-attention reads the tiny model's text width (scan-valid)."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({f"{key}.lora_down.weight": torch.randn(4, TINY_CONTEXT_DIM),
               f"{key}.lora_up.weight": torch.randn(32, 4)}, str(path))


def test_lora_hashes_are_cached_by_path_size_and_mtime(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "loras"
    folder.mkdir()
    first, second = folder / "ink.safetensors", folder / "neon.safetensors"
    write_tiny_lora(first, seed=1)
    write_tiny_lora(second, seed=2)
    cache = tmp_path / "cache" / "lora-hashes.json"
    read: list[str] = []
    real = lora._sha256
    monkeypatch.setattr(lora, "_sha256", lambda path: read.append(path.name) or real(path))

    hashes = lora.HashCache(cache)
    catalog = lora.scan_loras(folder, TINY_CONTEXT_DIM, hashes=hashes)
    assert sorted(read) == ["ink.safetensors", "neon.safetensors"] and cache.is_file()
    ink = catalog.loras["ink"].sha256

    read.clear()  # the next start: nothing changed, nothing is read
    again = lora.scan_loras(folder, TINY_CONTEXT_DIM, hashes=lora.HashCache(cache))
    assert read == [] and again.loras["ink"].sha256 == ink

    write_tiny_lora(first, seed=3)  # changed content (new size or modification time): read again
    stat = first.stat()
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = lora.scan_loras(folder, TINY_CONTEXT_DIM, hashes=lora.HashCache(cache))
    assert read == ["ink.safetensors"] and changed.loras["ink"].sha256 != ink
    assert set(json.loads(cache.read_text())) == {str(first.resolve()), str(second.resolve())}
