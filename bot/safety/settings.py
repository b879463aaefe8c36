"""[moderation] settings: escalation thresholds, image threshold, per-scope policies, tiers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.safety.images import EXPLICIT_LABELS, ImageSettings

__all__ = ["EXPLICIT_ACTIONS", "LOW_CONFIDENCE_ACTIONS", "ModerationSettings", "ScopePolicy"]

EXPLICIT_ACTIONS = ("block", "spoiler")
LOW_CONFIDENCE_ACTIONS = ("refuse", "warn")


@dataclass(frozen=True)
class ScopePolicy:
    """One server's/group's rules: explicit images blocked or spoilered; prompt categories allowed."""

    explicit: str = "block"
    allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.explicit not in EXPLICIT_ACTIONS:
            raise ValueError(f"`explicit` must be one of {', '.join(EXPLICIT_ACTIONS)}, not {self.explicit!r}")
        if isinstance(self.allow, str):
            raise ValueError("`allow` must be a list of category names")
        object.__setattr__(self, "allow", tuple(self.allow))


@dataclass(frozen=True)
class ModerationSettings:
    """[moderation] config: escalation thresholds, request spacing, image threshold, policies."""

    request_interval_s: float = 3.0  # per-user gap between accepted requests (admins exempt)
    strike_window_hours: float = 24.0  # strikes older than this stop counting
    cooldown_after: int = 3  # strikes → a cooldown
    cooldown_minutes: float = 30.0
    block_after: int = 6  # strikes → blocked until an admin lifts it (0: never)
    strike_on_image_block: bool = True
    explicit_threshold: float = 0.5  # NudeNet score from which an exposed-body label is explicit
    explicit_labels: tuple[str, ...] = EXPLICIT_LABELS
    explicit: str = "block"  # default policy for scopes without their own: block | spoiler
    policies: Mapping[str, ScopePolicy] = field(default_factory=dict)  # scope → policy
    low_confidence: str = "refuse"  # a low-confidence prompt match: refuse without a strike | warn (allow, log)

    def __post_init__(self) -> None:
        if self.low_confidence not in LOW_CONFIDENCE_ACTIONS:
            raise ValueError(f"`low_confidence` must be one of {', '.join(LOW_CONFIDENCE_ACTIONS)}, "
                             f"not {self.low_confidence!r}")
        for name in ("request_interval_s", "strike_window_hours", "cooldown_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be 0 or more, not {getattr(self, name)}")
        for name in ("cooldown_after", "block_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a whole number, 0 or more, not {value!r}")
        if self.explicit not in EXPLICIT_ACTIONS:
            raise ValueError(f"`explicit` must be one of {', '.join(EXPLICIT_ACTIONS)}, not {self.explicit!r}")
        policies = {str(k): v if isinstance(v, ScopePolicy) else ScopePolicy(**v) for k, v in self.policies.items()}
        object.__setattr__(self, "policies", policies)
        object.__setattr__(self, "explicit_labels", tuple(self.explicit_labels))
        ImageSettings(self.explicit_labels, self.explicit_threshold)  # validates the threshold

    @property
    def image(self) -> ImageSettings:
        return ImageSettings(self.explicit_labels, self.explicit_threshold)
