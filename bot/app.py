"""Composition root: config -> pipeline -> worker -> queue -> storage -> service -> front ends.

This is the one module that wires things together; everything else receives what it needs.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from bot import health
from bot.config import Config, ConfigError
from bot.frontends.console import Console, stdin_lines
from bot.maintenance import Maintenance
from bot.safety import DEFAULT_ALLOWLIST, DEFAULT_BLOCKLIST, BlocklistChecker, PromptChecker
from bot.safety.blocklist import load_blocklist
from bot.safety.classifier import OnnxTextClassifier, SecondOpinion
from bot.safety.moderation import Moderation
from bot.service import ImagineService, ServiceSettings, Who
from generation.quality.clip_score import ClipScorer
from generation.scheduling.local import start_workers
from generation.model.lora import LoraCatalog, catalog_for, load_with_loras
from generation.model.entries import ModelEntry, entry_configs, narrow
from generation.model.pipeline import ModelConfig, load_pipeline
from generation.model.preview import with_previews
from generation.model.shelf import load_model, shelf_factory
from generation.scheduling.queue import GenerationQueue
from generation.model.segment import MaskModel
from generation.prompts.describe import Describer
from generation.prompts.refine import PromptRefiner
from generation.tools.upscale import with_upscaler
from storage import Database, ImageStore

__all__ = ["engine", "gallery_url", "model_configs", "run_bot"]

log = logging.getLogger(__name__)


@asynccontextmanager
async def engine(
    config: Config, *, model: str | None = None, drain: bool = True, loras: LoraCatalog | None = None
) -> AsyncIterator[GenerationQueue]:
    """Load the model, start the executors (worker threads or Ray replicas) and the queue; stop
    them on exit.

    ``drain=False`` finishes only the running batches: queued jobs stay queued in the database
    and run after the next start. ``loras``: the scanned [lora] folder (scanned here when None).
    """
    configs = model_configs(config, model)
    model_config = _default_config(configs)
    if loras is None:
        loras = catalog_for(config.lora, model_config.name)
    executors = _start_executors(config, configs, loras)
    q = config.queue
    queue = GenerationQueue(
        executors,
        max_batch_images=q.max_batch_images,
        max_queued_images=q.max_queued_images,
        max_queued_per_user=q.max_queued_per_user,
        priority_burst=q.priority_burst,
        batch_time_limit=q.batch_time_limit_s,
        scale_max_queued=q.scale_max_queued,
        max_executor_failures=q.max_executor_failures,
    )
    queue.start()
    try:
        yield queue
    finally:
        await queue.close(drain=drain)
        for executor in executors:
            await executor.close()


def model_configs(config: Config, model: str | None = None) -> dict[str, tuple[ModelEntry, ModelConfig]]:
    """The catalogue to serve: ``[models.NAME]`` (or ``[model]`` alone); ``model`` (``--model``)
    narrows it to that one model: a catalogue name, or a kind such as "tiny-flux"."""
    try:
        return narrow(entry_configs(config.model, config.models), config.model, model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _default_config(configs: dict[str, tuple[ModelEntry, ModelConfig]]) -> ModelConfig:
    return next((c for e, c in configs.values() if e.default), next(iter(configs.values()))[1])


def _start_executors(config: Config, configs: dict[str, tuple[ModelEntry, ModelConfig]],
                     loras: LoraCatalog | None) -> list[Any]:
    """One worker thread per local device (the default: one), or one Ray Serve executor; each
    device's pipeline gets the LoRAs of ``loras`` attached. Several models: each executor holds a
    ModelShelf of them (loaded on demand within [generation] model_memory_gb)."""
    model_config = _default_config(configs)
    loader: Any = load_pipeline
    if loras is not None:
        loader = functools.partial(load_with_loras, settings=config.lora, catalog=loras)
    upscaler = config.upscale.model_path(Path("models"))
    if upscaler is not None:  # ⬆️ Upscale's network (Lanczos without one)
        loader = functools.partial(with_upscaler, loader=loader, path=str(upscaler))
    if config.preview.enabled and config.generation.backend != "ray":  # live previews: the tiny autoencoder
        loader = functools.partial(with_previews, loader=loader, settings=config.preview)  # (not sent over Ray)
    if len(configs) > 1:  # the SDXL kinds get the LoRAs and upscaler; Flux loads plainly
        loader = functools.partial(shelf_factory, configs, functools.partial(load_model, sdxl_loader=loader),
                                   config.generation.model_memory_gb,
                                   loras=loras.caps_entries if loras is not None else ())
    if config.generation.backend == "ray":
        from generation.scheduling.ray_backend import RayExecutor

        r = config.ray
        return [RayExecutor.connect(
            functools.partial(loader, model_config), address=r.address, replicas=r.replicas,
            min_replicas=r.min_replicas, max_replicas=r.max_replicas, gpus_per_replica=r.gpus_per_replica,
            cpus_per_replica=r.cpus_per_replica, progress_timeout=r.progress_timeout_s,
        )]
    return start_workers(model_config, config.generation.devices, loader=loader)


def gallery_url(config: Config) -> str:
    """Where shared images can be seen: [web] public_url, else the local address it listens on;
    "" when no gallery runs ([web] off, or gallery = false)."""
    web = config.web
    return web.url if web is not None and web.gallery else ""


def prompt_checker(config: Config) -> PromptChecker:
    """The blocklist from [safety]: the built-in categories plus the operator's own terms."""
    s = config.safety
    categories = dict(DEFAULT_BLOCKLIST) if s.default_blocklist else {}
    if s.blocklist_file is not None:
        for name, (words, patterns) in load_blocklist(s.blocklist_file).items():
            old_words, old_patterns = categories.get(name, ((), ()))
            categories[name] = (tuple(old_words) + tuple(words), tuple(old_patterns) + tuple(patterns))
    checker = BlocklistChecker(
        s.words, s.patterns, categories=categories, check_negative=s.check_negative_prompt,
        allow=DEFAULT_ALLOWLIST + tuple(s.allow),
    )
    if s.classifier_file is None:
        return checker
    return SecondOpinion(checker, OnnxTextClassifier(s.classifier_file), threshold=s.classifier_threshold)


