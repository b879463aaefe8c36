"""The pure fair policy (pick_batch, plan) and the ETA estimator, without a queue or an executor."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.scheduling.policy import FairPolicy, FairState, LaneView, TimeEstimator, assign, pick_batch, plan


@dataclass(eq=False)
class Cand:
    """A bare candidate for the pure policy functions."""

    user: str
    seq: int
    shape: tuple = (1,)
    images: int = 1
    priority: bool = False


def test_least_recently_served_user_leads_across_shapes() -> None:
    jobs = [Cand("a", 0, (1,)), Cand("a", 1, (1,)), Cand("b", 2, (2,)), Cand("c", 3, (3,)), Cand("a", 4, (2,))]
    batches = plan(jobs, FairState(), max_images=8, priority_burst=3)
    assert [[j.seq for j in b] for b in batches] == [[0, 1], [2, 4], [3]]


def test_fill_takes_one_job_per_user_per_pass_and_remembers_who_was_served() -> None:
    jobs = [Cand("a", i) for i in range(5)] + [Cand("b", 5), Cand("b", 6), Cand("c", 7, images=3)]
    batch, state = pick_batch(jobs, FairState(), max_images=6, priority_burst=3)
    # pass 1: a0 (head), b5, c7 (3 images); pass 2: a1; budget used up
    assert [j.seq for j in batch] == [0, 5, 7, 1]
    assert state.tick == 1 and state.last_served == {"a": 1, "b": 1, "c": 1} and state.priority_streak == 0
    rest = [j for j in jobs if j not in batch]
    batch2, state2 = pick_batch(rest, state, max_images=6, priority_burst=3)
    assert [j.seq for j in batch2] == [2, 6, 3, 4]  # all tied at tick 1: a2 is the oldest job, so a leads
    assert pick_batch([], state2, max_images=6, priority_burst=3) == ([], state2)


def test_estimator_guesses_by_pixels_and_steps_and_scales_from_what_it_learned() -> None:
    est = TimeEstimator()
    big, small = ("txt2img", 1024, 1024, 4), ("txt2img", 512, 512, 4)
    assert est.seconds_per_image(big) == pytest.approx(4 * est.seconds_per_image(small))
    assert est.seconds_per_image(("txt2img", 1024, 1024, 8)) == pytest.approx(2 * est.seconds_per_image(big))
    est.observe(small, 4, 4 * est.guess(small) / 2)  # twice as fast as guessed
    assert est.seconds_per_image(big) == pytest.approx(est.guess(big) / 2)
    est.observe(small, 1, 1.0)
    est.observe(small, 2, 4.0)
    learned = est.guess(small) / 2
    learned += 0.3 * (1.0 - learned)
    learned += 0.3 * (2.0 - learned)
    assert est.seconds_per_image(small) == pytest.approx(learned)


def test_estimator_learns_a_fixed_part_and_a_part_per_image_per_shape() -> None:
    """A batch of 8 does not cost 8 batches of 1: after two batch sizes, the line is used."""
    shape, other = ("txt2img", 1024, 1024, 4), ("txt2img", 512, 512, 4)
    fixed, per_image = 0.38, 0.11  # seconds: the A100 cost model's shape, roughly
    aware, plain = TimeEstimator(), TimeEstimator(shape_aware=False)
    for est in (aware, plain):
        est.observe(shape, 1, fixed + per_image)
    assert aware.line(shape) is None  # one batch size: nothing to fit a slope on
    assert aware.batch_seconds(shape, 8) == pytest.approx(8 * (fixed + per_image))  # per image, as before
    for images in (8, 2, 8, 4, 1):
        for est in (aware, plain):
            est.observe(shape, images, fixed + per_image * images)
    assert aware.line(shape) == pytest.approx((fixed, per_image))
    for images in (1, 3, 8):
        assert aware.batch_seconds(shape, images) == pytest.approx(fixed + per_image * images)
    # the per-image average overshoots big batches and undershoots small ones
    assert plain.batch_seconds(shape, 8) > 1.3 * (fixed + per_image * 8)
    assert plain.line(shape) is None
    assert aware.line(other) is None and aware.batch_seconds(other, 2) == pytest.approx(
        2 * aware.seconds_per_image(other))


def test_estimator_line_follows_a_change_and_ignores_a_slope_it_cannot_trust() -> None:
    shape = ("txt2img", 1024, 1024, 4)
    est = TimeEstimator()
    for images in (1, 8) * 4:
        est.observe(shape, images, 0.4 + 0.1 * images)
    for images in (1, 8) * 12:  # the machine got twice as fast: newer batches weigh more
        est.observe(shape, images, 0.2 + 0.05 * images)
    fixed, per_image = est.line(shape)
    assert fixed == pytest.approx(0.2, rel=0.05) and per_image == pytest.approx(0.05, rel=0.05)
    noisy = TimeEstimator()
    noisy.observe(shape, 1, 1.0)
    noisy.observe(shape, 8, 0.9)  # bigger batch measured faster: no line, per-image average
    assert noisy.line(shape) is None
    assert noisy.batch_seconds(shape, 4) == pytest.approx(4 * noisy.seconds_per_image(shape))
    through_origin = TimeEstimator()
    through_origin.observe(shape, 2, 0.1)
    through_origin.observe(shape, 8, 1.0)  # the line would start below zero: a slope through 0
    fixed, per_image = through_origin.line(shape)
    assert fixed == 0.0 and per_image > 0
    assert through_origin.batch_seconds(shape, 1) > 0


def test_assign_uses_each_lanes_batch_time_when_it_has_one() -> None:
    shape = ("txt2img", 1024, 1024, 4)
    per_image_only = LaneView(free_in=1.0, steps=(4,), seconds_per_image=lambda s: 0.5)
    with_line = LaneView(free_in=1.0, steps=(4,), seconds_per_image=lambda s: 0.5,
                         batch_seconds=lambda s, n: 0.4 + 0.1 * n)
    assert assign([(shape, 8), (shape, 1)], [per_image_only]) == [(0, 5.0), (0, 5.5)]
    assert assign([(shape, 8), (shape, 1)], [with_line]) == [(0, pytest.approx(2.2)), (0, pytest.approx(2.7))]


# -- properties -----------------------------------------------------------------------------------

candidates = st.lists(
    st.tuples(st.sampled_from("abcde"), st.sampled_from([(1,), (2,), (3,)]), st.integers(1, 4), st.booleans()),
    max_size=30,
).map(lambda rows: [Cand(u, i, shape, n, p) for i, (u, shape, n, p) in enumerate(rows)])


@settings(max_examples=200, deadline=None)
@given(jobs=candidates, budget=st.integers(4, 8), burst=st.integers(1, 4))
def test_plan_runs_every_job_once_in_batches_of_one_shape_within_budget(jobs, budget, burst) -> None:
    batches = plan(jobs, FairState(), max_images=budget, priority_burst=burst)
    ran = [job for batch in batches for job in batch]
    assert sorted(j.seq for j in ran) == [j.seq for j in jobs]
    for batch in batches:
        assert batch, "plan never yields an empty batch"
        assert len({j.shape for j in batch}) == 1
        assert sum(j.images for j in batch) <= budget


def _picked_one_at_a_time(jobs, state, budget, burst, patience):
    remaining, batches = list(jobs), []
    while remaining:
        batch, state = pick_batch(remaining, state, max_images=budget, priority_burst=burst, patience=patience)
        batches.append(batch)
        chosen = {id(j) for j in batch}
        remaining = [j for j in remaining if id(j) not in chosen]
    return batches, state


many_users = st.lists(
    st.tuples(st.sampled_from("abcdefghij"), st.sampled_from([(1,), (2,), (3,), (4,)]), st.integers(1, 4),
              st.booleans()),
    max_size=60,
).map(lambda rows: [Cand(u, i, shape, n, p) for i, (u, shape, n, p) in enumerate(rows)])
states = st.builds(
    lambda tick, served, streak, newest: FairState(tick, dict(served), streak, tuple(sorted(newest))),
    st.integers(0, 50), st.lists(st.tuples(st.sampled_from("abcdefghij"), st.integers(-1, 50)), max_size=6),
    st.integers(0, 4), st.lists(st.integers(-5, 70), max_size=40))


@settings(max_examples=400, deadline=None)
@given(jobs=many_users, budget=st.integers(1, 8), burst=st.integers(1, 4), state=states,
       patience=st.sampled_from([None, 1, 2, 4, 8]))
def test_the_one_pass_plan_is_exactly_picking_one_batch_at_a_time(jobs, budget, burst, state, patience) -> None:
    """plan_fair (what the queue runs at every submit) gives the batches pick_batch gives, in the
    same order, and leaves the same state: any queue, any starting state, any patience."""
    from generation.scheduling.planning import plan_fair
    from generation.scheduling.policy import _KEPT

    jobs = [j for j in jobs if j.images <= budget]
    expected, after = _picked_one_at_a_time(jobs, state, budget, burst, patience)
    batches, (tick, served, streak, newest) = plan_fair(jobs, state, max_images=budget, priority_burst=burst,
                                                        patience=patience, kept=_KEPT)
    assert [[j.seq for j in b] for b in batches] == [[j.seq for j in b] for b in expected]
    assert FairState(tick, served, streak, newest) == after
    assert plan(jobs, state, max_images=budget, priority_burst=burst, policy=FairPolicy(patience)) == batches


def test_a_long_queue_is_planned_in_one_pass() -> None:
    """512 queued jobs (eight GPUs' backlog): the plan is the same as one pick at a time."""
    import random

    rng = random.Random(29)
    jobs = [Cand(f"u{rng.randrange(200)}", i, (rng.choice([1, 2, 3, 4, 5, 6]),), rng.choice([1, 2, 3, 4]),
                 rng.random() < 0.05) for i in range(512)]
    expected, _ = _picked_one_at_a_time(jobs, FairState(), 8, 3, 4)
    assert plan(jobs, FairState(), max_images=8, priority_burst=3) == expected


@settings(max_examples=200, deadline=None)
@given(jobs=candidates, budget=st.integers(4, 8), burst=st.integers(1, 4))
def test_each_users_jobs_of_one_shape_and_lane_run_first_in_first_out(jobs, budget, burst) -> None:
    batches = plan(jobs, FairState(), max_images=budget, priority_burst=burst)
    seen: dict[tuple, list[int]] = defaultdict(list)
    for batch in batches:
        for job in batch:
            seen[(job.user, job.shape, job.priority)].append(job.seq)
    for seqs in seen.values():
        assert seqs == sorted(seqs)


@settings(max_examples=200, deadline=None)
@given(jobs=candidates, budget=st.integers(4, 8), burst=st.integers(1, 4))
def test_priority_leads_at_most_burst_batches_in_a_row_while_normal_work_waits(jobs, budget, burst) -> None:
    remaining, state, streak = list(jobs), FairState(), 0
    while remaining:
        normal_waiting = any(not j.priority for j in remaining)
        batch, state = pick_batch(remaining, state, max_images=budget, priority_burst=burst)
        streak = streak + 1 if batch[0].priority else 0
        if normal_waiting:
            assert streak <= burst
        remaining = [j for j in remaining if j not in batch]


@settings(max_examples=200, deadline=None)
@given(jobs=candidates, budget=st.integers(4, 8))
def test_a_waiting_user_is_served_before_anyone_is_served_twice_on_the_same_shape(jobs, budget) -> None:
    """No priority: once a user waits on the leading shape, nobody else gets two turns ahead of them."""
    normal = [j for j in jobs if not j.priority]
    batch, _ = pick_batch(normal, FairState(), max_images=budget, priority_burst=3)
    if not batch:
        return
    shape = batch[0].shape
    per_user = defaultdict(int)
    for job in batch:
        per_user[job.user] += 1
    for user in {j.user for j in normal if j.shape == shape}:
        if per_user[user] == 0:
            # left out only because their next job did not fit the remaining room
            left = budget - sum(j.images for j in batch)
            nxt = min((j for j in normal if j.user == user and j.shape == shape), key=lambda j: j.seq)
            assert nxt.images > left or max(per_user.values()) <= 1


@settings(max_examples=200, deadline=None)
@given(jobs=candidates, budget=st.integers(4, 8), patience=st.integers(1, 4), per_pick=st.integers(0, 3))
def test_with_patience_the_oldest_job_is_passed_over_at_most_patience_picks_more_than_users_wait(
        jobs, budget, patience, per_pick) -> None:
    """Jobs keep arriving (``per_pick`` before each pick); once the oldest job of the leading
    lane has been queued through ``patience`` picks more than there are users waiting, the next
    pick takes it."""
    normal = [j for j in jobs if not j.priority]
    arriving, queued, state = list(normal), [], FairState()
    passed: dict[int, int] = {}
    while arriving or queued:
        queued += arriving[:per_pick or 1]
        arriving = arriving[per_pick or 1:]
        oldest = min(queued, key=lambda j: j.seq)
        batch, state = pick_batch(queued, state, max_images=budget, priority_burst=3, patience=patience)
        if passed.get(oldest.seq, 0) >= patience + len({j.user for j in queued}):
            assert oldest in batch
        for job in queued:
            if job not in batch:
                passed[job.seq] = passed.get(job.seq, 0) + 1
        queued = [j for j in queued if j not in batch]


def test_patience_lets_an_odd_shaped_job_lead_past_a_stream_of_newcomers() -> None:
    heavy = Cand("heavy", 0, (2,))
    state = FairState(tick=1, last_served={"heavy": 1})  # served before: newcomers outrank it
    # two users wait at each pick (heavy and one newcomer): with patience 2 it leads at pick 5
    for patience, picks_until_it_runs in ((None, None), (2, 5)):
        queued, s, seq = [heavy], state, 1
        ran_at = None
        for pick in range(1, 10):
            queued.append(Cand(f"new{seq}", seq, (1,)))  # a newcomer of another shape each time
            seq += 1
            batch, s = pick_batch(queued, s, max_images=8, priority_burst=3, patience=patience)
            queued = [j for j in queued if j not in batch]
            if heavy in batch:
                ran_at = pick
                break
        assert ran_at == picks_until_it_runs


def test_admission_says_which_cap_a_request_would_pass() -> None:
    from generation.core.errors import InvalidRequest, QueueFull
    from generation.scheduling.admission import check_caps, check_count

    queued = [Cand("a", 0, images=3), Cand("a", 1, images=2), Cand("b", 2, images=4)]
    check_caps(queued, "a", 3, per_user=8, total=12)  # 5 + 3 = 8 of a's 8, 9 + 3 = 12 of 12: taken
    check_count(8, 8)
    for call, error, says in (
        (lambda: check_count(9, 8), InvalidRequest, "at most 8 images per request, not 9"),
        (lambda: check_caps(queued, "a", 9, per_user=8, total=99), InvalidRequest, "at most 8 images at once"),
        (lambda: check_caps(queued, "a", 4, per_user=8, total=99), QueueFull, "You already have 5 images queued"),
        (lambda: check_caps(queued, "c", 4, per_user=8, total=12), QueueFull, "The queue is full (9 images waiting)"),
    ):
        with pytest.raises(error, match=re.escape(says)):
            call()
