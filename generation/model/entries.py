"""``[models.<name>]``: the model catalogue of the config file (issue 25), checked here.

    [models.lightning]                 [models.flux]                  [models.turbo]
    kind = "sdxl-lightning"            kind = "flux-schnell"          kind = "sdxl-turbo"
    default = true                     path = "/models/flux"          traffic = 0.1
                                       traffic = 0.1

Each table is one model: its ``kind``, where its weights are (``path``, or ``repo`` on the Hub;
unset: the kind's own repository), its step counts and guidance. Device, dtype and the speed
options come from ``[model]``, which alone (no ``[models]`` tables) stays the one-model shorthand.
``traffic`` is the share of requests that name no model sent to a candidate (a rollout; the
database's value, set by ``imagine-bot models promote``, wins over it); ``memory_gb`` is what it
needs on the device (measured at the first load when 0), for ``[generation] model_memory_gb``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from generation.core.catalogue import Catalogue, ModelInfo
from generation.core.request import STEP_CHOICES
from generation.model.model_config import MODEL_NAMES, TINY_KINDS, ModelConfig

__all__ = ["KIND_MEMORY_GB", "ModelEntry", "catalogue_of", "check_entries", "entry_configs", "model_id_of", "narrow"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
# what a kind needs on a GPU in bf16 before its first load is measured (weights only)
KIND_MEMORY_GB = {"sdxl-lightning": 7.0, "sdxl-turbo": 7.0, "sdxl": 7.0, "flux-schnell": 24.0,
                  "tiny": 0.01, "tiny-turbo": 0.01, "tiny-flux": 0.01}


@dataclass(frozen=True)
class ModelEntry:
    """[models.NAME]: one model of the catalogue."""

    name: str = ""  # the table's name (not a key)
    kind: str = "sdxl-lightning"  # sdxl-lightning, sdxl-turbo, flux-schnell, sdxl (or tiny, tiny-turbo, tiny-flux)
    path: str | None = None  # a local diffusers folder (imagine-bot download --model NAME makes one)
    repo: str | None = None  # a Hub repository (unset: the kind's own)
    steps: tuple[int, ...] = ()  # step counts it serves (unset: the kind's)
    guidance: float = 0.0  # classifier-free guidance (kind "sdxl" only; 0: none)
    default: bool = False  # the model of requests that name none
    traffic: float = 0.0  # share of requests that name no model sent here (a rollout candidate)
    memory_gb: float = 0.0  # device memory it needs; 0: measured at its first load

    def __post_init__(self) -> None:
        if not self.name:  # a template being read from the file: checked once it has its name
            return
        where = f"models.{self.name}"
        if not _NAME.match(self.name):
            raise ValueError(f"[models.{self.name}]: a model name is 1-32 lowercase letters, digits, '.', '_' "
                             f"or '-', starting with a letter or digit")
        if self.kind not in MODEL_NAMES:
            raise ValueError(f"{where}.kind must be one of {', '.join(MODEL_NAMES)}, not {self.kind!r}")
        if self.kind == "sdxl" and not (self.path or self.repo):
            raise ValueError(f'{where}: kind "sdxl" needs path (a local diffusers folder) or repo (on the Hub)')
        if self.kind in TINY_KINDS and (self.path or self.repo):
            raise ValueError(f"{where}: kind {self.kind!r} is built in-process; remove path and repo")
        steps = tuple(self.steps)
        if any(isinstance(n, bool) or n not in STEP_CHOICES for n in steps):
            raise ValueError(f"{where}.steps must be a list of {', '.join(map(str, STEP_CHOICES))}, not {self.steps!r}")
        object.__setattr__(self, "steps", tuple(sorted(set(steps))))
        if not 0 <= self.traffic <= 1:
            raise ValueError(f"{where}.traffic must be a share from 0 to 1 (0.1 = 10 %), not {self.traffic!r}")
        if self.default and self.traffic:
            raise ValueError(f"{where}: the default model gets every request no candidate takes; remove traffic")
        if self.memory_gb < 0:
            raise ValueError(f"{where}.memory_gb must be 0 (measure it) or more, not {self.memory_gb!r}")
        if self.guidance and self.kind != "sdxl":
            raise ValueError(f"{where}.guidance is for kind \"sdxl\" only; {self.kind} runs without guidance")

    def config(self, base: ModelConfig) -> ModelConfig:
        """The ``[model]`` config of this entry: its kind and weights, ``base``'s device and speed options."""
        changes: dict[str, object] = {"name": self.kind, "path": self.path, "repo": self.repo,
                                      "guidance": self.guidance}
        if self.steps:
            changes["steps"] = self.steps
        elif self.kind != base.name:
            changes["steps"] = (4,) if self.kind != "sdxl-turbo" else (1, 2, 4)
        return replace(base, **changes)  # type: ignore[arg-type]


