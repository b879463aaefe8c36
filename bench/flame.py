"""Flame graphs for the benchmarks: py-spy samples this process, matplotlib draws them.

``PySpy`` attaches ``py-spy record`` to the running process for a stretch of it (``start`` …
``stop``), so only the timed part of a benchmark is sampled, not its set-up. ``loop_stacks``
keeps the event loop's thread and starts each stack at the callback the loop ran
(``Handle._run``); py-spy leaves out idle threads, so a loop waiting in ``epoll`` is not sampled
and the graph's width is the loop's busy time. ``draw`` makes an icicle graph (callers above
callees, width = share of the samples), ``widest`` the table of the widest frames.
Not a test: used by ``bench/service_bench.py --flame``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

__all__ = ["PySpy", "draw", "loop_stacks", "read_collapsed", "widest", "write_collapsed"]

Stack = tuple[str, ...]
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^():]*?)(?::\d+)?\)$")


class PySpy:
    """``py-spy record --pid <this process> --format raw`` between ``start()`` and ``stop()``."""

    def __init__(self, rate: int = 250) -> None:
        self.rate = rate
        self._dir = Path(tempfile.mkdtemp(prefix="flame-"))
        self._raw = self._dir / "stacks.txt"
        self._process: subprocess.Popen[bytes] | None = None
        self.seconds = 0.0

    def start(self) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(binary).exists():
            raise SystemExit("--flame needs py-spy: pip install py-spy")
        self._process = subprocess.Popen(
            [binary, "record", "--pid", str(os.getpid()), "--rate", str(self.rate), "--format", "raw",
             "--output", str(self._raw), "--nonblocking"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode()  # "py-spy> Sampling process …": attached
        if "Sampling" not in line:
            raise SystemExit(f"py-spy did not start: {line.strip() or self._process.wait()}")
        self._started = time.perf_counter()

    def stop(self) -> None:
        assert self._process is not None
        self.seconds = time.perf_counter() - self._started
        self._process.send_signal(signal.SIGINT)
        self._process.communicate(timeout=60)

    def stacks(self) -> Counter[Stack]:
        """Each sampled stack (outermost frame first, ``function (file)``) and its count."""
        stacks: Counter[Stack] = Counter()
        for line in self._raw.read_text().splitlines():
            frames, _, count = line.rpartition(" ")
            if frames and count.isdigit():
                stacks[tuple(_name(frame) for frame in frames.split(";"))] += int(count)
        shutil.rmtree(self._dir, ignore_errors=True)
        return stacks


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['name']} ({Path(match['file']).name})"


def loop_stacks(stacks: Counter[Stack], root: str = "Handle._run") -> Counter[Stack]:
    """The event loop thread's stacks, each cut to start at the loop's callback."""
    kept: Counter[Stack] = Counter()
    for stack, count in stacks.items():
        starts = [i for i, frame in enumerate(stack) if frame.startswith(root + " ")]
        if starts:
            kept[stack[starts[0]:]] += count
    return kept


def write_collapsed(stacks: Counter[Stack], path: Path) -> None:
    """The stacks in the collapsed format flamegraph.pl and speedscope read (``a;b;c count``)."""
    path.write_text("".join(f"{';'.join(stack)} {count}\n" for stack, count in sorted(stacks.items())))


def read_collapsed(path: Path) -> Counter[Stack]:
    stacks: Counter[Stack] = Counter()
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks[tuple(frames.split(";"))] += int(count)
    return stacks


def widest(stacks: Counter[Stack], n: int = 30) -> list[dict]:
    """The frames with the most samples under them (each counted once per stack)."""
    total = sum(stacks.values()) or 1
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, count in stacks.items():
        for frame in set(stack):
            inclusive[frame] += count
        own[stack[-1]] += count
    return [{"frame": frame, "share": round(count / total, 4), "own_share": round(own[frame] / total, 4)}
            for frame, count in inclusive.most_common(n)]


def draw(stacks: Counter[Stack], path: Path, *, title: str, min_share: float = 0.004) -> None:
    """An icicle flame graph: the loop's callback on top, callees below, width = samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    total = sum(stacks.values()) or 1
    tree: dict = {}
    for stack, count in sorted(stacks.items()):
        node = tree
        for frame in stack:
            entry = node.setdefault(frame, [0, {}])
            entry[0] += count
            node = entry[1]
    rows: list[tuple[int, float, float, str]] = []  # depth, x, width, label

    def walk(node: dict, depth: int, x: float) -> None:
        for frame, (count, children) in sorted(node.items(), key=lambda item: -item[1][0]):
            width = count / total
            if width >= min_share:
                rows.append((depth, x, width, frame))
                walk(children, depth + 1, x)
            x += width

    walk(tree, 0, 0.0)
    depth = max((row[0] for row in rows), default=0) + 1
    fig, ax = plt.subplots(figsize=(16, 0.32 * depth + 1.2))
    palette = plt.get_cmap("YlOrRd")
    for level, x, width, frame in rows:
        colour = palette(0.25 + 0.6 * ((hash(frame.split(" (")[-1]) % 97) / 97))
        ax.add_patch(Rectangle((x, -level - 1), width, 0.95, facecolor=colour, edgecolor="white", lw=0.3))
        if width > 0.035:
            label = frame if len(frame) * 0.0052 < width else frame[: max(3, int(width / 0.0052)) - 1] + "…"
            ax.text(x + 0.002, -level - 0.52, label, fontsize=6.5, va="center", clip_on=True)
    ax.set_xlim(0, 1)
    ax.set_ylim(-depth - 0.1, 0)
    ax.set_yticks([])
    ax.set_xlabel("share of the event loop's busy samples")
    ax.set_title(title, fontsize=10)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
