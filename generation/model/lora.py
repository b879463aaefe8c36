"""LoRA adapters: scan ``lora.dir``, refuse files that are not LoRAs for this SDXL model, and
switch adapters between batches with an LRU of loaded ones.

    scan_loras(folder, context_dim)  -> LoraCatalog     (usable LoRAs + refused files with reasons)
    catalog_for(settings, model)     -> LoraCatalog | None   (scanned once, in the bot's process)
    attach_loras(pipeline, settings) -> LoraManager     (pipeline.loras; pipeline.caps knows the names)
    load_with_loras(model, settings=, catalog=)          the executors' loader: one per device
                                                        pipeline, local worker or Ray replica
    LoraManager.activate(loras)                         before each batch: load / evict / set_adapters

A file is usable when it is a ``.safetensors`` file with LoRA weights in Kohya/A1111
(``lora_unet_…lora_down.weight``), diffusers (``unet.….lora.down.weight``) or PEFT
(``….lora_A.weight``) naming, whose cross-attention key projection reads text of the width this
model's UNet expects (2048 for SDXL; an SD 1.x LoRA reads 768 and is refused), and whose metadata
(``ss_base_model_version`` / ``modelspec.architecture``), when present, does not name another
base model. Trigger words come from ``modelspec.trigger_phrase`` or the most frequent tags of
``ss_tag_frequency``. The hash is the first 12 hex digits of the file's SHA-256 (it goes into the
image metadata and history); hashes are remembered between starts by path, size and modification
time (:class:`HashCache`), so only a changed file is read again. A ``lora.hub`` repository is downloaded at the scan (the Hugging
Face cache serves it offline) and its file checked the same way; one that cannot be fetched is
refused with the reason, like a bad file.

Switching: ``activate`` loads missing adapters with ``load_lora_weights`` (evicting the least
recently used beyond ``max_loaded`` with ``delete_adapters``), then ``set_adapters`` with the
batch's weights, or ``disable_lora`` for a batch without LoRAs. The queue batches only jobs of
one LoRA set (it is part of the request's shape), so this runs once per batch, and its cost is
logged and counted (``switches``, ``switch_seconds``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generation.core.errors import InvalidRequest

if TYPE_CHECKING:
    from generation.model.model_config import ModelConfig

__all__ = [
    "adapter_name", "HashCache", "LoraCatalog", "LoraInfo", "LoraManager", "LoraSettings", "attach_loras", "catalog_for",
    "default_hash_cache", "load_with_loras", "scan_loras",
]

SDXL_CONTEXT_DIM = 2048  # the text width SDXL's cross-attention reads (768 + 1280)

logger = logging.getLogger(__name__)

_CONTEXT_KEY = re.compile(r"attn2[._]to_k[._].*(lora_A|lora\.down|lora_down)\.weight$")
_LORA_KEY = re.compile(r"(lora_A|lora_B|lora\.down|lora\.up|lora_down|lora_up)\.weight$")
_NAME = re.compile(r"^[\w.\-]+$")


@dataclass(frozen=True)
class LoraSettings:
    """The ``[lora]`` table: a folder of ``.safetensors`` files, optional Hub ids, LRU size."""

    dir: str | None = None
    hub: tuple[str, ...] = ()
    max_loaded: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.max_loaded, bool) or not isinstance(self.max_loaded, int) or self.max_loaded < 1:
            raise ValueError(f"lora.max_loaded must be a whole number of at least 1, not {self.max_loaded!r}")
        object.__setattr__(self, "hub", tuple(self.hub))

    @property
    def configured(self) -> bool:
        """Whether there is anything to scan (a folder or Hub ids)."""
        return self.dir is not None or bool(self.hub)


@dataclass(frozen=True)
class LoraInfo:
    """One usable LoRA: its name in prompts, where it is, and what it says about itself."""

    name: str
    source: str  # the file's path (a Hub repository's is in the Hugging Face cache)
    sha256: str  # first 12 hex digits of the file's SHA-256
    triggers: tuple[str, ...] = ()
    base_model: str = "unknown"
    weight_name: str | None = None


@dataclass
class LoraCatalog:
    """Usable LoRAs by name, and the files that were refused with the reason."""

    loras: dict[str, LoraInfo] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def caps_entries(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, info.sha256) for name, info in sorted(self.loras.items()))

    def describe(self) -> str:
        """The listing of ``/loras`` and ``imagine-bot loras``."""
        if not self.loras and not self.refused:
            return "No LoRAs are installed (set lora.dir in the config)."
        lines = []
        for name, info in sorted(self.loras.items()):
            triggers = ", ".join(info.triggers) if info.triggers else "no trigger words"
            lines.append(f"{name}  [{info.base_model}]  {triggers}  (use <lora:{name}:0.8>)  sha256 {info.sha256}")
        for name, reason in sorted(self.refused.items()):
            lines.append(f"{name}: refused: {reason}")
        return "\n".join(lines)


def default_hash_cache() -> Path:
    """Where file hashes are kept between starts: ``$XDG_CACHE_HOME/imagine-bot/lora-hashes.json``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "imagine-bot" / "lora-hashes.json"


