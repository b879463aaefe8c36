"""Configuration: one TOML file (see config.example.toml); secrets only from the environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.frontends.discord import DiscordSettings
    from bot.frontends.telegram import TelegramSettings
    from bot.frontends.web import WebSettings

from bot.config_schema import ConfigError, Section, build_section, find_secrets, section_keys
from bot.maintenance import MaintenanceSettings
from bot.safety.moderation import ModerationSettings
from generation.quality.clip_score import EvalSettings
from generation.model.lora import LoraSettings
from generation.model.preview import PreviewSettings
from generation.model.entries import ModelEntry, check_entries
from generation.model.pipeline import ModelConfig
from generation.prompts.describe import DescribeSettings
from generation.prompts.refine import RefineSettings
from generation.tools.masks import EditSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "SECTIONS",
    "AdminConfig",
    "Config",
    "ConfigError",
    "GenerationConfig",
    "QueueConfig",
    "QuotaConfig",
    "RayConfig",
    "SafetyConfig",
    "StorageConfig",
    "OutputConfig",
    "config_keys",
    "load_config",
    "sections",
]


@dataclass(frozen=True)
class QueueConfig:
    """[queue]: batching and back-pressure."""

    max_batch_images: int = 8
    max_queued_images: int = 64
    max_queued_per_user: int = 8
    priority_burst: int = 3
    batch_time_limit_s: float = 120.0
    # max_queued_images is per executor: 2 GPUs take twice the backlog
    scale_max_queued: bool = True
    # a GPU (local worker) that fails this many batches in a row leaves the rotation
    max_executor_failures: int = 3


@dataclass(frozen=True)
class GenerationConfig:
    """[generation]: where batches run: local devices (the default) or a Ray Serve cluster."""

    backend: str = "local"
    # () = the one [model] device; ("auto",) = every visible GPU; or ("cuda:0", "cuda:1")
    devices: tuple[str, ...] = ()
    # device memory the [models.NAME] of one executor may hold at once (GB); 0: no limit, all stay loaded
    model_memory_gb: float = 0.0

    def __post_init__(self) -> None:
        if self.backend not in ("local", "ray"):
            raise ValueError(f"generation.backend must be \"local\" or \"ray\", not {self.backend!r}")
        if self.model_memory_gb < 0:
            raise ValueError(f"generation.model_memory_gb must be 0 (no limit) or more, not {self.model_memory_gb}")
        if not all(isinstance(d, str) for d in self.devices):
            raise ValueError(f"generation.devices must be \"auto\" or a list of device names, not {self.devices!r}")


@dataclass(frozen=True)
class RayConfig:
    """[ray]: the Ray Serve deployment used when generation.backend = "ray"."""

    address: str = ""  # "" starts a local Ray cluster; "ray://host:10001" or "host:6379" joins one
    replicas: int = 1  # fixed number of replicas (one GPU each by default)
    min_replicas: int = 0  # with max_replicas > 0: autoscale between min and max
    max_replicas: int = 0
    gpus_per_replica: float = 1.0
    cpus_per_replica: float = 1.0
    progress_timeout_s: float = 120.0  # a replica silent this long mid-batch is lost; the batch is retried

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"ray.replicas must be at least 1, not {self.replicas}")
        if self.max_replicas and not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"ray.min_replicas ({self.min_replicas}) must be between 0 and ray.max_replicas "
                             f"({self.max_replicas})")
        if self.gpus_per_replica < 0 or self.cpus_per_replica < 0 or self.progress_timeout_s <= 0:
            raise ValueError("ray.gpus_per_replica and ray.cpus_per_replica must be 0 or more, "
                             "ray.progress_timeout_s positive")

    @property
    def slots(self) -> int:
        """Batches in flight at once: one per replica (the most replicas when autoscaling)."""
        return self.max_replicas or self.replicas


@dataclass(frozen=True)
class StorageConfig:
    """[storage]: where the database and image files live."""

    data_dir: Path = Path("data")

    @property
    def database(self) -> Path:
        return self.data_dir / "imagine.db"

    @property
    def images(self) -> Path:
        return self.data_dir / "images"


@dataclass(frozen=True)
class QuotaConfig:
    """[quota]: images per user per window (admins can override per user)."""

    images: int = 50
    window: str = "daily"
    upscale_cost: int = 1  # images of quota one upscale costs

    def __post_init__(self) -> None:
        if self.window not in ("hourly", "daily", "weekly"):
            raise ValueError(f"quota.window must be hourly, daily or weekly, not {self.window!r}")
        if self.images < 0:
            raise ValueError(f"quota.images must be 0 or more, not {self.images}")
        if self.upscale_cost < 0:
            raise ValueError(f"quota.upscale_cost must be 0 or more, not {self.upscale_cost}")


@dataclass(frozen=True)
class UpscaleConfig:
    """[upscale]: the image toolbox: the upscaler model and the strengths of img2img passes."""

    model: str | None = None  # a .pth/.safetensors path, or "owner/repo/file.pth" on the Hub; None: Lanczos
    subtle: float = 0.3  # strength of the tiled pass of ⬆️ Upscale (Subtle)
    creative: float = 0.55  # … and of ⬆️ Upscale (Creative)
    image_strength: float = 0.6  # how much of a user's own picture changes when no --strength is given

    def __post_init__(self) -> None:
        for name in ("subtle", "creative", "image_strength"):
            value = getattr(self, name)
            if not 0.1 <= value <= 1:
                raise ValueError(f"upscale.{name} must be from 0.1 to 1, not {value}")

    def model_path(self, models_dir: Path) -> Path | None:
        """Where the upscaler file is: the path itself, or where `imagine-bot download` puts a Hub file."""
        if self.model is None:
            return None
        path = Path(self.model).expanduser()
        if path.suffix in (".pth", ".safetensors", ".pt") and (path.is_absolute() or path.exists()):
            return path
        return models_dir / "upscalers" / Path(self.model).name


@dataclass(frozen=True)
class SafetyConfig:
    """[safety]: the prompt blocklist (words and regular expressions)."""

    default_blocklist: bool = True
    words: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    check_negative_prompt: bool = False
    blocklist_file: Path | None = None  # extra categories, in the format of bot/safety/blocklist.txt
    allow: tuple[str, ...] = ()  # phrases and names that override word hits, besides bot/safety/allowlist.txt
    classifier_file: Path | None = None  # an ONNX text classifier as a second opinion (off when unset)
    classifier_threshold: float = 0.8


@dataclass(frozen=True)
class OutputConfig:
    """[output]: where `imagine-bot generate` and the terminal chat write images."""

    dir: Path = Path("out")


@dataclass(frozen=True)
class AdminConfig:
    """[admin]: who may use admin commands, as "platform:user id"."""

    users: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for user in self.users:
            if user.count(":") != 1 or not all(user.split(":")):
                raise ValueError(
                    f'admin.users must be a list like ["discord:1234", "telegram:5678"], not {user!r}'
                )


@dataclass(frozen=True)
class Config:
    """The whole configuration, after defaults and validation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    models: tuple[ModelEntry, ...] = ()  # [models.NAME]: the catalogue; () = [model] alone
    queue: QueueConfig = field(default_factory=QueueConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    upscale: UpscaleConfig = field(default_factory=UpscaleConfig)  # the image toolbox
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)  # <lora:NAME:W> adapters
    preview: PreviewSettings = field(default_factory=PreviewSettings)  # live previews while images form
    refine: RefineSettings = field(default_factory=RefineSettings)  # --refine's language model
    eval: EvalSettings = field(default_factory=EvalSettings)  # CLIP score per image
    edit: EditSettings = field(default_factory=EditSettings)  # 🖌️ Vary (Region): masks from words
    describe: DescribeSettings = field(default_factory=DescribeSettings)  # /describe's captioner
    admins: frozenset[str] = frozenset()
    output_dir: Path = Path("out")
    discord: DiscordSettings | None = None  # None: no DISCORD_TOKEN, Discord not started
    telegram: TelegramSettings | None = None  # None: no TELEGRAM_TOKEN
    web: WebSettings | None = None  # None: no [web] section, or enabled = false
    source: Path | None = None


