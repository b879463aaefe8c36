"""Measuring images: the CLIP score per image (``clip_score``) and the evaluation of a model
version (``imagine-bot eval``): feature ``extractors``, ``metrics`` (FID, KID, IS via torchmetrics;
precision/recall), ``prompt_sets`` (the bundled parti-mini), the ``report`` grid and plots, MLflow
``tracking`` and the extractors' ``download``. Builds on :mod:`generation.core` and
:mod:`generation.model` (the tiny models); torchmetrics and MLflow are imported inside the
functions that use them, never when the bot starts."""
