"""Measuring images: CLIP score per image. Builds on :mod:`generation.core` and
:mod:`generation.model` (the tiny models)."""