def _front_end_sections() -> dict[str, Section]:
    from bot.frontends.discord.settings import DiscordSettings
    from bot.frontends.telegram.settings import TelegramSettings
    from bot.frontends.web.settings import WebSettings

    return {
        "web": Section(WebSettings, secrets={"metrics_token": "IMAGINE_METRICS_TOKEN"}),
        "discord": Section(DiscordSettings, secrets={"token": "DISCORD_TOKEN"}),
        "telegram": Section(
            TelegramSettings,
            secrets={"token": "TELEGRAM_TOKEN", "webhook_secret": "TELEGRAM_WEBHOOK_SECRET"},
            subtables={"webhook": "webhook_"},
        ),
    }


MODELS = "models.NAME"  # the catalogue's tables as the reference lists them

# Every [section] of the file. A new key is a new field of its dataclass; a new section is a line
# here and a field of Config (front ends: _front_end_sections).
SECTIONS: dict[str, Section] = {
    "model": Section(ModelConfig),
    "queue": Section(QueueConfig),
    "generation": Section(GenerationConfig),
    "ray": Section(RayConfig),
    "output": Section(OutputConfig),
    "storage": Section(StorageConfig),
    "quota": Section(QuotaConfig),
    "upscale": Section(UpscaleConfig),
    "admin": Section(AdminConfig),
    "safety": Section(SafetyConfig),
    "maintenance": Section(MaintenanceSettings),
    "moderation": Section(ModerationSettings),
    "lora": Section(LoraSettings),
    "preview": Section(PreviewSettings),
    "refine": Section(RefineSettings),
    "eval": Section(EvalSettings),
    "edit": Section(EditSettings),
    "describe": Section(DescribeSettings),
    MODELS: Section(ModelEntry, hidden=frozenset({"name"})),  # [models.<name>], one table per model
}

