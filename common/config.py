"""Typed configuration, validated once where it enters (a TOML file or a Flower run config).

A coordinator writes ``configs/federation.toml``; a site administrator writes ``configs/site.toml``.
Both are parsed into frozen pydantic models here, with unknown keys refused so that a typo
(``local_step = 5``) is an error naming the key instead of a silently ignored setting. Inside the
project only these typed objects travel; to reach the Flower apps the run settings are serialised
as one canonical JSON string in the run config (see :func:`to_run_config`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.errors import ConfigError

# A site's name is a file name at the coordinator (sites/<name>.pub) and a label in every report.
SITE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
StrategyName = Literal["fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Strict):
    """MONAI 3D UNet shape: one input channel (the image), ``out_channels`` classes incl. background."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = Field(2, ge=0)
    out_channels: int = Field(2, ge=2)

    @model_validator(mode="after")
    def _strides_match_channels(self) -> ModelSettings:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"model.strides needs {len(self.channels) - 1} entries for "
                f"{len(self.channels)} channels, got {len(self.strides)}"
            )
        return self


class TrainingSettings(_Strict):
    """What each site does with the global model in one round."""

    local_steps: int = Field(20, ge=1, description="optimizer steps per round at each site")
    batch_size: int = Field(2, ge=1)
    learning_rate: float = Field(1e-3, gt=0, description="site learning rate in round 1")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine: decay over the run's rounds to final_lr_fraction; with "
        "non-IID sites a constant rate keeps the global model swinging between them")
    final_lr_fraction: float = Field(0.1, gt=0, le=1)
    patch_size: int = Field(48, ge=16, description="edge of the cubic training crop, voxels")
    mixed_precision: bool = Field(True, description="CUDA AMP, or bf16 autocast on CPUs that support it")


    def learning_rate_at(self, round_number: int, rounds: int) -> float:
        """The sites' learning rate in global round ``round_number`` (1-based) of ``rounds``."""
        if self.lr_schedule == "constant" or rounds <= 1:
            return self.learning_rate
        progress = min(max(round_number - 1, 0) / (rounds - 1), 1.0)
        floor = self.final_lr_fraction
        return self.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class StrategySettings(_Strict):
    """Aggregation on the coordinator. Unused knobs are ignored by strategies that lack them."""

    name: StrategyName = "fedavg"
    proximal_mu: float = Field(0.01, ge=0, description="FedProx")
    server_learning_rate: float = Field(1.0, gt=0, description="FedAvgM")
    server_momentum: float = Field(0.9, ge=0, lt=1, description="FedAvgM")
    eta: float = Field(0.01, gt=0, description="FedAdam/FedYogi server step size")
    tau: float = Field(1e-3, gt=0, description="FedAdam/FedYogi adaptivity")


class AggregationSettings(_Strict):
    """How the coordinator combines site updates.

    ``secagg+`` (the default) runs Flower's SecAgg+ protocol: sites mask their updates so the
    coordinator can only reconstruct the weighted sum. ``plain`` lets the coordinator see each
    site's update and must be chosen explicitly; the run record says which mode ran.
    """

    mode: Literal["secagg+", "plain"] = "secagg+"
    num_shares: float = Field(1.0, gt=0, description="key shares per site: a fraction of the "
                              "sites (<= 1) or a count (> 2)")
    reconstruction_threshold: float = Field(0.6, gt=0, description="shares needed to unmask: "
                                            "a fraction of num_shares (<= 1) or a count")
    clipping_range: float = Field(8.0, gt=0, description="|weight| beyond this cannot be masked; "
                                  "a site refuses to send such a model")
    quantization_range: int = Field(2**22, gt=0)
    max_weight: float = Field(1000.0, gt=0, description="largest training-case count a site may "
                              "weigh in with")


class PrivacySettings(_Strict):
    """Optional differential privacy: sites clip their update, the coordinator adds noise.

    The run record reports the epsilon spent at ``delta`` (see :mod:`common.privacy`).
    """

    differential_privacy: bool = False
    noise_multiplier: float = Field(0.5, gt=0)
    clipping_norm: float = Field(1.0, gt=0, description="L2 bound on one site's update per round")
    delta: float = Field(1e-5, gt=0, lt=1)


