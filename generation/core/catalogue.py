"""The model catalogue as the queue and the service see it: names, capabilities, the default, and
how requests that name no model are shared between the default and candidates (pure Python).

    Catalogue([ModelInfo("lightning", "sdxl-lightning", caps, ...), ModelInfo("flux", ...)])
    catalogue.resolve("flux")          -> "flux"     ("" for the default; unknown: InvalidRequest)
    catalogue.caps_for("")             -> the default model's ModelCaps
    catalogue.pick("discord:42", {"flux": 0.1})  -> "flux" for about 10 % of users, always the same

A rollout share is sticky per user: a user's place in [0, 1) is a hash of their key, and each
candidate owns a slice of that line (in name order) as wide as its share; the default has the
rest. Raising a share keeps everyone who was on the candidate there.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from generation.core.errors import InvalidRequest
from generation.core.request import ModelCaps

__all__ = ["Catalogue", "ModelInfo", "user_point"]


@dataclass(frozen=True)
class ModelInfo:
    """One model of the catalogue: its name, kind, what it can do and its rollout share."""

    name: str
    kind: str
    caps: ModelCaps
    model_id: str = ""
    traffic: float = 0.0  # share of the requests that name no model (from the config; the database overrides)
    default: bool = False


def user_point(user_key: str) -> float:
    """A user's fixed place in [0, 1) (the first 8 bytes of SHA-256 of their key)."""
    digest = hashlib.sha256(user_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Catalogue:
    """The models one bot serves; exactly one is the default."""

    def __init__(self, models: Iterable[ModelInfo]) -> None:
        self.models: dict[str, ModelInfo] = {}
        for info in models:
            if info.name in self.models:
                raise ValueError(f"model {info.name!r} is in the catalogue twice")
            self.models[info.name] = info
        if not self.models:
            raise ValueError("a catalogue needs at least one model")
        defaults = [m.name for m in self.models.values() if m.default]
        if len(defaults) > 1:
            raise ValueError(f"only one model may be the default, not {', '.join(defaults)}")
        self.default = defaults[0] if defaults else next(iter(self.models))

    @classmethod
    def single(cls, caps: ModelCaps, model_id: str = "") -> Catalogue:
        """The catalogue of a bot with one model (the ``[model]`` shorthand)."""
        return cls([ModelInfo(caps.name, caps.name, caps, model_id, 0.0, True)])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def resolve(self, name: str | None) -> str:
        """The canonical name of model ``name`` in a request: "" for the default (or none named).

        Unknown names raise InvalidRequest listing the models (and the closest one).
        """
        text = (name or "").strip()
        if not text:
            return ""
        found = text if text in self.models else next((n for n in self.models if n.lower() == text.lower()), None)
        if found is None:
            close = difflib.get_close_matches(text.lower(), list(self.models), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise InvalidRequest("model", f"Unknown model {text!r}; this bot has {', '.join(self.models)}.{hint}")
        return "" if found == self.default else found

    def info(self, name: str) -> ModelInfo:
        """The model a request names ("" is the default)."""
        return self.models[self.resolve(name) or self.default]

    def caps_for(self, name: str) -> ModelCaps:
        return self.info(name).caps

    def shares(self, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        """Each candidate's share of unnamed requests: the config's, replaced by ``overrides``
        (the live values from the database); never the default's, and at most 1 in all."""
        shares = {name: info.traffic for name, info in self.models.items() if name != self.default}
        for name, share in (overrides or {}).items():
            if name in shares:
                shares[name] = share
        out, left = {}, 1.0
        for name in sorted(shares):
            share = min(max(float(shares[name]), 0.0), left)
            if share > 0:
                out[name] = share
                left -= share
        return out

    def pick(self, user_key: str, overrides: Mapping[str, float] | None = None) -> str:
        """The model for a request of ``user_key`` that names none: "" (the default) or the
        candidate whose slice holds the user's point."""
        point, edge = user_point(user_key), 0.0
        for name, share in self.shares(overrides).items():
            edge += share
            if point < edge:
                return name
        return ""