# Where a secret that someone put in the file must come from instead.
_SECRET_VARIABLES = {
    "discord.token": "DISCORD_TOKEN",
    "telegram.token": "TELEGRAM_TOKEN",
    "telegram.webhook_secret": "TELEGRAM_WEBHOOK_SECRET",
    "telegram.webhook.secret": "TELEGRAM_WEBHOOK_SECRET",
    "web.metrics_token": "IMAGINE_METRICS_TOKEN",
    "model.token": "HF_TOKEN",
    "model.hf_token": "HF_TOKEN",
}


def _all_sections() -> dict[str, Section]:
    return {**SECTIONS, **_front_end_sections()}


def sections() -> dict[str, Section]:
    """Every ``[section]`` of the file, front ends included (the docs' config reference reads it)."""
    return _all_sections()


def config_keys() -> list[str]:
    """Every dotted key the config file may hold (``[moderation.policies]`` as one key)."""
    return [key for name, section in _all_sections().items() for key in section_keys(name, section)]


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read ``path`` (defaults when None) and secrets from ``env`` (default os.environ).

    Every section is checked, whether or not its front end runs; unknown keys and bad types are
    errors that name the key and the type it takes. Secrets are never read from the file:
    DISCORD_TOKEN, TELEGRAM_TOKEN, TELEGRAM_WEBHOOK_SECRET, or the same name + ``_FILE``
    naming a file that holds it (e.g. a Docker secret).
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"Config file {str(path)!r} not found; copy config.example.toml to it and edit."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Config file {str(path)!r} cannot be read: {exc}.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {str(path)!r} is not valid TOML: {exc}") from None
    sections = _all_sections()
    models = _model_entries(data.pop("models", {}), path)
    for key in data:
        if key not in sections:
            raise ConfigError(
                f"Unknown config section [{key}] in {path}; known: {', '.join(sorted(sections))}."
            )
    generation = data.get("generation")
    if isinstance(generation, dict) and isinstance(generation.get("devices"), str):
        if generation["devices"] != "auto":
            raise ConfigError('generation.devices must be "auto" or a list like ["cuda:0", "cuda:1"].')
        data["generation"] = {**generation, "devices": ["auto"]}
    find_secrets(data, _SECRET_VARIABLES, {v for s in sections.values() for v in s.secrets.values()})
    built: dict[str, Any] = {}
    for name, section in sections.items():
        if name == MODELS:
            continue
        values = {f: _secret(env, var) for f, var in section.secrets.items()}
        result = build_section(name, section, data.get(name, {}), secrets=values)
        if name == "web":  # switched on by web.enabled; its one secret (the metrics token) is optional
            built[name] = result if result.enabled else None
            continue
        token = next(iter(section.secrets), None)
        if token is None or values[token]:
            built[name] = result
    output, admin = built.pop("output"), built.pop("admin")
    built["model"] = _with_compile_cache(built["model"], built["storage"])
    return Config(**built, models=models, admins=frozenset(admin.users), output_dir=output.dir, source=path)


def _model_entries(tables: object, path: object) -> tuple[ModelEntry, ...]:
    """[models.NAME] tables, each checked like a section, then the catalogue as a whole."""
    if not isinstance(tables, Mapping):
        raise ConfigError(f"[models] must hold one table per model, like [models.flux], not {tables!r}.")
    entries = []
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"models.{name} must be a table ([models.{name}] with kind = ...), not {table!r}.")
        entry = build_section(f"models.{name}", Section(ModelEntry, hidden=frozenset({"name"})), table)
        entries.append(_named(entry, name))
    try:
        check_entries(entries)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return tuple(entries)


def _named(entry: ModelEntry, name: str) -> ModelEntry:
    try:
        return replace(entry, name=name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _with_compile_cache(model: ModelConfig, storage: StorageConfig) -> ModelConfig:
    """[model] with the torch.compile cache under [storage] data_dir unless the file names one."""
    if model.compile_cache_dir is not None:
        return model
    return replace(model, compile_cache_dir=str(storage.data_dir / "torch-compile"))


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """``env[name]``, or the stripped contents of the file named by ``env[name + "_FILE"]``."""
    if env.get(name):
        return env[name].strip()
    file = env.get(f"{name}_FILE")
    if not file:
        return None
    try:
        return Path(file).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise ConfigError(f"{name}_FILE names {file!r}, which cannot be read: {exc.strerror}.") from None
