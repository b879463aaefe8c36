"""Live previews in tests: the tiny SDXL pipeline with a tiny random TAESD, and slow steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from generation.core.batch import Batch, StepCallback
from generation.model.pipeline import LightningPipeline, ModelConfig, load_pipeline
from generation.model.preview import PreviewSettings, load_previewer

__all__ = ["SlowSteps", "previewing_pipeline"]


def previewing_pipeline(every_steps: int = 1) -> LightningPipeline:
    """A fresh tiny pipeline (the same weights as the ``tiny`` fixture's) with live previews on."""
    pipeline = load_pipeline(ModelConfig(name="tiny", device="cpu"))
    pipeline.previewer = load_previewer(PreviewSettings(every_steps=every_steps), tiny=True, model_path=None,
                                        device="cpu")
    return pipeline


class SlowSteps:
    """An ImagePipeline whose every denoising step takes at least ``delay`` seconds more (a slower
    GPU), so progress edits under real pacing intervals can show the steps."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    @property
    def caps(self) -> Any:
        return self.inner.caps

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def generate(self, batch: Batch, on_step: StepCallback | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[Any]:
        def step(i: int, n: int, *previews: Any) -> None:
            time.sleep(self.delay)
            if on_step is not None:
                on_step(i, n, *previews)

        return self.inner.generate(batch, step, should_stop)
