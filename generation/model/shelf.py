"""Several models behind one executor (issue 25): loaded on demand, least recently used out first.

A :class:`ModelShelf` is an ImagePipeline: the worker thread (or a Ray replica) calls
``generate(batch)`` and the shelf runs it on the model ``batch.model`` names ("" = the default),
loading it first when it is not resident. ``budget_gb`` (``[generation] model_memory_gb``; 0 = no
limit) bounds what stays loaded: before a load, the least recently used models are unloaded
until the newcomer fits (a model needs ``memory_gb`` from its table, or what it measured at its
last load, or its kind's guess). Each switch is logged with its cost, counted, and its measured
seconds become the switch cost the queue adds to ETAs (:meth:`plan_switch`).

    shelf = ModelShelf(entry_configs(...), loader, budget_gb=30)
    shelf.generate(Batch(..., model="flux"))   # loads flux (unloading others if needed), runs it
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch

from generation.core.batch import Batch, StepCallback
from generation.core.catalogue import Catalogue
from generation.core.errors import InvalidRequest
from generation.core.request import ModelCaps
from generation.model.entries import KIND_MEMORY_GB, ModelEntry, catalogue_of
from generation.model.model_config import FLUX_KINDS, ModelConfig

__all__ = ["ModelShelf", "load_model", "memory_gb", "shelf_factory"]

logger = logging.getLogger(__name__)

_GUESS_LOAD_S = {"tiny": 0.5, "tiny-turbo": 0.5, "tiny-flux": 1.0}  # before the first measured load
_REAL_LOAD_S = 30.0


def memory_gb(pipeline: Any) -> float:
    """GB of weights a loaded pipeline holds (every torch module it reaches, each tensor once)."""
    seen: set[int] = set()
    total = 0
    modules = []
    pipe = getattr(pipeline, "pipe", pipeline)
    for component in getattr(pipe, "components", {}).values():
        if isinstance(component, torch.nn.Module):
            modules.append(component)
    modules += [u for u in getattr(pipeline, "_unets", {}).values() if isinstance(u, torch.nn.Module)]
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            key = tensor.data_ptr()
            if key and key not in seen:
                seen.add(key)
                total += tensor.numel() * tensor.element_size()
    return total / 1e9


def load_model(config: ModelConfig, *, sdxl_loader: Callable[[ModelConfig], Any] | None = None) -> Any:
    """Load one model: Flux kinds plainly, SDXL kinds through ``sdxl_loader`` (LoRAs, upscaler)."""
    from generation.model.pipeline import load_pipeline

    if config.name in FLUX_KINDS or sdxl_loader is None:
        return load_pipeline(config)
    return sdxl_loader(config)


class ModelShelf:
    """An ImagePipeline over several models, at most ``budget_gb`` of them loaded at a time."""

    def __init__(self, configs: Mapping[str, tuple[ModelEntry, ModelConfig]], loader: Callable[[ModelConfig], Any],
                 *, budget_gb: float = 0.0, clock: Callable[[], float] = time.perf_counter,
                 loras: tuple[tuple[str, str], ...] = ()) -> None:
        """``loras``: the scanned [lora] folder's (name, hash) entries, which the SDXL models accept
        before they are loaded (so a LoRA request for a model not loaded yet is not refused)."""
        if budget_gb < 0:
            raise ValueError(f"generation.model_memory_gb must be 0 (no limit) or more, not {budget_gb}")
        self._configs = dict(configs)
        self.catalogue: Catalogue = catalogue_of(self._configs, loras)
        self._loader = loader
        self.budget_gb = budget_gb
        self._clock = clock
        self._loaded: OrderedDict[str, Any] = OrderedDict()  # least recently used first (worker thread)
        self._resident: tuple[str, ...] = ()  # its names, replaced whole: read from the event loop's thread
        self._gb = {name: entry.memory_gb for name, (entry, _) in self._configs.items() if entry.memory_gb}
        self._load_s: dict[str, float] = {}
        self.loads: Counter[str] = Counter()
        self.unloads: Counter[str] = Counter()
        self.switch_seconds_total = 0.0
        self._get(self.catalogue.default)  # the default serves the first requests without a wait

    # -- what the queue sees ---------------------------------------------------------------------

    @property
    def caps(self) -> ModelCaps:
        """The default model's caps (its LoRAs included once loaded)."""
        return self.caps_for(self.catalogue.default)

    @property
    def models(self) -> dict[str, ModelCaps]:
        return {name: self.caps_for(name) for name in self.catalogue.names}

    def caps_for(self, name: str) -> ModelCaps:
        name = name or self.catalogue.default
        loaded = self._loaded.get(name)
        caps = loaded.caps if loaded is not None else self.catalogue.models[name].caps
        return caps if caps.name == name else replace(caps, name=name)

    @property
    def model_id(self) -> str:
        return self.model_id_for("")

    def model_id_for(self, name: str) -> str:
        name = name or self.catalogue.default
        loaded = self._loaded.get(name)
        return loaded.model_id if loaded is not None else self.catalogue.models[name].model_id

    @property
    def checkpoint_hash(self) -> str | None:
        return self.checkpoint_hash_for("")

    def checkpoint_hash_for(self, name: str) -> str | None:
        loaded = self._loaded.get(name or self.catalogue.default)
        return getattr(loaded, "checkpoint_hash", None)

    def resident(self) -> tuple[str, ...]:
        """The loaded models, least recently used first."""
        return self._resident

    def need_gb(self, name: str) -> float:
        return self._gb.get(name, KIND_MEMORY_GB.get(self._configs[name][1].name, 7.0))

    def load_seconds(self, name: str) -> float:
        """What loading ``name`` costs: measured, else the mean measured, else the kind's guess."""
        if name in self._load_s:
            return self._load_s[name]
        kind = self._configs[name][1].name
        if kind in _GUESS_LOAD_S:
            return _GUESS_LOAD_S[kind]
        return sum(self._load_s.values()) / len(self._load_s) if self._load_s else _REAL_LOAD_S

    def plan_switch(self, name: str, resident: tuple[str, ...]) -> tuple[float, tuple[str, ...]]:
        """(seconds, resident after) of running a batch of ``name`` when ``resident`` are loaded
        (least recently used first): pure, for the queue's ETA simulation."""
        name = name or self.catalogue.default
        if name in resident:
            return 0.0, tuple(n for n in resident if n != name) + (name,)
        kept = list(resident)
        while kept and self.budget_gb and sum(self.need_gb(n) for n in kept) + self.need_gb(name) > self.budget_gb:
            kept.pop(0)
        return self.load_seconds(name), tuple(kept) + (name,)

    def switch_seconds(self, name: str) -> float:
        return self.plan_switch(name, self.resident())[0]

    # -- the worker thread -----------------------------------------------------------------------

    def generate(self, batch: Batch, on_step: StepCallback | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[Any]:
        name = batch.model or self.catalogue.default
        if name not in self._configs:
            raise InvalidRequest("model", f"Unknown model {name!r}; this bot has {', '.join(self._configs)}.")
        return self._get(name).generate(batch, on_step, should_stop)

    def _get(self, name: str) -> Any:
        """The pipeline of ``name``, loading it (and unloading others to fit) when needed."""
        if name in self._loaded:
            self._loaded.move_to_end(name)
            self._resident = tuple(self._loaded)
            return self._loaded[name]
        _, after = self.plan_switch(name, self.resident())
        for old in [n for n in self._loaded if n not in after]:
            self._unload(old)
        started = self._clock()
        pipeline = self._loader(self._configs[name][1])
        seconds = self._clock() - started
        if not self._configs[name][0].memory_gb:
            self._gb[name] = memory_gb(pipeline)
        self._load_s[name] = seconds
        self._loaded[name] = pipeline
        self._resident = tuple(self._loaded)
        self.loads[name] += 1
        if sum(self.loads.values()) > 1:
            self.switch_seconds_total += seconds
        logger.info("model switch: loaded %s (%s, %.3g GB) in %.2f s; resident: %s", name, pipeline.model_id,
                    self._gb[name], seconds, ", ".join(self._loaded))
        return pipeline

    def _unload(self, name: str) -> None:
        pipeline = self._loaded.pop(name)
        self._resident = tuple(self._loaded)
        del pipeline
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.unloads[name] += 1
        logger.info("model switch: unloaded %s (%.3g GB) to fit the %g GB budget", name, self.need_gb(name),
                    self.budget_gb)

    def warm_up(self) -> None:
        warm = getattr(self._loaded.get(self.catalogue.default), "warm_up", None)
        if callable(warm):
            warm()


def shelf_factory(configs: Mapping[str, tuple[ModelEntry, ModelConfig]], loader: Callable[[ModelConfig], Any],
                  budget_gb: float, config: ModelConfig | None = None, *,
                  loras: tuple[tuple[str, str], ...] = ()) -> ModelShelf:
    """A ModelShelf (module-level, so Ray can pickle ``functools.partial(shelf_factory, ...)``;
    ``config``: the device-specific ``[model]`` a local executor passes, whose device wins)."""
    if config is not None:
        configs = {n: (e, replace(c, device=config.device)) for n, (e, c) in configs.items()}
    return ModelShelf(configs, loader, budget_gb=budget_gb, loras=loras)