class HashCache:
    """SHA-256 of files, kept in a JSON file by (path, size, modification time): a start re-hashes
    only the LoRA files that changed, not every one (each can be hundreds of MB)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.hashed = 0  # files actually read this time
        self._entries: dict[str, list[Any]] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self._entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError) as err:
                logger.info("LoRA hash cache %s unreadable (%s); hashing again", path, err)

    def sha256(self, file: Path) -> str:
        stat = file.stat()
        key = str(file.resolve())
        entry = self._entries.get(key)
        if isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns] and len(entry) == 3:
            return str(entry[2])
        digest = _sha256(file)
        self.hashed += 1
        self._entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
        self._dirty = True
        return digest

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_suffix(".tmp")
            temp.write_text(json.dumps(self._entries, sort_keys=True), encoding="utf-8")
            os.replace(temp, self.path)
            self._dirty = False
        except OSError as err:  # a read-only home: hash again next time, nothing else changes
            logger.info("LoRA hash cache %s not written (%s)", self.path, err)


def scan_loras(folder: str | Path | None, context_dim: int, hub: Sequence[str] = (),
               hashes: HashCache | None = None) -> LoraCatalog:
    """Every ``.safetensors`` file of ``folder`` checked against a UNet reading ``context_dim``-wide text.

    ``hashes``: where file hashes are remembered between starts (by path, size and modification
    time); without one, every file is hashed.
    """
    hashes = hashes or HashCache(None)
    catalog = LoraCatalog()
    if folder is not None:
        root = Path(folder).expanduser()
        if not root.is_dir():
            catalog.refused[str(root)] = "lora.dir is not a folder"
        else:
            for path in sorted(root.glob("*.safetensors")):
                try:
                    catalog.loras[path.stem] = _inspect(path, context_dim, hashes=hashes)
                except ValueError as err:
                    catalog.refused[path.name] = str(err)
                    logger.warning("LoRA %s refused: %s", path, err)
    for repo in hub:
        name = repo.rstrip("/").split("/")[-1]
        if name in catalog.loras:
            catalog.refused[repo] = f"the name {name!r} is already used by a file in lora.dir"
            continue
        try:
            catalog.loras[name] = _inspect(_hub_file(repo), context_dim, name, hashes=hashes)
        except ValueError as err:
            catalog.refused[repo] = str(err)
            logger.warning("LoRA %s refused: %s", repo, err)
    hashes.save()
    return catalog


def _hub_file(repo: str) -> Path:
    """The LoRA file of Hub repository ``repo``, downloaded (or from the cache when offline):
    its one ``.safetensors`` file, or ``pytorch_lora_weights.safetensors`` among several."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id=repo, allow_patterns=["*.safetensors"]))
    except Exception as err:  # offline, unknown repository, no access: refuse it, keep the rest
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"could not be downloaded from the Hub ({first})") from None
    files = sorted(folder.rglob("*.safetensors"))
    preferred = [f for f in files if f.name == "pytorch_lora_weights.safetensors"]
    if len(files) == 1 or preferred:
        return (preferred or files)[0]
    if not files:
        raise ValueError("the repository has no .safetensors file")
    raise ValueError(f"the repository has {len(files)} .safetensors files; put the one you want in lora.dir")


