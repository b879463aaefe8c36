"""The model: loading SDXL-Lightning (or the tiny random one), its speed options, prompt encoding,
LoRA adapters and the download of weights. Builds on :mod:`generation.core` only."""