class RunSettings(_Strict):
    """One federated run: how many rounds, who must take part, what each site trains."""

    rounds: int = Field(10, ge=1)
    min_sites: int = Field(2, ge=1, description="quorum: replies needed for a round to count")
    round_timeout_s: float = Field(900, gt=0)
    seed: int = 0
    strategy: StrategySettings = StrategySettings()
    aggregation: AggregationSettings = AggregationSettings()
    privacy: PrivacySettings = PrivacySettings()
    training: TrainingSettings = TrainingSettings()
    model: ModelSettings = ModelSettings()

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: checkpoints carry it so a resume cannot mix configs."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class SiteSettings(_Strict):
    """A site's own settings; they never leave the site."""

    name: str = Field(pattern=SITE_NAME_PATTERN)
    data_path: Path
    cache_path: Path
    superlink: str = Field("127.0.0.1:9092", description="host:port of the coordinator's Fleet API")
    root_certificates: Path
    private_key: Path
    device: Literal["auto", "cuda", "cpu"] = "auto"
    threads: int = Field(0, ge=0, description="CPU threads for training; 0 = all cores")
    node_port: int = Field(9094, ge=1, le=65535, description="the SuperNode's local port for its "
                           "ClientApp processes (127.0.0.1 only); distinct per site on one host")


class ConsortiumSettings(_Strict):
    """The coordinator's side of a consortium: what its certificate names and its kits announce.

    ``address`` is the one place sites connect to (the Fleet-only proxy); its host is always a
    name in the coordinator's certificate, so a kit can never point sites at a name that fails
    TLS verification. ``hostnames`` adds further DNS names or IP addresses the same certificate
    must cover (another interface, a load balancer's name).
    """

    name: str = Field("insite consortium", min_length=1, description="shown in the CA's subject")
    address: str = Field(description="host:port sites connect to; goes into every site kit")
    hostnames: tuple[str, ...] = ()
    listen: str = Field("0.0.0.0", description="interface the public endpoint binds to")
    certificate_days: int = Field(365, ge=1, le=3650)
    ca_days: int = Field(3650, ge=1)
    renew_before_days: int = Field(30, ge=1, description="'insite coord status' warns from here on")

    @field_validator("address")
    @classmethod
    def _host_port(cls, address: str) -> str:
        found = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})", address)
        if not found or not 0 < int(found[2]) < 65536:
            raise ValueError(f"'{address}' is not host:port (e.g. coordinator.example.org:9092, "
                             "[2001:db8::1]:9092)")
        return address

    @model_validator(mode="after")
    def _ca_outlives_certificate(self) -> ConsortiumSettings:
        if self.certificate_days > self.ca_days:
            raise ValueError("certificate_days must not exceed ca_days (the CA would expire first)")
        return self

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line naming the source and every bad or unknown key, so the CLI can print it as is."""
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown setting '{where}'")
        else:
            problems.append(f"'{where}': {item['msg']}")
    return f"{source}: " + "; ".join(problems)


def read_toml(path: Path) -> dict:
    """Parse a TOML file, turning a missing or malformed file into a ConfigError that names it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None


def parse_run_settings(data: dict, source: str = "run settings") -> RunSettings:
    try:
        return RunSettings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source)) from None


def load_run_settings(path: Path) -> RunSettings:
    """Read ``federation.toml``; its ``[run]`` table holds :class:`RunSettings`."""
    data = read_toml(path)
    unknown = set(data) - {"run"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; expected only [run]")
    return parse_run_settings(data.get("run", {}), str(path))


def load_site_settings(path: Path) -> SiteSettings:
    """Read ``site.toml``; relative paths are taken relative to the file's folder."""
    data = read_toml(path)
    site = data.get("site")
    if not isinstance(site, dict) or set(data) != {"site"}:
        raise ConfigError(f"{path}: expected exactly one [site] table")
    try:
        settings = SiteSettings.model_validate(site)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, str(path))) from None
    base = path.parent
    return settings.model_copy(
        update={
            key: (base / getattr(settings, key)).resolve()
            for key in ("data_path", "cache_path", "root_certificates", "private_key")
        }
    )


def load_consortium_settings(path: Path) -> ConsortiumSettings:
    """Read ``consortium.toml``; its one ``[consortium]`` table holds :class:`ConsortiumSettings`."""
    data = read_toml(path)
    if not isinstance(data.get("consortium"), dict) or set(data) != {"consortium"}:
        raise ConfigError(f"{path}: expected exactly one [consortium] table")
    try:
        return ConsortiumSettings.model_validate(data["consortium"])
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, str(path))) from None


def to_run_config(settings: RunSettings, run_dir: Path, round_offset: int = 0,
                  initial_weights: Path | None = None) -> dict[str, str | int]:
    """Flower run-config overrides. Keys are those declared in pyproject ``[tool.flwr.app.config]``."""
    return {
        "settings": settings.canonical_json(),
        "run-dir": str(run_dir),
        "round-offset": round_offset,
        "initial-weights": str(initial_weights) if initial_weights else "",
    }


def from_run_config(run_config: dict) -> RunSettings:
    """Inverse of :func:`to_run_config` for the settings part (inside the Flower apps)."""
    raw = run_config.get("settings") or "{}"
    try:
        return RunSettings.model_validate_json(raw)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, "run config 'settings'")) from None