def _inspect(path: Path, context_dim: int, name: str | None = None, *, hashes: HashCache | None = None) -> LoraInfo:
    from safetensors import SafetensorError, safe_open

    name = name or path.stem
    if not _NAME.match(name):
        raise ValueError("the name may use only letters, digits, '.', '_' and '-' (rename the file)")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            keys = list(handle.keys())
            lora_keys = [k for k in keys if _LORA_KEY.search(k)]
            if not lora_keys:
                raise ValueError("it holds no LoRA weights (no lora_down/lora_A tensors): is it a full model?")
            context = [k for k in lora_keys if _CONTEXT_KEY.search(k)]
            width = handle.get_slice(context[0]).get_shape()[-1] if context else None
    except SafetensorError as err:
        raise ValueError(f"not a readable .safetensors file ({err})") from None
    base = _base_model(metadata)
    if base and "xl" not in base.lower():
        raise ValueError(f"made for {base}, not SDXL (metadata)")
    if width is not None and width != context_dim:
        made_for = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}.get(width, f"text width {width}")
        raise ValueError(f"made for {made_for} (its cross-attention reads {width}-wide text; "
                         f"this model's reads {context_dim})")
    digest = hashes.sha256(path) if hashes is not None else _sha256(path)
    return LoraInfo(name, str(path), digest[:12], _triggers(metadata), base or "SDXL", path.name)


def _base_model(metadata: dict[str, str]) -> str:
    return metadata.get("ss_base_model_version") or metadata.get("modelspec.architecture", "")


def _triggers(metadata: dict[str, str], most: int = 5) -> tuple[str, ...]:
    phrase = metadata.get("modelspec.trigger_phrase")
    if phrase:
        return tuple(p.strip() for p in phrase.split(",") if p.strip())[:most]
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency", "{}"))
    except json.JSONDecodeError:
        return ()
    counts: dict[str, int] = {}
    for tags in frequency.values() if isinstance(frequency, dict) else ():
        for tag, count in tags.items() if isinstance(tags, dict) else ():
            if isinstance(count, int):
                counts[tag.strip()] = counts.get(tag.strip(), 0) + count
    return tuple(sorted(counts, key=lambda t: (-counts[t], t))[:most])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LoraManager:
    """Loads, evicts and activates adapters on one diffusers pipeline (the worker's thread only)."""

    def __init__(self, pipe: Any, catalog: LoraCatalog, max_loaded: int = 4) -> None:
        self.pipe = pipe
        self.catalog = catalog
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[tuple[int, str], None] = OrderedDict()  # (id(unet), name), LRU first
        self._ordinals: dict[int, int] = {}  # id(unet) -> 0, 1, ...: its adapters' name suffix
        self._active: tuple[int, tuple[tuple[str, float], ...]] | None = None  # (id(unet), LoRA set)
        self.switches = 0
        self.switch_seconds = 0.0
        self.loads = 0
        self.evictions = 0

    @property
    def loaded(self) -> list[str]:
        """Names loaded on the current UNet, least recently used first."""
        unet = id(self.pipe.unet)
        return [name for u, name in self._loaded if u == unet]

    def activate(self, loras: Sequence[tuple[str, float]], pipe: Any = None) -> None:
        """Make exactly ``loras`` ((name, weight), ...) active on ``pipe``'s current UNet
        (``pipe``: the txt2img or img2img pipeline of this batch; both share the modules)."""
        if pipe is not None:
            self.pipe = pipe
        wanted = tuple(loras)
        unet = id(self.pipe.unet)
        if (unet, wanted) == self._active and all((unet, n) in self._loaded for n, _ in wanted):
            return
        if not wanted and not self._loaded:  # nothing was ever loaded: nothing to switch off
            self._active = (unet, wanted)
            return
        started = time.perf_counter()
        for name, _ in wanted:
            self._ensure_loaded(unet, name, keep={n for n, _ in wanted})
        if wanted:
            self.pipe.enable_lora()
            names = [self._adapter(unet, n) for n, _ in wanted]
            self.pipe.set_adapters(names, adapter_weights=[w for _, w in wanted])
        elif self._loaded:
            self.pipe.disable_lora()
        seconds = time.perf_counter() - started
        self.switches += 1
        self.switch_seconds += seconds
        logger.info("LoRA switch %s -> %s took %.3f s", _label(self._active[1] if self._active else ()),
                    _label(wanted), seconds)
        self._active = (unet, wanted)

    def _adapter(self, unet: int, name: str) -> str:
        """The adapter name of LoRA ``name`` on one UNet. Each step count's UNet loads its own copy,
        and so do the shared text encoders (a file may adapt them too): one name per UNet keeps
        the copies apart, and set_adapters on the pipeline picks the current UNet's."""
        ordinal = self._ordinals.setdefault(unet, len(self._ordinals))
        return adapter_name(name) + (f"_{ordinal}" if ordinal else "")

    def _ensure_loaded(self, unet: int, name: str, keep: set[str]) -> None:
        key = (unet, name)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return
        info = self.catalog.loras.get(name)
        if info is None:
            raise InvalidRequest("lora", f"Unknown LoRA {name!r}; /loras lists them.")
        while sum(1 for u, _ in self._loaded if u == unet) >= self.max_loaded:
            victim = next((k for k in self._loaded if k[0] == unet and k[1] not in keep), None)
            if victim is None:
                break
            del self._loaded[victim]
            self.pipe.delete_adapters(self._adapter(unet, victim[1]))
            self.evictions += 1
            logger.info("LoRA %s evicted (LRU, max_loaded=%d)", victim[1], self.max_loaded)
        if info.weight_name is not None:
            folder = str(Path(info.source).parent)
            self.pipe.load_lora_weights(folder, weight_name=info.weight_name, adapter_name=self._adapter(unet, name))
        else:
            self.pipe.load_lora_weights(info.source, adapter_name=self._adapter(unet, name))
        self._loaded[key] = None
        self.loads += 1


