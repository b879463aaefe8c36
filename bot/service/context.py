"""What every part of the service needs: the resources, the settings, and the shared lookups.

:class:`ServiceContext` holds the database, image store, queue, moderation and clock, the jobs
this process follows, and the helpers that more than one part uses (user and job lookups, the
admin check, quota status, turning stored rows into the types front ends see, answering a
repeated platform request with its job; storing and closing requests is :mod:`.inbox`). The parts
(:mod:`.jobs`, :mod:`.history`, :mod:`.accounts`, :mod:`.admin`) build on it and never on each
other, so they cannot import each other in a circle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.options import render
from bot.safety import AllowAllImages, BlocklistChecker, ImageChecker, Moderation, PromptChecker, VerdictClassifier
from bot.service.accounts_rules import QuotaStatus
from bot.service.tickets import AlreadyAccepted, Delivery, NotAllowed, NotFound, StoredImage, Ticket, Via, Who
from generation.core.catalogue import Catalogue
from generation.core.errors import ImagineError, InvalidRequest
from generation.scheduling.queue import GenerationQueue
from generation.tools.masks import EditSettings
from generation.core.request import GenerationRequest, ModelCaps
from storage import Database, ImageStore, images, jobs, links, messages, model_stats, quotas, shares, users
from storage.clock import utcnow
from storage.group import GroupWriter
from storage.records import Image, Job, User

__all__ = ["ACTIVE", "Origin", "ServiceContext", "ServiceSettings"]

ACTIVE = ("queued", "running")
Origin = tuple[str, str]  # (platform, inbox key) of the stored request a job comes from


@dataclass(frozen=True)
class ServiceSettings:
    """What the operator configures for the service."""

    daily_quota: int = 50  # images per quota window
    quota_window: str = "daily"  # one of storage.quotas.WINDOWS
    admins: frozenset[str] = frozenset()  # "platform:user_id"
    data_dir: Path = Path("data")  # exports go to data_dir/exports
    default_model: str = "sdxl-lightning"
    checkpoint_hash: str | None = None  # recorded with each job when the executor has none
    variation_strength: float = 0.6
    image_strength: float = 0.6  # how much of a user's own image changes when they give no strength
    upscale_cost: int = 1  # quota an upscale costs ([quota] upscale_cost)
    upscale_subtle: float = 0.3  # strength of the tiled pass after enlarging: Upscale (Subtle)
    upscale_creative: float = 0.55  # … and Upscale (Creative)
    upscaler: str = "Lanczos"  # the name of upscale.model's network (its file's stem), else Lanczos
    admin_priority: bool = True  # admins' jobs use the queue's priority lane
    settle_timeout_s: float = 30.0  # how long cancel/forget wait for a job to settle
    public_url: str = ""  # where the web gallery answers, for links in chat replies; "": no gallery runs
    web_enabled: bool = True  # whether the web front end runs ([web] enabled): /web has a studio to link to
    web_url: str = ""  # where the web front end answers, for sign-in links, gallery or not; "": public_url
    max_keys_per_user: int = 5  # live API keys per account ([web] max_keys_per_user)
    edit: EditSettings = field(default_factory=EditSettings)  # 🖌️ Vary (Region): masks ([edit])
    describe_per_hour: int = 20  # /describe calls per user per hour ([describe] per_hour)

    def __post_init__(self) -> None:
        if self.quota_window not in quotas.WINDOWS:
            raise ValueError(f"`quota_window` must be one of {', '.join(quotas.WINDOWS)}, not {self.quota_window!r}")
        if self.daily_quota < 0:
            raise ValueError(f"`daily_quota` must be 0 or more, not {self.daily_quota}")
        if self.max_keys_per_user < 1:
            raise ValueError(f"`max_keys_per_user` must be 1 or more, not {self.max_keys_per_user}")
        object.__setattr__(self, "admins", frozenset(self.admins))
        object.__setattr__(self, "data_dir", Path(self.data_dir))


class ServiceContext:
    """The resources and shared lookups of the service; the parts add the operations."""

    def __init__(
        self,
        db: Database,
        store: ImageStore,
        queue: GenerationQueue,
        *,
        settings: ServiceSettings | None = None,
        prompt_checker: PromptChecker | None = None,
        image_checker: ImageChecker | None = None,
        moderation: Moderation | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.store = store
        self.queue = queue
        self.config = settings or ServiceSettings()
        self.prompt_checker: PromptChecker = prompt_checker or BlocklistChecker.default()
        self.image_checker: ImageChecker = image_checker or AllowAllImages()
        # strikes, cooldowns, per-scope image policy (bot.safety.moderation); without one, the
        # checkers above with no request spacing
        self.moderation = moderation or Moderation.permissive(
            db, prompt_checker=self.prompt_checker, image_classifier=VerdictClassifier(self.image_checker),
            admins=self.config.admins, clock=clock)
        self.clock = clock
        self.refiner: Any = None  # generation.prompts.refine.PromptRefiner when [refine] model is set (bot.app)
        self.lora_catalog: Any = None  # generation.model.lora.LoraCatalog when [lora] is set (bot.app)
        self.segmenter: Any = None  # generation.model.segment.MaskModel when [edit] mask_model is set (bot.app)
        self.describer: Any = None  # generation.prompts.describe.Describer when [describe] model is set (bot.app)
        self.scorer: Any = None  # generation.quality.clip_score.ClipScorer when [eval] clip_model is set (bot.app)
        self.scoring: set[asyncio.Task[None]] = set()  # CLIP scoring in flight (bot.service.scoring)
        self.writes = GroupWriter(db)  # jobs of one batch share their transactions
        self._seen_model: tuple[str, str | None, object] | None = None  # model_versions written today
        # /forget ends the account's sessions on every front end that keeps any: each hook gets
        # the account's user id and returns how many it ended (API keys are revoked in storage)
        self.session_enders: list[Callable[[int], Awaitable[int]]] = []
        self._tickets: dict[str, Ticket] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def caps(self) -> ModelCaps:
        return self.queue.caps

    @property
    def model_id(self) -> str:
        return self.queue.model_id

    @property
    def checkpoint_hash(self) -> str | None:
        return getattr(self.queue.executor, "checkpoint_hash", None) or self.config.checkpoint_hash

    # -- several models (issue 25) ----------------------------------------------------------------

    @property
    def catalogue(self) -> Catalogue:
        """The models this bot serves (one: the [model] shorthand)."""
        return self.queue.catalogue

    def caps_for(self, model: str) -> ModelCaps:
        """What model ``model`` accepts ("" = the default); InvalidRequest for an unknown name."""
        if model and model not in self.catalogue:
            self.catalogue.resolve(model)  # raises, listing the models
        return self.queue.caps_for(model)

    @property
    def parse_models(self) -> Catalogue | None:
        """The catalogue for parse_imagine: None when the bot has one model (``--model`` then
        accepts only its name)."""
        return self.catalogue if len(self.catalogue) > 1 else None

    def model_choices(self, current: str = "") -> list[str]:
        """Model names that contain ``current`` (autocomplete), the default first."""
        names = [self.catalogue.default, *(n for n in self.catalogue.names if n != self.catalogue.default)]
        return [n for n in names if current.strip().lower() in n.lower()]

    def model_id_for(self, model: str) -> str:
        return self.queue.model_id_for(model)

    def checkpoint_hash_for(self, model: str) -> str | None:
        return self.queue.checkpoint_hash_for(model) or self.config.checkpoint_hash

    def _model_for(self, kind: str, model: str) -> str:
        """The model an action of ``kind`` on an image of ``model`` runs on: that model, or the
        default when it cannot (a Flux image is upscaled, varied or zoomed by the SDXL default)."""
        if kind in self.caps_for(model).kinds or kind not in self.caps.kinds:
            return model
        return ""

    async def _rollout(self, who: Who) -> str:
        """The model a request of ``who`` that names none goes to: a rollout candidate for the
        users in its share (the database's live shares over the config's), else "" (the default)."""
        if len(self.catalogue) < 2:
            return ""
        return self.catalogue.pick(who.key, await model_stats.traffic(self.db))

    def is_admin(self, who: Who) -> bool:
        return who.key in self.config.admins

    async def owns(self, who: Who, job_id: str) -> bool:
        """Whether job ``job_id`` was asked for by ``who`` (admins own every job)."""
        if self.is_admin(who):
            return True
        row = await jobs.get(self.db, job_id)
        user = await users.get_by_platform(self.db, who.platform, who.user_id)  # linked: the account
        return row is not None and user is not None and row.user_id == user.id

    def _require_admin(self, admin: Who) -> None:
        if not self.is_admin(admin):
            raise NotAllowed("Only the bot's admins can do that.")

    async def _user(self, who: Who) -> User:
        # a read first: the common case (known user, same name) then writes nothing
        user = await users.get_by_platform(self.db, who.platform, who.user_id)  # linked: the account
        if user is not None and (not who.display_name or user.display_name == who.display_name
                                 or (user.platform, user.platform_user_id) != (who.platform, who.user_id)):
            return user
        own = await users.get_or_create(self.db, who.platform, who.user_id, who.display_name)
        return user if user is not None else own

    async def _active_user(self, who: Who, *, spaced: bool = True) -> User:
        """The caller's account, unless blocked, cooling down or (``spaced``) asking too soon."""
        user = await self._user(who)
        if user.blocked:
            raise NotAllowed("You are blocked from making images on this bot.")
        await self.moderation.admit(who, spaced=spaced)  # strike block, cooldown, request spacing (Restricted)
        # one account on several platforms: the stricter moderation state holds
        for platform, user_id, blocked in await links.identities(self.db, user.id) if user.linked else ():
            if blocked:
                raise NotAllowed("You are blocked from making images on this bot.")
            if (platform, user_id) != (who.platform, who.user_id):
                await self.moderation.admit(Who(platform, user_id), spaced=spaced)
        return user

    async def _acting_on(self, who: Who, job_id: str, *, via: Via | None = None,
                         index: int | None = None) -> Job:
        """Job ``job_id`` if ``who`` may act on it (image ``index`` of it), else NotFound.

        Allowed: its owner (any identity of a linked account), an admin, or a click ``via`` a
        message the platform showed ``who`` that is one of the job's recorded messages (and shows
        image ``index``, when it shows one image). Nothing else: not a typed id, not a forged
        button. Another's job looks like one that does not exist.
        """
        row = await jobs.get(self.db, job_id) if isinstance(job_id, str) and job_id else None
        if row is not None and (self.is_admin(who) or await self._owner_of(who, row.user_id)):
            return row
        if row is not None and via is not None:
            shown = await messages.find(self.db, who.platform, via.chat_id, via.message_id)
            if shown is not None and shown[0] == row.id and (shown[1] is None or index is None or shown[1] == index):
                return row
        raise NotFound(f"There is no request {job_id} that you can use. Use the buttons under a result "
                       "you can see, or the ids of your own requests (/history).")

    async def _owner_of(self, who: Who, user_id: int) -> bool:
        user = await users.get_by_platform(self.db, who.platform, who.user_id)  # linked: the account
        return user is not None and user.id == user_id

    async def _may_see_image(self, who: Who, image: Image, *, via: Via | None = None) -> bool:
        """Whether ``who`` may view or rate ``image``: shared publicly, or as :meth:`_acting_on`."""
        if await shares.for_image(self.db, image.id) is not None:
            return True
        try:
            await self._acting_on(who, image.job_id, via=via, index=image.idx)
        except NotFound:
            return False
        return True

    def _request_from(self, data: dict[str, Any]) -> GenerationRequest:
        """A stored request dict as a request this model can run (InvalidRequest if not)."""
        request = GenerationRequest.from_dict(data)
        return self.caps_for(request.model).check(request)

    def _text(self, data: dict[str, Any]) -> str:
        """Canonical /imagine text of a stored request (the prompt if the model changed)."""
        try:
            return self._described(GenerationRequest.from_dict(data))
        except ImagineError:
            return str(data.get("prompt", ""))

    def _command(self, request: GenerationRequest) -> str:
        """The canonical /imagine text of ``request`` (the prompt if this model cannot render it)."""
        try:
            return render(request, self.caps_for(request.model))
        except ImagineError:
            return request.prompt

    def _png_params(self, request: GenerationRequest, job_id: str, index: int, seed: int,
                    model: str) -> dict[str, Any]:
        """What a stored image of ``job_id`` says about itself (png_with_metadata keeps only what
        may travel: no paths, no user ids)."""
        styled, styled_negative = request.styled_prompts
        return {**request.to_dict(), "seed": seed, "index": index, "job_id": job_id, "model": model,
                "first_seed": request.seed, "model_hash": self.checkpoint_hash_for(request.model),
                "command": self._command(request), "variation_of": self._variation_of(request),
                "styled_prompt": styled, "styled_negative_prompt": styled_negative}

    @staticmethod
    def _variation_of(request: GenerationRequest) -> dict[str, Any] | None:
        """{"job", "image", "command"} of a variation: where it comes from and how to make another."""
        if not request.variation_of:
            return None
        job, _, image = request.variation_of.partition("#")
        return {"job": job, "image": int(image) if image.isdecimal() else image,
                "command": f"/variation {job} {image}"}

    def _described(self, request: GenerationRequest) -> str:
        """What a done line and history show: the /imagine text, or what a variation varies."""
        if request.kind == "edit":
            region = f"“{request.edit_words}”" if request.edit_words else "a drawn region"
            of = "your image"
            if request.source:
                job, _, number = request.source.partition("#")
                of = f"image {number} of {job}"
            return f"🖌️ vary (region) of {of}: {region} → {self._command(request)}"
        if request.kind in ("upscale", "zoom", "pan") and request.source:
            job, _, number = request.source.partition("#")
            what = {"upscale": f"⬆️ upscale ({request.mode})", "zoom": f"🔍 zoom out {request.mode}x",
                    "pan": f"↔️ pan {request.mode}"}[request.kind]
            return f"{what} of image {number} of {job} ({self._command(request)}); {request.width}x{request.height}"
        if request.kind == "enlarge":
            return f"⬆️ {self.config.upscaler} 2x of your picture; {request.width}x{request.height}"
        variation = self._variation_of(request)
        if variation is None and request.kind == "img2img":
            return f"{self._command(request)} (from your image)"
        if variation is None:
            return self._command(request)
        # how to ask for another is the front end's to say: buttons on a chat, a command on the console
        return f"variation of image {variation['image']} of {variation['job']} ({self._command(request)})"

    def _stored(self, row: Image) -> StoredImage:
        return StoredImage(row.id, row.idx, row.seed, self.store.path_for(row.path),
                           row.width, row.height, row.sha256, row.safety)

    def _delivery(self, job_id: str, request: GenerationRequest, rows: list[Image], *,
                  cached: bool, target: dict[str, Any]) -> Delivery:
        text = self._described(request)
        mask = Path(request.init_image) if request.kind == "edit" and request.init_image else None
        return Delivery(job_id, request, text, tuple(self._stored(r) for r in rows), cached, dict(target), mask)

    async def _delivery_of(self, row: Job) -> Delivery:
        rows = await images.images_for_job(self.db, row.id)
        return self._delivery(row.id, GenerationRequest.from_dict(row.request), rows, cached=False,
                              target=row.target)

    @staticmethod
    def _image_id(image_id: int | str) -> int:
        if isinstance(image_id, str) and image_id.strip().isdecimal():
            return int(image_id.strip())
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise InvalidRequest("image_id", f"An image id is a number, not {image_id!r}.")
        return image_id

    async def _find_image(self, ref: int | str) -> Image:
        """An image by either of its names: the chat's number (``12``, as /history shows it) or
        the API's ``<job>-<n>`` (n from 1). NotFound when there is none; InvalidRequest when
        ``ref`` is neither form."""
        text = str(ref).strip() if isinstance(ref, (int, str)) and not isinstance(ref, bool) else ""
        job_id, sep, number = text.rpartition("-")
        if text.isdecimal():
            row = await images.get_image(self.db, int(text))
        elif sep and job_id and number.isdecimal() and int(number) >= 1:
            row = next((i for i in await images.images_for_job(self.db, job_id) if i.idx == int(number) - 1), None)
        else:
            raise InvalidRequest("image_id", f"An image is named by its number (as in /history, e.g. 12) or "
                                             f"as JOB-N (as in the API, e.g. 99e2fee61583-1), not {ref!r}.")
        if row is None:
            raise NotFound(f"There is no image {text}.")
        return row

    async def _settle_row(self, job_id: str, status: str, error: str = "") -> int:
        """Mark the row failed/cancelled and refund it (once), in one transaction; the images refunded."""
        _, refunded = await jobs.settle(self.db, job_id, status, error, self.clock())
        return refunded

    async def _quota_status(self, user_id: int) -> QuotaStatus:
        now = self.clock()
        window = quotas.window_start(now, self.config.quota_window)
        limit = await quotas.effective_limit(self.db, user_id, self.config.daily_quota)
        used = await quotas.used(self.db, user_id, window)
        return QuotaStatus(used, limit, max(0, limit - used),
                           quotas.next_reset(now, self.config.quota_window))

    def _quota_message(self, asked: int, used: int, limit: int, now: datetime) -> str:
        remaining = max(0, limit - used)
        reset = quotas.next_reset(now, self.config.quota_window)
        wait = _duration((reset - now).total_seconds())
        period = {"hourly": "this hour", "daily": "today", "weekly": "this week"}[self.config.quota_window]
        left = "no images" if remaining == 0 else f"{remaining} image{'s' if remaining != 1 else ''}"
        return (f"You have {left} left of your {limit} {period}; this request needs {asked}. "
                f"Your quota resets at {reset:%Y-%m-%d %H:%M} UTC (in {wait}).")


    # -- a platform request already accepted (storing and closing requests: inbox.py) ------------

    async def accepted(self, platform: str, key: str | int) -> str | None:
        """The job accepted for the stored platform request (``origin``), if one was."""
        found = await jobs.find_by_origin(self.db, f"{platform}:{key}")
        return found.id if found is not None else None

    async def _raise_if_accepted(self, origin: Origin | None) -> None:
        """A repeated request is answered with its job before any limit or check."""
        if origin is not None and (job_id := await self.accepted(*origin)) is not None:
            raise AlreadyAccepted(job_id)

def _duration(seconds: float) -> str:
    minutes = max(1, int(seconds + 59) // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
