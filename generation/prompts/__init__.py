"""Working on prompts with language models: the optional refiner that rewrites a short prompt.
Builds on :mod:`generation.core` and :mod:`generation.model` (the tiny models)."""