def adapter_name(name: str) -> str:
    """The PEFT adapter name of LoRA ``name``: a module key, so never "keys", "to" or "a.b"."""
    return "lora_" + hashlib.sha256(name.encode()).hexdigest()[:12]


def catalog_for(settings: LoraSettings, model: str) -> LoraCatalog | None:
    """The scanned ``[lora]`` folder for model ``model`` ("tiny" or an SDXL); None when unset."""
    if not settings.configured:
        return None
    from generation.model.tiny import TINY_CONTEXT_DIM

    catalog = scan_loras(settings.dir, TINY_CONTEXT_DIM if model == "tiny" else SDXL_CONTEXT_DIM, settings.hub,
                         HashCache(default_hash_cache()))
    logger.info("LoRAs: %d usable, %d refused", len(catalog.loras), len(catalog.refused))
    return catalog


def attach_loras(pipeline: Any, settings: LoraSettings, catalog: LoraCatalog | None = None) -> LoraManager | None:
    """Give ``pipeline`` (a LightningPipeline) a LoraManager over ``catalog`` (scanned here when
    not given); its caps learn the usable names. None (nothing changed) when none are configured."""
    if catalog is None:
        if not settings.configured:
            return None
        catalog = scan_loras(settings.dir, int(pipeline.pipe.unet.config.cross_attention_dim), settings.hub)
    _unfuse(pipeline)
    manager = LoraManager(pipeline.pipe, catalog, settings.max_loaded)
    pipeline.loras = manager
    pipeline.caps = replace(pipeline.caps, loras=catalog.caps_entries)
    return manager


def load_with_loras(model: ModelConfig, *, settings: LoraSettings, catalog: LoraCatalog | None) -> Any:
    """``load_pipeline(model)`` with the LoRAs attached: the loader of every executor (module-level,
    so Ray can pickle it; a replica reads the files at the same paths)."""
    from generation.model.pipeline import load_pipeline

    pipeline = load_pipeline(model)
    attach_loras(pipeline, settings, catalog)
    return pipeline


def _unfuse(pipeline: Any) -> None:
    """Undo model.fuse_qkv on the UNets: a fused attention reads ``to_qkv``, so adapters on
    ``to_q``/``to_k``/``to_v`` would be silently ignored."""
    from diffusers.models.attention_processor import Attention

    unets = {id(u): u for u in [*getattr(pipeline, "_unets", {}).values(), pipeline.pipe.unet]}
    for unet in unets.values():
        if getattr(unet, "original_attn_processors", None) is None:
            continue
        unet.unfuse_qkv_projections()
        unet.original_attn_processors = None
        for module in unet.modules():
            if isinstance(module, Attention) and module.fused_projections:
                for fused in ("to_qkv", "to_kv"):
                    if hasattr(module, fused):
                        delattr(module, fused)
                module.fused_projections = False
        logger.info("model.fuse_qkv is undone on the UNet: LoRAs adapt the unfused q/k/v projections")


def _label(loras: Sequence[tuple[str, float]] | None) -> str:
    return ", ".join(f"{n}:{w:g}" for n, w in loras) if loras else "none"
