"""A pipeline for Ray replicas in tests (importable by Ray workers as ``tests.ray_support``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from generation.core.batch import Batch, StepCallback

__all__ = ["KillOnce"]


class KillOnce:
    """The tiny pipeline, except that a prompt containing "kill" ends the replica's process at
    step 2 the first time any replica sees it (a marker file makes it once per test run).
    Each batch's last step is written to ``<marker>.<first prompt>`` (to see where it stopped)."""

    def __init__(self, marker: str, step_seconds: float = 0.0) -> None:
        import torch

        from generation.model.pipeline import ModelConfig, load_pipeline

        torch.set_num_threads(1)
        self.inner = load_pipeline(ModelConfig(name="tiny", device="cpu"))
        self.caps, self.model_id = self.inner.caps, self.inner.model_id
        self.marker = Path(marker)
        self.step_seconds = step_seconds

    def generate(self, batch: Batch, on_step: StepCallback | None = None, should_stop=None):  # type: ignore[no-untyped-def]
        import time

        kill = any("kill" in item.prompt for item in batch.items)

        def step(i: int, n: int, *previews: Any) -> None:  # Ray replicas decode no previews; accepted anyway
            if kill and i == 2 and not self.marker.exists():
                self.marker.write_text(str(os.getpid()))
                os._exit(1)  # the replica dies mid-batch
            Path(f"{self.marker}.{batch.items[0].prompt}").write_text(str(i))
            if self.step_seconds:
                time.sleep(self.step_seconds)
            if on_step is not None:
                on_step(i, n, *previews)

        return self.inner.generate(batch, step, should_stop)
