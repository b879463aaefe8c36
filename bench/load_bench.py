"""Busy chats: many users send one /imagine each within a few seconds, through the real clients.

``--platform telegram``: the real python-telegram-bot Application (the bot's own front end) against
the fake Bot API (tests/fake_telegram.py) with Telegram's documented flood limits enforced
(``FloodRules``: 20 messages per group in any sliding minute, 1 per second per private chat, 30
calls per second overall; a call over a limit is answered 429). ``--platform discord``: the real
discord.py client against the fake Discord (tests/fake_discord.py), which answers a deferral later
than 3 s with 10062 "Unknown interaction" and a request over the global 50/s with a 429. Both run the real service and queue on the tiny
random-weight model (CPU), everything on 127.0.0.1.

``--users N --groups G``: 15 users in each of G groups (Discord: the guild's text channel), the
rest in private chats (Discord: DMs); each sends once at a random moment (seeded) within
``--seconds``. Reported, per platform: answered / total; first reply (the acknowledgement: the
👀 reaction or the placeholder on Telegram, the deferral on Discord) p50/p99; result p50/p99;
messages per group in the busiest sliding minute; the busiest private chat second; the peak
calls in any second overall; edits; 429s and late deferrals. Goals: all answered; first reply
p99 <= 2 s; no window over a documented limit. Writes bench/results/load_bench_<platform>.json
and .png. Bounded: at most 1000 users, 120 s of sending, ``--timeout`` (300 s) in all.

``--pipeline fake --step-seconds S``: generation at a fixed pace (S seconds a step, any batch) instead
of the tiny model, whose speed follows the machine's load; it writes ``load_bench_<platform>_fake``.

Not a test: ``python bench/load_bench.py --platform telegram --users 200 --groups 4 --seconds 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.fake_telegram import FloodRules, peak_in_window  # noqa: E402
from tests.service_support import CountingPipeline, service_env  # noqa: E402

GROUP_SIZE = 15


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))], 3)


def plan(users: int, groups: int, seconds: float, seed: int) -> list[tuple[float, int, int | None]]:
    """(send time, user number, group number or None) for every user, in time order."""
    rng = random.Random(seed)
    grouped = min(users, groups * GROUP_SIZE)
    people = [(rng.uniform(0, seconds), n, (n // GROUP_SIZE if n < grouped else None)) for n in range(users)]
    return sorted(people)


class Timed(CountingPipeline):
    """The tiny pipeline, recording when each batch ran (so slow results can be told from pacing)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.batches: list[tuple[float, float, int]] = []  # (start, end, images), time.monotonic()
        self.made: dict[int, float] = {}  # user number (from the prompt) -> when its batch ended

    def generate(self, batch: Any, on_step: Any = None, should_stop: Any = None) -> Any:
        began = time.monotonic()
        try:
            return super().generate(batch, on_step, should_stop)
        finally:
            ended = time.monotonic()
            self.batches.append((began, ended, len(batch.items)))
            for item in batch.items:
                found = re.search(r"number (\d+)", item.prompt)
                if found:
                    self.made[int(found.group(1))] = ended

    def report(self, start: float) -> dict[str, Any]:
        return {"batches": len(self.batches), "images": sum(n for *_, n in self.batches),
                "busy_s": round(sum(e - b for b, e, _ in self.batches), 1),
                "last_batch_end_s": round(max((e for _, e, _ in self.batches), default=start) - start, 1)}


async def load_model(args: argparse.Namespace | None = None) -> Timed:
    """The tiny random-weight model (CPU: its speed follows the machine's load), or with
    ``--pipeline fake`` a pipeline that sleeps ``--step-seconds`` per step whatever the batch
    (generation at a fixed pace, so what is measured is the delivery)."""
    if args is not None and args.pipeline == "fake":
        from tests.fakes import FakePipeline

        return Timed(FakePipeline(step_seconds=args.step_seconds))
    from generation.model.pipeline import ModelConfig, load_pipeline

    return Timed(await asyncio.to_thread(load_pipeline, ModelConfig(name="tiny", device="cpu")))