async def run_bot(
    config: Config,
    *,
    model: str | None = None,
    lines: Iterable[str] | None = None,
    out: TextIO | None = None,
) -> None:
    """``imagine-bot run``: serve until SIGTERM/SIGINT (or the terminal chat's /quit).

    Discord and Telegram start when their tokens are set, the web front end when [web] is
    enabled; with none of them, the terminal chat runs.
    """
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    console_user = Who("cli", getpass.getuser(), getpass.getuser())
    settings = ServiceSettings(
        daily_quota=config.quota.images,
        quota_window=config.quota.window,
        # whoever runs the terminal chat operates the bot
        admins=config.admins | {console_user.key},
        data_dir=config.storage.data_dir,
        default_model=_default_config(model_configs(config, model)).name,
        public_url=gallery_url(config),
        web_url=config.web.url if config.web is not None else "",
        web_enabled=config.web is not None,
        max_keys_per_user=config.web.max_keys_per_user if config.web is not None else 5,
        image_strength=config.upscale.image_strength,
        upscale_cost=config.quota.upscale_cost,
        upscale_subtle=config.upscale.subtle,
        upscale_creative=config.upscale.creative,
        upscaler=Path(config.upscale.model).stem if config.upscale.model else "Lanczos",
        edit=config.edit,
        describe_per_hour=config.describe.per_hour,
    )
    maintenance_settings = config.maintenance
    if maintenance_settings.backup_dir is None:
        maintenance_settings = replace(maintenance_settings, backup_dir=config.storage.data_dir / "backups")

    loras = catalog_for(config.lora, _default_config(model_configs(config, model)).name)
    async with engine(config, model=model, drain=False, loras=loras) as queue, Database.open(
        config.storage.database
    ) as db:
        store = ImageStore(config.storage.images)
        moderation = Moderation(
            db, config.moderation, prompt_checker=prompt_checker(config), admins=settings.admins
        )
        service = ImagineService(db, store, queue, settings=settings, moderation=moderation)
        service.lora_catalog = loras  # /loras
        if config.refine.model is not None:  # --refine: its own thread, off the GPU worker's path
            service.refiner = PromptRefiner(config.refine)
        if config.edit.mask_model is not None:  # 🖌️ Vary (Region) by words: its own thread, before charging
            service.segmenter = MaskModel(config.edit)
        if config.describe.model is not None:  # /describe: its own thread, off the GPU worker's path
            service.describer = Describer(config.describe)
        if config.eval.clip_model is not None:  # a CLIP score per image, after it is stored
            service.scorer = ClipScorer(config.eval)
        maintenance = Maintenance(db, store, queue, maintenance_settings, window=config.quota.window)
        front_ends: list[Any] = []
        console: Console | None = None
        heartbeat: asyncio.Task[None] | None = None
        try:
            recovered = await service.recover()
            maintenance.start()
            heartbeat = asyncio.create_task(health.beat(config.storage.data_dir, state=lambda: {
                "queued_jobs": queue.snapshot().queued_jobs}), name="heartbeat")  # imagine-bot health
            if config.discord is not None:
                from bot.frontends.discord import DiscordFrontEnd

                front_ends.append(DiscordFrontEnd(service, config.discord))
            if config.telegram is not None:
                from bot.frontends.telegram import TelegramFrontEnd

                front_ends.append(TelegramFrontEnd(service, config.telegram))
            if config.web is not None:
                from bot.frontends.web import WebFrontEnd

                front_ends.append(WebFrontEnd(service, config.web))
            for front in front_ends:
                await front.start(recovered)
                log.info("%s started", type(front).__name__)
            tasks = []
            if not front_ends:  # no chat token: the terminal chat is the front end
                console = Console(service, who=console_user, output_dir=config.output_dir, out=out or sys.stdout)
                await console.resume(recovered)
                tasks.append(asyncio.create_task(
                    console.run(stdin_lines() if lines is None else lines), name="console"
                ))
            await _serve_until_stopped(tasks)
        finally:
            maintenance.stop()
            if heartbeat is not None:
                heartbeat.cancel()
            for front in reversed(front_ends):
                try:
                    await front.close()
                except Exception:
                    log.exception("closing %s failed", type(front).__name__)
            await queue.close(drain=False)  # the batch on the GPU finishes
            await service.close()  # its images are stored
            for helper in (service.refiner, service.scorer, service.segmenter, service.describer):
                if helper is not None:
                    helper.close()
            if console is not None:
                await console.close()  # and delivered, before the database closes
    log.info("stopped")


async def _serve_until_stopped(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for ``tasks`` to finish (forever when none), or SIGTERM/SIGINT; cancel what runs."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            log.info("stop signal received: finishing the running batch")
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in [*tasks, stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        for sig in installed:
            loop.remove_signal_handler(sig)
