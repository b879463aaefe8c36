"""ImagineService: the one place where quota, safety, jobs, the queue and storage meet.

The service is split by responsibility; :class:`ImagineService` is the facade that front ends use::

    context.py         ServiceContext: resources, settings, shared lookups (every part builds on it)
    jobs.py            imagine, reroll, variation, following and storing jobs, recover
    accepting.py       every request's last step in: prompt check, a stored identical result, quota +
                       job row (transactions shared with requests accepted at once), the queue
    outcomes.py        delivery bookkeeping: delivered, told (a failure shown once); cancel
    inbox.py           platform requests stored before they are acknowledged, found again after a crash
    uploads.py         an image a user sends (every front end, the compatible APIs too): checked,
                       safety-checked, fitted, stored before any charge
    toolbox.py         actions on an image that make a new job: upscale, zoom out, pan, edit a
                       region (🖌️ Vary (Region)); a Lanczos enlargement of an upload (A1111 extra-single-image)
    describing.py      /describe: a caption and four /imagine prompts from a picture (free, limited)
    history.py         history pages, ratings and the comments beside them, messages that show a job
    accounts.py        quota status, settings, DM state, forget, export
    accounts_rules.py  pure rules: valid settings, defaults, the export zip
    admin.py           admin commands
    keys.py            API keys for the HTTP API (and the operator's ``imagine-bot keys``)
    gallery.py         jobs and images by public reference, sharing, the public gallery
    links.py           one account across platforms: /link codes, linking, unlinking
    sessions.py        web studio sign-in: one-time links from the chat, browser sessions
    studio.py          the web studio form's choices; deleting an image
    metrics.py         /healthz and Prometheus metrics; counts requests at the service's doors
    tickets.py         the types front ends see (tickets, updates, deliveries, errors)

No SQL here (that is :mod:`storage`), and no platform types (those stay in :mod:`bot.frontends`).

Front ends (console, Discord, Telegram) parse nothing and store nothing: they call the service
with a :class:`Who` and an opaque delivery ``target`` and show what comes back (the types in
:mod:`bot.service.tickets`, re-exported here).

Errors shown to users as they are (all :class:`~generation.core.errors.ImagineError`)::

    ImagineError
    ├── InvalidRequest, QueueFull, JobCancelled, GenerationFailed   (generation.core.errors)
    ├── BlockedPrompt          (bot.safety) the prompt check refused; names the category
    ├── BlockedComment         (history) the prompt check refused a comment; nothing was saved
    ├── Restricted             (bot.safety) blocked after strikes, on a cooldown, or too soon again
    ├── QuotaExceeded          no images left in this window; says how many and when it resets
    ├── NotAllowed             blocked user, non-admin calling an admin command, too late to cancel
    └── NotFound               no such job or image (or not yours)

Authority (:meth:`~bot.service.context.ServiceContext._acting_on`): an action that names a job or
image is allowed to its owner, an admin, anyone through a public share id (view, rate, "use
this prompt"), and anyone clicking a button on a message the platform shows them that is one
of the job's recorded messages (:class:`Via`): members of a channel may vary, upscale or reroll
a result posted there, charged to themselves. A typed or forged id of a private result grants
nothing (:class:`NotFound`, with what to do instead).
"""

from __future__ import annotations

from bot.service.accounts import AccountsPart
from bot.service.accounts_rules import QuotaStatus
from bot.service.admin import AdminPart
from bot.service.context import ServiceSettings
from bot.service.describing import Described, DescribeLimited, DescribePart
from bot.service.gallery import GalleryPage, GalleryPart, JobView, SharedImage, image_ref
from bot.service.history import MAX_COMMENT_CHARS, BlockedComment, HistoryPart
from bot.service.inbox import InboxPart
from bot.service.jobs import JobsPart, Origin
from bot.service.keys import ApiKey, KeysPart
from bot.service.links import LINK_VALID, LinksPart
from bot.service.metrics import MetricsPart, ServiceMetrics, frontend_of
from bot.service.outcomes import OutcomesPart
from bot.service.sessions import SessionsPart, WebSession
from bot.service.studio import StudioChoices, StudioPart
from bot.service.toolbox import ToolboxPart
from bot.service.uploads import nearest_aspect
from bot.service.tickets import (
    AlreadyAccepted,
    CancelOutcome,
    Cancelled,
    FORGET_KEEPS,
    Delivery,
    Failed,
    Finished,
    ForgetOutcome,
    HistoryEntry,
    HistoryImage,
    HistoryView,
    NotAllowed,
    NotFound,
    QuotaExceeded,
    Queued,
    Recovered,
    Running,
    StoredImage,
    Ticket,
    Untold,
    Update,
    Via,
    Who,
)

__all__ = [
    "MAX_COMMENT_CHARS",
    "AlreadyAccepted",
    "BlockedComment",
    "Described",
    "DescribeLimited",
    "ApiKey",
    "GalleryPage",
    "JobView",
    "LINK_VALID",
    "ServiceMetrics",
    "SharedImage",
    "frontend_of",
    "image_ref",
    "nearest_aspect",
    "Cancelled",
    "CancelOutcome",
    "Delivery",
    "FORGET_KEEPS",
    "Failed",
    "Finished",
    "ForgetOutcome",
    "HistoryEntry",
    "HistoryImage",
    "HistoryView",
    "ImagineService",
    "NotAllowed",
    "Origin",
    "NotFound",
    "QuotaExceeded",
    "QuotaStatus",
    "Queued",
    "Recovered",
    "Running",
    "ServiceSettings",
    "StoredImage",
    "StudioChoices",
    "Ticket",
    "Untold",
    "Update",
    "Via",
    "WebSession",
    "Who",
]


class ImagineService(MetricsPart, JobsPart, OutcomesPart, InboxPart, ToolboxPart, DescribePart, HistoryPart,
                     AccountsPart, AdminPart, KeysPart, GalleryPart, LinksPart, SessionsPart, StudioPart):
    """Quota, safety, jobs, queue and storage behind one API for every front end.

    Each part is a class over the same :class:`~bot.service.context.ServiceContext` state; the
    facade only puts them together, so a front end holds one object. :class:`MetricsPart` comes
    first: it counts around the operations the other parts define.
    """