def check_entries(entries: Sequence[ModelEntry]) -> None:
    """What only the whole catalogue can tell: one default at most, shares within 100 %."""
    defaults = [e.name for e in entries if e.default]
    if len(defaults) > 1:
        raise ValueError(f"[models]: only one model may have default = true, not {', '.join(defaults)}")
    total = sum(e.traffic for e in entries)
    if total > 1 + 1e-9:
        raise ValueError(f"[models]: the traffic shares add up to {total:g}; they must stay within 1")
    if entries and not defaults and entries[0].traffic:
        raise ValueError(f"[models]: no model has default = true and the first one, {entries[0].name}, is a "
                         f"rollout candidate (traffic); mark the default")


def entry_configs(base: ModelConfig, entries: Sequence[ModelEntry]) -> dict[str, tuple[ModelEntry, ModelConfig]]:
    """name -> (entry, its ModelConfig); without entries, the ``[model]`` shorthand as one model."""
    if not entries:
        real = base.name not in TINY_KINDS  # [model] path is ignored by the tiny kinds, as before
        entries = [ModelEntry(name=base.name, kind=base.name, path=base.path if real else None,
                              repo=base.repo if real else None, steps=base.steps, guidance=base.guidance, default=True)]
        return {entries[0].name: (entries[0], base)}
    check_entries(entries)
    return {e.name: (e, e.config(base)) for e in entries}


def narrow(configs: dict[str, tuple[ModelEntry, ModelConfig]], base: ModelConfig,
           model: str | None) -> dict[str, tuple[ModelEntry, ModelConfig]]:
    """``configs`` narrowed to ``model`` (``--model``): a catalogue name, or a kind with
    ``base``'s options; all of them when None. ValueError naming both lists otherwise."""
    if not model:
        return configs
    if model in configs:
        entry, chosen = configs[model]
        return {model: (replace(entry, default=True, traffic=0.0), chosen)}
    if model not in MODEL_NAMES:
        raise ValueError(f"--model {model!r} is neither a model of the catalogue ({', '.join(configs)}) nor a "
                         f"kind ({', '.join(MODEL_NAMES)}).")
    return entry_configs(replace(base, name=model, path=None if model in TINY_KINDS else base.path), ())


def model_id_of(config: ModelConfig) -> str:
    """The model id a config will load as (known without loading it)."""
    from pathlib import Path

    tiny = {"tiny": "tiny-random-sdxl", "tiny-turbo": "tiny-random-sdxl-turbo", "tiny-flux": "tiny-random-flux"}
    if config.name in tiny:
        return tiny[config.name]
    if config.path:
        return f"local:{Path(config.path).name}"
    return config.lightning_repo if config.name == "sdxl-lightning" else config.hub_repo


def catalogue_of(configs: Mapping[str, tuple[ModelEntry, ModelConfig]],
                 loras: tuple[tuple[str, str], ...] = ()) -> Catalogue:
    """The pure catalogue (names, caps, default, shares) of ``configs``; LoRAs go to the SDXL models."""
    from generation.model.pipeline import expected_caps

    infos = []
    for name, (entry, config) in configs.items():
        caps = replace(expected_caps(config, loras if config.name not in ("flux-schnell", "tiny-flux") else ()),
                       name=name)
        infos.append(ModelInfo(name, config.name, caps, model_id_of(config), entry.traffic, entry.default))
    return Catalogue(infos)
