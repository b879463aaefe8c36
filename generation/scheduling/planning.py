"""The fair policy's whole plan in one pass: the same batches as picking them one at a time.

:func:`~generation.scheduling.policy.plan` simulates every batch the queue would run, to give
each queued job its place in line and its ETA, and the queue plans again at every submit. Done
with :func:`~generation.scheduling.policy.pick_batch` once per batch, each pick sorts and scans
the whole queue, so one plan costs O(n² log n) for n queued jobs: at 512 in flight (eight GPUs'
backlog) the bookkeeping fell from about 300 to 41 jobs/s (``bench/service_bench.py
--concurrency 32 128 512``). :func:`plan_fair` keeps each lane's users in a heap by (last
served, oldest job) and each lane's jobs by shape and user in arrival order, and takes each
pick from their fronts: a pick costs about the users it touches, not the queue.

It must give exactly the batches ``pick_batch`` gives, in the same order, with the same state
after them (``tests/test_scheduling.py`` checks that on random queues and states). Why the fronts
are enough: a batch's head is its user's oldest job in its lane (or the lane's oldest, by
patience), so it is the front of that user's jobs of its shape; every job that joins is the
front of its user's jobs of that shape. So every job taken leaves the front of its
(lane, shape, user) line, and only the users picked change their place in the heap.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["plan_fair"]

C = TypeVar("C")
State = tuple[int, dict[str, int], int, tuple[int, ...]]  # tick, last_served, priority_streak, newest


class _Lane:
    """One lane's (priority or normal) remaining jobs, indexed for picking."""

    def __init__(self, jobs: list[Any], served: dict[str, int], taken: set[int]) -> None:
        self.jobs = jobs  # by seq; taken ones are skipped (lazily)
        self.first = 0
        self.alive = len(jobs)
        self.taken = taken  # ids of the jobs picked so far (shared by both lanes)
        self.by_user: dict[str, deque[Any]] = {}  # each user's jobs by seq (taken ones skipped, lazily)
        self.by_shape: dict[Any, dict[str, deque[Any]]] = {}  # shape -> user -> jobs by seq (exact)
        for job in jobs:
            self.by_user.setdefault(job.user, deque()).append(job)
            self.by_shape.setdefault(job.shape, {}).setdefault(job.user, deque()).append(job)
        self.key: dict[str, tuple[int, int]] = {}  # user -> (last served, oldest seq): users with jobs here
        self.heap: list[tuple[tuple[int, int], str]] = []
        for user in self.by_user:
            self.place(user, served)

    def place(self, user: str, served: dict[str, int]) -> None:
        """(Re)enter ``user`` in the heap with its current key; out when no job of theirs is left."""
        line = self.by_user.get(user)
        while line and id(line[0]) in self.taken:
            line.popleft()
        if not line:
            self.key.pop(user, None)
            return
        key = (served.get(user, -1), line[0].seq)
        if self.key.get(user) != key:
            self.key[user] = key
            heapq.heappush(self.heap, (key, user))

    def head(self) -> Any:
        """The oldest job of the user served least recently (ties: the oldest job)."""
        while True:
            key, user = self.heap[0]
            if self.key.get(user) == key:
                return self.by_user[user][0]
            heapq.heappop(self.heap)  # an entry from before the user's last pick

    def oldest(self) -> Any:
        while id(self.jobs[self.first]) in self.taken:
            self.first += 1
        return self.jobs[self.first]

    def take(self, job: Any) -> None:
        """``job`` is picked: it leaves its (shape, user) line, always from the front."""
        self.alive -= 1
        self.taken.add(id(job))
        shapes = self.by_shape[job.shape]
        line = shapes[job.user]
        line.popleft()
        if not line:
            del shapes[job.user]


def _in_order(pool: dict[str, deque[Any]], served: dict[str, int]) -> Iterator[str]:
    """The users of ``pool`` by (last served, their oldest job there), lazily."""
    heap = [((served.get(user, -1), line[0].seq), user) for user, line in pool.items()]
    heapq.heapify(heap)
    while heap:
        yield heapq.heappop(heap)[1]


def plan_fair(queued: Sequence[C], state: Any, *, max_images: int, priority_burst: int,
              patience: int | None, kept: int) -> tuple[list[list[C]], State]:
    """Every batch :func:`~generation.scheduling.policy.pick_batch` would pick from ``queued``
    starting at ``state`` (a FairState), in order, and the state's fields after the last
    (tick, last_served, priority_streak, newest); ``kept``: how many picks patience remembers."""
    ordered: list[Any] = sorted(queued, key=lambda j: j.seq)  # type: ignore[attr-defined]
    tick, served, streak, newest = state.tick, dict(state.last_served), state.priority_streak, state.newest
    taken: set[int] = set()
    lanes = {True: _Lane([j for j in ordered if j.priority], served, taken),
             False: _Lane([j for j in ordered if not j.priority], served, taken)}
    newest_index = len(ordered) - 1  # the newest job left (patience remembers it at each pick)
    batches: list[list[Any]] = []
    while lanes[True].alive or lanes[False].alive:
        priority, normal = lanes[True], lanes[False]
        led_by_priority = bool(priority.alive) and (not normal.alive or streak < priority_burst)
        lead, other = (priority, normal) if led_by_priority else (normal, priority)
        head = lead.head()
        if patience is not None:
            threshold = min(patience + len(lead.key), kept)
            if len(newest) >= threshold and lead.oldest().seq <= newest[-threshold]:
                head = lead.oldest()
        while id(ordered[newest_index]) in taken:
            newest_index -= 1
        newest_seq = ordered[newest_index].seq
        picked = [head]
        counts: dict[str, int] = {head.user: 1}
        budget = max_images - head.images
        lead.take(head)
        for lane in (lead, other):
            pool = lane.by_shape.get(head.shape, {})
            if budget <= 0 or not pool:
                continue
            users: list[str] = []
            lazily = _in_order(pool, served)
            blocked: set[str] = set()
            round_no = 1
            while budget > 0 and any(u in pool and u not in blocked for u in (users if round_no > 1 else pool)):
                for user in (lazily if round_no == 1 else users):
                    if round_no == 1:
                        users.append(user)
                    if user in blocked or user not in pool or counts.get(user, 0) >= round_no:
                        continue
                    job = pool[user][0]
                    if job.images > budget:
                        blocked.add(user)
                        continue
                    picked.append(job)
                    lane.take(job)
                    counts[user] = counts.get(user, 0) + 1
                    budget -= job.images
                    if budget == 0:  # every later user would only be blocked: the batch is full
                        break
                round_no += 1
        tick += 1
        for user in counts:
            served[user] = tick
        for user in counts:
            priority.place(user, served)
            normal.place(user, served)
        streak = streak + 1 if led_by_priority else 0
        newest = (*newest, newest_seq)[-kept:] if patience is not None else ()
        batches.append(picked)
    return batches, (tick, served, streak, newest)
