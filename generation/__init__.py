"""The engine: everything that touches torch and diffusers, in sub-packages that import downwards
only: ``core`` (vocabulary) <- ``model`` <- ``prompts``, ``quality``, ``scheduling``."""
