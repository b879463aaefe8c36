"""The pure fair scheduling policy and the ETA estimator; no asyncio, no torch.

Scheduling policy (one pure function, :func:`pick_batch`, makes every real pick *and* every
simulated one, so a job's ``position`` is exactly where the scheduler will take it absent new
arrivals or cancellations):

1. Lanes. Jobs submitted with ``priority=True`` (admins, re-enqueued jobs) form the priority
   lane and lead the next batch, except that after ``priority_burst`` consecutive
   priority-led batches one normal-led batch is served when normal work waits (no starvation).
2. Head. In the leading lane, the user served least recently (never served counts as longest
   ago; ties go to the user with the oldest job) leads; the batch takes that user's oldest job
   and that job's shape (kind, width, height, steps; img2img adds strength).
   Patience (``patience=P``; None turns it off): when the lane's oldest job has been passed
   over by more picks than there are users waiting in its lane plus P, it leads instead. Round
   robin would have given every waiting user a turn by then, so this only bounds the wait of a
   job that the newcomers-first rule keeps passing (a heavy user's odd-shaped job behind an
   endless stream of newcomers: ``bench/queue_bench.py`` measured that tail).
3. Fill. Jobs of the same shape join, round-robin between users: one job per user per pass,
   users in least-recently-served order, each user's jobs first-in first-out. A job is never
   split; a user whose next job does not fit the remaining ``max_batch_images`` is done for
   this batch. Leftover room is then filled the same way from the other lane.
4. Every user with a job in the batch is now the most recently served.

So a user with 20 queued jobs shares each batch with everyone else waiting on that shape, and
a newcomer is picked no later than the next batch of a different shape.

Several executors (:func:`assign`): the runtime gives the next batch in pick order to whichever
executor able to run it frees up first, so positions stay the pick order and a job's ETA is
when the executor its batch lands on in that simulation finishes it.

ETA (:class:`TimeEstimator`): each shape's batch time, a fixed part plus a part per image, is
learned from the batches this queue ran (a least-squares line with older batches weighing less;
unseen shapes start at a guess proportional to width x height x steps, scaled by what was
learned elsewhere). A queued job's ETA is the
running batch's expected remaining time plus the simulated batches up to and including its own.

Pluggable (:class:`BatchPolicy`): the queue asks a policy object two questions, which batch
next (``pick``) and whether to hold an idle executor a moment for a fuller one (``hold``).
:data:`FAIR` is this module's policy and the queue's default; ``bench/queue_bench.py`` plugs
FIFO and fixed-window baselines into the same queue to compare them on the same traces.

Property tests of the policy live in ``tests/test_scheduling.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Protocol, TypeVar

from generation.core.request import Shape, denoising_steps
from generation.scheduling.planning import plan_fair

__all__ = ["DEFAULT_PATIENCE", "FAIR", "BatchPolicy", "Candidate", "FairPolicy", "FairState", "LaneView",
           "TimeEstimator", "assign", "pick_batch", "plan"]


class Candidate(Protocol):
    """What the policy needs to know about a queued job."""

    @property
    def user(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def priority(self) -> bool: ...
    @property
    def shape(self) -> Shape: ...
    @property
    def images(self) -> int: ...
    @property
    def submitted_at(self) -> float: ...  # on the queue's clock


C = TypeVar("C", bound=Candidate)


@dataclass(frozen=True)
class FairState:
    """What the policy remembers between batches."""

    tick: int = 0
    last_served: Mapping[str, int] = field(default_factory=dict)
    priority_streak: int = 0
    newest: tuple[int, ...] = ()  # the newest queued seq at each of the last picks (for patience)


_KEPT = 256  # picks remembered for patience: with more users waiting, a job waits at most this many


def pick_batch(
    queued: Sequence[C], state: FairState, *, max_images: int, priority_burst: int, patience: int | None = None
) -> tuple[list[C], FairState]:
    """The next batch (in pick order) and the state after it; ([], state) when nothing waits."""
    priority = sorted((j for j in queued if j.priority), key=lambda j: j.seq)
    normal = sorted((j for j in queued if not j.priority), key=lambda j: j.seq)
    if not priority and not normal:
        return [], state
    led_by_priority = bool(priority) and (not normal or state.priority_streak < priority_burst)
    lead, other = (priority, normal) if led_by_priority else (normal, priority)

    def served(user: str) -> int:
        return state.last_served.get(user, -1)

    head = min(lead, key=lambda j: (served(j.user), j.seq))
    if patience is not None:
        threshold = min(patience + len({j.user for j in lead}), _KEPT)
        if len(state.newest) >= threshold and lead[0].seq <= state.newest[-threshold]:
            head = lead[0]  # queued through the last `threshold` picks and never taken: it goes now
    picked: list[C] = [head]
    taken: dict[str, int] = {head.user: 1}
    budget = max_images - head.images
    for lane in (lead, other):
        pool: dict[str, deque[C]] = {}
        for job in lane:
            if job is not head and job.shape == head.shape:
                pool.setdefault(job.user, deque()).append(job)
        users = sorted(pool, key=lambda u: (served(u), pool[u][0].seq))
        blocked: set[str] = set()
        round_no = 1
        while budget > 0 and any(pool[u] and u not in blocked for u in users):
            for user in users:
                if user in blocked or not pool[user] or taken.get(user, 0) >= round_no:
                    continue
                job = pool[user][0]
                if job.images > budget:
                    blocked.add(user)
                    continue
                pool[user].popleft()
                picked.append(job)
                taken[user] = taken.get(user, 0) + 1
                budget -= job.images
            round_no += 1

    tick = state.tick + 1
    last_served = dict(state.last_served)
    for job in picked:
        last_served[job.user] = tick
    streak = state.priority_streak + 1 if led_by_priority else 0
    newest = (*state.newest, max(j.seq for j in queued))[-_KEPT:] if patience is not None else ()
    return picked, FairState(tick, last_served, streak, newest)


class BatchPolicy(Protocol):
    """What the queue asks about its queued jobs; :data:`FAIR` is the default."""

    name: str

    def pick(
        self, queued: Sequence[C], state: FairState, *, max_images: int, priority_burst: int
    ) -> tuple[list[C], FairState]:
        """The next batch (non-empty when anything is queued) and the state after it."""
        ...

    def hold(self, batch: Sequence[C], queued: Sequence[C], *, now: float, max_images: int) -> float:
        """Seconds to keep an idle executor waiting before running ``batch`` (0: run it now)."""
        ...


DEFAULT_PATIENCE = 4
"""Slack of the patience rule (picks beyond one per waiting user). Chosen with
``python bench/queue_bench.py --requests 400 --loads 0.8 0.95 --sweep-patience 2 4 8 12`` (three
seeds of their own, one GPU; ``bench/results/queue_bench_patience.json``): the largest cut in the
p99 at 80 % load (to 0.56x of unbounded, median over seeds) for which light users' p99 rises by
at most 15 % (1.13x); 2 cut a little more but cost light users 1.37x. ``docs/queue-bench.md``."""


class FairPolicy:
    """:func:`pick_batch` with ``patience`` (None: unbounded), run as soon as an executor is idle."""

    def __init__(self, patience: int | None = DEFAULT_PATIENCE, *, name: str = "fair") -> None:
        if patience is not None and patience < 1:
            raise ValueError(f"`patience` must be at least 1 or None but is {patience}")
        self.patience = patience
        self.name = name

    def pick(
        self, queued: Sequence[C], state: FairState, *, max_images: int, priority_burst: int
    ) -> tuple[list[C], FairState]:
        return pick_batch(queued, state, max_images=max_images, priority_burst=priority_burst,
                          patience=self.patience)

    def hold(self, batch: Sequence[C], queued: Sequence[C], *, now: float, max_images: int) -> float:
        return 0.0


FAIR = FairPolicy()


def plan(
    queued: Sequence[C], state: FairState, *, max_images: int, priority_burst: int,
    policy: BatchPolicy = FAIR,
) -> list[list[C]]:
    """Every batch the scheduler would run, in order, if nothing else arrived.

    The fair policy's plan is made in one pass (:func:`~generation.scheduling.planning.plan_fair`,
    the same batches); any other policy is asked for one batch at a time."""
    if isinstance(policy, FairPolicy) and type(policy).pick is FairPolicy.pick:
        return plan_fair(queued, state, max_images=max_images, priority_burst=priority_burst,
                         patience=policy.patience, kept=_KEPT)[0]
    remaining = list(queued)
    batches: list[list[C]] = []
    while remaining:
        batch, state = policy.pick(remaining, state, max_images=max_images, priority_burst=priority_burst)
        chosen = {id(job) for job in batch}
        remaining = [job for job in remaining if id(job) not in chosen]
        batches.append(batch)
    return batches


class TimeEstimator:
    """Seconds per batch per shape: a fixed part plus a part per image, learned from batches run.

    A batch's cost is not proportional to its images: one 1024² image at 4 steps costs about 0.5 s
    on an A100 and eight cost 1.3 s (``bench/cost_model.py``), because every step reads the weights
    once whatever the batch. So each shape keeps a least-squares line of seconds against images,
    over the batches it ran with older ones weighing less (each new batch scales the old weights
    by ``1 - alpha``). Once a shape has run two batch sizes, ``batch_seconds`` is that line;
    before, it is a per-image average times the images (``shape_aware=False``: always that, the
    estimate before issue #29). Unseen shapes start at a guess proportional to width x height x
    steps, scaled by what was learned elsewhere.
    """

    def __init__(self, *, seconds_per_megapixel_step: float = 0.15, alpha: float = 0.3,
                 shape_aware: bool = True) -> None:
        self.seconds_per_megapixel_step = seconds_per_megapixel_step
        self.alpha = alpha
        self.shape_aware = shape_aware
        self._per_image: dict[Shape, float] = {}
        self._fits: dict[Shape, list[float]] = {}  # weights, Σn, Σt, Σn², Σnt (decayed)
        self._scale: float | None = None  # learned / guessed, over all shapes

    def fresh(self) -> TimeEstimator:
        """An estimator with these settings that has learned nothing yet."""
        return TimeEstimator(seconds_per_megapixel_step=self.seconds_per_megapixel_step, alpha=self.alpha,
                             shape_aware=self.shape_aware)

    def guess(self, shape: Shape) -> float:
        """Seconds per image before anything was measured: proportional to pixels x steps run."""
        _, width, height, steps = shape[:4]
        steps = denoising_steps(steps, shape[4] if len(shape) > 4 else None)  # type: ignore[misc]
        return self.seconds_per_megapixel_step * width * height / 1_000_000 * steps

    def seconds_per_image(self, shape: Shape) -> float:
        """The average seconds per image of ``shape`` (what batches took over their images)."""
        if shape in self._per_image:
            return self._per_image[shape]
        return self.guess(shape) * (self._scale or 1.0)

    def line(self, shape: Shape) -> tuple[float, float] | None:
        """``(fixed, per_image)`` seconds of ``shape`` once batches of two sizes were timed, else None."""
        fit = self._fits.get(shape)
        if not self.shape_aware or fit is None:
            return None
        w, n, t, nn, nt = fit
        spread = w * nn - n * n
        if spread <= 1e-9 * max(w * nn, 1e-12):  # one batch size so far: no slope to learn
            return None
        per_image = (w * nt - n * t) / spread
        fixed = (t - per_image * n) / w
        if per_image <= 0:  # bigger batches measured no slower (noise): no line to trust
            return None
        return max(fixed, 0.0), per_image if fixed >= 0 else nt / nn

    def batch_seconds(self, shape: Shape, images: int) -> float:
        """Seconds one batch of ``images`` of ``shape`` is expected to take."""
        line = self.line(shape)
        if line is None:
            return self.seconds_per_image(shape) * images
        return line[0] + line[1] * images

    def observe(self, shape: Shape, images: int, seconds: float) -> None:
        """Learn from one batch of ``images`` of ``shape`` that took ``seconds``."""
        if images <= 0 or seconds <= 0:
            return
        per_image = seconds / images
        old = self._per_image.get(shape)
        self._per_image[shape] = per_image if old is None else old + self.alpha * (per_image - old)
        ratio = per_image / max(self.guess(shape), 1e-9)
        self._scale = ratio if self._scale is None else self._scale + self.alpha * (ratio - self._scale)
        keep = 1.0 - self.alpha
        fit = self._fits.setdefault(shape, [0.0] * 5)
        for i, value in enumerate((1.0, images, seconds, images * images, images * seconds)):
            fit[i] = fit[i] * keep + value

    def learned(self) -> dict[Shape, float]:
        return dict(self._per_image)

    @property
    def measured(self) -> bool:
        """A batch has been timed: estimates now scale from it (before, they are only a guess
        from pixels x steps, which can be far off on a given machine)."""
        return self._scale is not None


@dataclass(frozen=True)
class LaneView:
    """One executor as the ETA simulation sees it."""

    free_in: float  # seconds until its running batch ends; 0 when idle
    steps: tuple[int, ...]  # step counts it can run
    seconds_per_image: Callable[[Shape], float]
    runs: Callable[[Shape], bool] | None = None  # whether it can run a shape (default: by its steps)
    resident: tuple[str, ...] = ()  # models loaded after its running batch, least recently used first
    # (seconds, resident after) of switching to a model (several models on one executor, issue 25)
    switch: Callable[[str, tuple[str, ...]], tuple[float, tuple[str, ...]]] | None = None
    # seconds of one batch of n images of a shape (a fixed part and a part per image); default:
    # seconds_per_image x n
    batch_seconds: Callable[[Shape, int], float] | None = None


def assign(batches: Sequence[tuple[Shape, int]], lanes: Sequence[LaneView]) -> list[tuple[int, float]]:
    """Where and when each planned batch runs: ``(lane, seconds from now until it ends)``.

    Batches are taken in pick order; each goes to the lane that can run its steps and is free
    first (ties: the lowest index), which is what the runtime does when executors free up.
    A batch no lane can run gets ``(-1, inf)``.
    """
    free = [lane.free_in for lane in lanes]
    resident = [lane.resident for lane in lanes]
    placed: list[tuple[int, float]] = []
    for shape, images in batches:
        eligible = [i for i, lane in enumerate(lanes)
                    if (lane.runs(shape) if lane.runs is not None else shape[3] in lane.steps)]
        if not eligible:
            placed.append((-1, float("inf")))
            continue
        i = min(eligible, key=lambda k: (free[k], k))
        switch = lanes[i].switch
        if switch is not None:  # a batch of a model not loaded there waits for its load first
            seconds, resident[i] = switch(shape[6] if len(shape) > 6 else "", resident[i])  # type: ignore[misc]
            free[i] += seconds
        lane = lanes[i]
        free[i] += lane.batch_seconds(shape, images) if lane.batch_seconds else lane.seconds_per_image(shape) * images
        placed.append((i, free[i]))
    return placed
