"""The engine's vocabulary, shared by every other part: requests and results, batches and the
executor protocol, errors, prompt syntax (weighting) and styles. Pure Python: no torch import."""