async def bench_telegram(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from tests.fake_telegram import FakeTelegram, make_chat, make_user
    from tests.telegram_support import running

    tiny = await load_model(args)
    schedule = plan(args.users, args.groups, args.seconds, args.seed)
    sent_at: dict[tuple[int, int], float] = {}
    number: dict[tuple[int, int], int] = {}
    async with FakeTelegram(flood=FloodRules()) as fake:
        settings = dict(overall_per_second=30, group_per_minute=20, private_interval=1.0,
                        status_edit_interval_private=1.5, status_edit_interval_group=3.0, max_retries=2)
        service = dict(queue_options={"max_queued_images": 4 * args.users, "max_queued_per_user": 8})
        async with running(root, tiny, fake, service=service, **settings):
            start = time.monotonic()
            for at, n, group in schedule:
                await asyncio.sleep(max(0.0, start + at - time.monotonic()))
                user = make_user(700_000 + n, f"user{n}")
                chat = make_chat(-1_000_000 - group, "supergroup", f"group {group}") if group is not None else None
                update = fake.message_update(f"/imagine a lighthouse number {n} --steps {args.steps}", user, chat)
                message = update["message"]
                sent_at[(message["chat"]["id"], message["message_id"])] = time.monotonic()
                number[(message["chat"]["id"], message["message_id"])] = n
                fake.push(update)
            deadline = start + args.timeout
            while time.monotonic() < deadline:
                if len(_tg_answers(fake)) >= len(sent_at):
                    break
                await asyncio.sleep(0.25)
            while time.monotonic() < deadline and any(fake.bot_reactions.values()):
                await asyncio.sleep(0.25)  # the 👀 are taken back last (the pacer's clean-up lane)
            await asyncio.sleep(0.5)
        report = _tg_report(fake, sent_at, start, args)
        answers = _tg_answers(fake)
        lag = {k: answers[k] - tiny.made[number[k]] for k in sent_at if k in answers and number[k] in tiny.made}
        return {**report, "generation": tiny.report(start), **_lag(lag, lambda k: k[0] < 0)}


def _lag(lag: dict[Any, float], grouped: Any) -> dict[str, Any]:
    """From the end of a request's batch to its result on the platform: the pacing's share."""
    private = [v for k, v in lag.items() if not grouped(k)]
    groups = [v for k, v in lag.items() if grouped(k)]
    return {"made_to_shown_private_p50_s": pct(private, 50), "made_to_shown_private_p99_s": pct(private, 99),
            "made_to_shown_group_p50_s": pct(groups, 50), "made_to_shown_group_p99_s": pct(groups, 99)}


def _tg_answers(fake: Any) -> dict[tuple[int, int], float]:
    """(chat, the request's message id) -> when its result was shown: its placeholder edited into
    the result, or (a busy group) the result sent as a reply of its own."""
    from bot.frontends.telegram.delivery import placeholder_png

    placeholder_of: dict[tuple[int, int], tuple[int, int]] = {}
    answers: dict[tuple[int, int], float] = {}
    for call in fake.calls(ok=True):
        if call.method not in ("sendPhoto", "sendDocument"):
            continue
        key = (call.params.get("chat_id"), (call.params.get("reply_parameters") or {}).get("message_id"))
        field = "photo" if call.method == "sendPhoto" else "document"
        if call.files.get(field) is not None and call.file(field).data == placeholder_png():
            placeholder_of[(call.params.get("chat_id"), call.result["message_id"])] = key
        else:
            answers.setdefault(key, call.time)
    for call in fake.calls("editMessageMedia", ok=True):
        key = placeholder_of.get((call.params["chat_id"], call.params["message_id"]))
        if key is not None:
            answers.setdefault(key, call.time)
    return answers


def _minus(a: float | None, b: float | None) -> float:
    return 0.0 if a is None or b is None else a - b


def _tg_report(fake: Any, sent_at: dict[tuple[int, int], float], start: float, args: argparse.Namespace) -> dict:
    first: dict[tuple[int, int], float] = {}
    for call in fake.calls(ok=True):
        chat = call.params.get("chat_id")
        if call.method == "setMessageReaction" and call.params.get("reaction"):
            key = (chat, call.params.get("message_id"))
        elif call.method in ("sendPhoto", "sendDocument"):  # a placeholder, or a result sent directly
            key = (chat, (call.params.get("reply_parameters") or {}).get("message_id"))
        else:
            continue
        if key in sent_at and key not in first:
            first[key] = call.time - sent_at[key]
    answers = _tg_answers(fake)
    answered = {k: answers[k] - sent_at[k] for k in sent_at if k in answers}
    groups = sorted({c for c, _ in sent_at if c < 0})
    per_group = {}
    for group in groups:
        stamps = [(t, cost) for t, c, cost, _ in fake.flood_log if c == group and cost]
        peak, _ = peak_in_window(stamps, 60.0)
        sends = [c for c in fake.calls(ok=True) if c.params.get("chat_id") == group
                 and c.method.startswith("send") and c.method != "sendChatAction"]
        requests = sum(1 for c, _ in sent_at if c == group)
        per_group[str(group)] = {"requests": requests, "messages_sent": len(sends),
                                 "busiest_minute": peak, "message_calls": len(stamps)}
    private_peak = max((peak_in_window([(t, cost) for t, c, cost, _ in fake.flood_log if c == chat and cost], 1.0)[0]
                        for chat in {c for c, _ in sent_at if c > 0}), default=0)
    overall_peak, _ = peak_in_window([(t, 1) for t, *_ in fake.flood_log], 1.0)
    timeline = [(round(t - start, 3), c, cost, m) for t, c, cost, m in fake.flood_log if t >= start]
    return {
        "platform": "telegram",
        "answered": len(answered), "total": len(sent_at),
        "first_reply_p50_s": pct(list(first.values()), 50), "first_reply_p99_s": pct(list(first.values()), 99),
        "first_reply_max_s": round(max(first.values()), 3) if first else None,
        "result_p50_s": pct(list(answered.values()), 50), "result_p99_s": pct(list(answered.values()), 99),
        "result_private_p50_s": pct([v for k, v in answered.items() if k[0] > 0], 50),
        "result_private_p99_s": pct([v for k, v in answered.items() if k[0] > 0], 99),
        "result_group_p50_s": pct([v for k, v in answered.items() if k[0] < 0], 50),
        "result_group_p99_s": pct([v for k, v in answered.items() if k[0] < 0], 99),
        "groups": per_group,
        "busiest_group_minute": max((g["busiest_minute"] for g in per_group.values()), default=0),
        "busiest_private_second": private_peak,
        "peak_calls_per_second": overall_peak,
        "caption_edits": len(fake.calls("editMessageCaption", ok=True)),
        "result_edits": len(fake.calls("editMessageMedia", ok=True)),
        "results_sent_directly": len(answers) - len(fake.calls("editMessageMedia", ok=True)),
        "reactions": len(fake.calls("setMessageReaction", ok=True)),
        "reactions_left": sum(1 for v in fake.bot_reactions.values() if v),
        "sendMessage": len(fake.calls("sendMessage", ok=True)),
        "refused_429": len(fake.flood_refusals),
        "goals": {
            "all_answered": len(answered) == len(sent_at),
            "first_reply_p99_le_2s": (pct(list(first.values()), 99) or 99) <= 2.0,
            "no_window_over_limits": not fake.flood_refusals and all(
                g["busiest_minute"] <= 20 for g in per_group.values()) and private_peak <= 1 and overall_peak <= 30,
            "one_message_per_request_in_groups": all(g["messages_sent"] == g["requests"] for g in per_group.values()),
            # issue #29: a busy group's results no later than ~10 s after the private chats' (p99)
            "group_p99_within_10s_of_private": (
                _minus(pct([v for k, v in answered.items() if k[0] < 0], 99),
                       pct([v for k, v in answered.items() if k[0] > 0], 99)) <= 10.0),
        },
        "first_reply_s": sorted(round(v, 3) for v in first.values()),
        "result_s": sorted(round(v, 3) for v in answered.values()),
        "timeline": timeline,
    }


async def bench_discord(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from bot.frontends.discord import DiscordFrontEnd, DiscordSettings
    from tests.fake_discord import fake_discord_server

    tiny = await load_model(args)
    schedule = plan(args.users, args.groups, args.seconds, args.seed)
    inters: list[tuple[dict[str, Any], float, bool]] = []
    numbers: dict[str, int] = {}
    async with fake_discord_server(global_per_second=50) as fake:
        queue = {"max_queued_images": 4 * args.users, "max_queued_per_user": 8}
        async with service_env(root, tiny, queue_options=queue) as env:
            front = DiscordFrontEnd(env.service, DiscordSettings("fake-token", guild_ready_timeout=0.05,
                                                                 progress_edit_interval=1.5))
            await asyncio.wait_for(front.start(timeout=30), 60)
            loop = asyncio.get_running_loop()
            try:
                start = loop.time()
                for at, n, group in schedule:
                    await asyncio.sleep(max(0.0, start + at - loop.time()))
                    user = fake.make_user(f"user{n}", 800_000 + n)
                    channel = None if group is not None else fake.dm_channel_for(800_000 + n)
                    payload = fake.slash("imagine", {"prompt": f"a lighthouse number {n} --steps {args.steps}"},
                                         user, channel)
                    numbers[payload["token"]] = n
                    inters.append((await fake.send_interaction(payload), loop.time(), group is not None))
                deadline = start + args.timeout
                while loop.time() < deadline:
                    if all(any(r.files for r in fake.requests_to("PATCH", _original(fake, i))) for i, _, _ in inters):
                        break
                    await asyncio.sleep(0.25)
            finally:
                await asyncio.wait_for(front.close(), 30)
        lag = {}
        for inter, _, grouped in inters:
            done = [r for r in fake.requests_to("PATCH", _original(fake, inter)) if r.files and r.status == 200]
            if done and numbers[inter["token"]] in tiny.made:
                lag[(inter["token"], grouped)] = done[0].received_at - tiny.made[numbers[inter["token"]]]
        return {**_dc_report(fake, inters, start), "generation": tiny.report(start), **_lag(lag, lambda k: k[1])}


def _original(fake: Any, inter: dict[str, Any]) -> str:
    return rf"/webhooks/{fake.app_id}/{re.escape(inter['token'])}/messages/@original"


def _dc_report(fake: Any, inters: list[tuple[dict[str, Any], float, bool]], start: float) -> dict[str, Any]:
    first, answered, late, edits, min_gap = [], [], 0, 0, None
    for inter, at, _ in inters:
        callbacks = fake.requests_to("POST", rf"/interactions/{inter['id']}/{re.escape(inter['token'])}/callback")
        if callbacks:
            first.append(callbacks[0].received_at - at)
            late += sum(1 for c in callbacks if c.status != 200)
        patches = fake.requests_to("PATCH", _original(fake, inter))
        done = [r for r in patches if r.files and r.status == 200]
        if done:
            answered.append(done[0].received_at - at)
        progress = [r for r in patches if not r.files]
        edits += len(progress)
        for a, b in zip(progress, progress[1:]):
            gap = b.received_at - a.received_at
            min_gap = gap if min_gap is None else min(min_gap, gap)
    channel_posts = fake.requests_to("POST", r"/channels/\d+/messages")
    stamps = [(r.received_at, 1) for r in fake.requests if r.received_at >= start]
    return {
        "platform": "discord",
        "answered": len(answered), "total": len(inters),
        "first_reply_p50_s": pct(first, 50), "first_reply_p99_s": pct(first, 99),
        "first_reply_max_s": round(max(first), 3) if first else None,
        "result_p50_s": pct(answered, 50), "result_p99_s": pct(answered, 99),
        "late_deferrals_10062": late,
        "progress_edits": edits, "min_gap_between_edits_of_one_interaction_s": round(min_gap, 3) if min_gap else None,
        "channel_messages": len(channel_posts),
        "peak_requests_per_second": peak_in_window(stamps, 1.0)[0],
        # interaction callbacks and webhook edits are exempt from Discord's global 50/s
        "peak_global_bucket_per_second": peak_in_window(
            [(r.received_at, 1) for r in fake.requests if r.received_at >= start
             and not r.path.startswith(("/interactions", "/webhooks"))],
            1.0)[0],
        "refused_429": sum(1 for r in fake.requests if r.status == 429),
        "goals": {
            "all_answered": len(answered) == len(inters),
            "first_reply_p99_le_2s": (pct(first, 99) or 99) <= 2.0,
            "none_past_3s": late == 0 and (max(first) if first else 99) < 3.0,
            "one_message_per_request": not channel_posts,
        },
        "first_reply_s": sorted(round(v, 3) for v in first),
        "result_s": sorted(round(v, 3) for v in answered),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label in (("first_reply_s", "first reply (acknowledgement)"), ("result_s", "result")):
        values = result[key]
        axes[0].plot(values, [(i + 1) / len(values) for i in range(len(values))], label=label)
    axes[0].axvline(2.0, color="grey", linestyle=":", label="goal: p99 ≤ 2 s")
    axes[0].set_xscale("symlog", linthresh=1.0)
    axes[0].set_xlim(left=0)
    axes[0].set_xlabel("seconds after the user sent /imagine")
    axes[0].set_ylabel("share of requests")
    axes[0].legend()
    axes[0].set_title(f"{result['platform']}: {result['answered']}/{result['total']} answered")
    if result["platform"] == "telegram":
        for group in result["groups"]:
            times = sorted(t for t, c, cost, _ in result["timeline"] for _ in range(cost) if str(c) == group)
            counts = [sum(1 for u in times if t - 60 < u <= t) for t in times]
            axes[1].step(times, counts, where="post", label=f"group {group}")
        axes[1].axhline(20, color="red", linestyle="--", label="Telegram: 20 per minute per group")
        axes[1].set_ylabel("messages in the minute before")
        axes[1].set_title("messages (sends + edits) per group, sliding minute")
    else:
        axes[1].hist(result["first_reply_s"], bins=30)
        axes[1].axvline(3.0, color="red", linestyle="--", label="Discord: 3 s")
        axes[1].set_ylabel("interactions")
        axes[1].set_title("deferral latency")
    axes[1].set_xlabel("seconds")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", choices=("telegram", "discord"), required=True)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=2, help="steps per image (the tiny model)")
    parser.add_argument("--pipeline", choices=("tiny", "fake"), default="tiny",
                        help="tiny: the random-weight model on the CPU; fake: a fixed pace (--step-seconds)")
    parser.add_argument("--step-seconds", type=float, default=0.05, help="with --pipeline fake")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--timeout", type=float, default=300.0, help="the whole run's bound in seconds")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if not 1 <= args.users <= 1000 or not 0 < args.seconds <= 120 or args.groups * GROUP_SIZE > args.users:
        parser.error("1-1000 users, 0-120 seconds, and at most users/15 groups")
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        runner = bench_telegram if args.platform == "telegram" else bench_discord
        result = asyncio.run(asyncio.wait_for(runner(args, Path(tmp)), args.timeout + 120))
    result.update(command=" ".join(["python", "bench/load_bench.py", *sys.argv[1:]]), wall_s=round(time.monotonic() - began, 1),
                  load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"load_bench_{args.platform}" + ("_fake" if args.pipeline == "fake" else "")
    plot(result, out / f"{name}.png")
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    summary = {k: v for k, v in result.items() if k not in ("first_reply_s", "result_s", "timeline")}
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    return 0 if all(result["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
