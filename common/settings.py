"""A federated run's settings, validated once where they enter (a TOML file or a Flower run config).

A coordinator writes ``configs/federation.toml``; it is parsed into frozen pydantic models here,
with unknown keys refused so that a typo (``local_step = 5``) is an error naming the key instead
of a silently ignored setting. Inside the project only these typed objects travel; to reach the
Flower apps the run settings are serialised as one canonical JSON string in the run config (see
:func:`to_run_config`). Both apps import this module, so it ships in the app bundle.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from common.errors import ConfigError
from common.validation import (
    StrictModel,
    describe_validation_error,
    read_toml,
    validated,
)

StrategyName = Literal["fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm", "feddyn"]


class ModelSettings(StrictModel):
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


class TrainingSettings(StrictModel):
    """What each site does with the global model in one round."""

    local_steps: int = Field(20, ge=1, description="optimizer steps per round at each site")
    batch_size: int = Field(2, ge=1)
    learning_rate: float = Field(1e-3, gt=0, description="site learning rate in round 1")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine",
        description="cosine: decay over the run's rounds to final_lr_fraction; with "
        "non-IID sites a constant rate keeps the global model swinging between them",
    )
    final_lr_fraction: float = Field(0.1, gt=0, le=1)
    # Measured on the demo's sites (FedAvg consensus, seed 0): 80 steps at the final rate (0.0005)
    # left every site 0.01-0.03 below its local-only model; 320 at 0.4 x learning_rate put every
    # site above it (0.899/0.821/0.839 vs 0.890/0.810/0.823).
    personalise_steps: int = Field(320, ge=1, description="steps a site adapts the consensus model to its own cases")
    personalise_lr_fraction: float = Field(
        0.4, gt=0, le=1, description="the adaptation's learning rate, as a fraction of learning_rate"
    )
    patch_size: int = Field(48, ge=16, description="edge of the cubic training crop, voxels")
    mixed_precision: bool = Field(True, description="CUDA AMP, or bf16 autocast on CPUs that support it")

    def learning_rate_at(self, round_number: int, rounds: int) -> float:
        """The sites' learning rate in global round ``round_number`` (1-based) of ``rounds``."""
        if self.lr_schedule == "constant" or rounds <= 1:
            return self.learning_rate
        progress = min(max(round_number - 1, 0) / (rounds - 1), 1.0)
        floor = self.final_lr_fraction
        return self.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class StrategySettings(StrictModel):
    """Aggregation on the coordinator. Unused knobs are ignored by strategies that lack them."""

    name: StrategyName = "fedavg"
    proximal_mu: float = Field(0.01, ge=0, description="FedProx")
    server_learning_rate: float = Field(1.0, gt=0, description="FedAvgM")
    server_momentum: float = Field(0.9, ge=0, lt=1, description="FedAvgM")
    eta: float = Field(0.01, gt=0, description="FedAdam/FedYogi server step size")
    tau: float = Field(1e-3, gt=0, description="FedAdam/FedYogi adaptivity")
    feddyn_alpha: float = Field(
        0.01, gt=0, description="FedDyn: weight of each site's dynamic regulariser and of the coordinator's correction"
    )


class AggregationSettings(StrictModel):
    """How the coordinator combines site updates.

    ``secagg+`` (the default) runs Flower's SecAgg+ protocol: sites mask their updates so the
    coordinator can only reconstruct the weighted sum. ``plain`` lets the coordinator see each
    site's update and must be chosen explicitly; the run record says which mode ran.
    """

    mode: Literal["secagg+", "plain"] = "secagg+"
    num_shares: float = Field(
        1.0, gt=0, description="key shares per site: a fraction of the sites (<= 1) or a count (> 2)"
    )
    reconstruction_threshold: float = Field(
        0.6, gt=0, description="shares needed to unmask: a fraction of num_shares (<= 1) or a count"
    )
    clipping_range: float = Field(
        8.0, gt=0, description="|weight| beyond this cannot be masked; a site refuses to send such a model"
    )
    quantization_range: int = Field(2**22, gt=0)
    max_weight: float = Field(1000.0, gt=0, description="largest training-case count a site may weigh in with")


class PrivacySettings(StrictModel):
    """Optional differential privacy: sites clip their update, the coordinator adds noise.

    The run record reports the epsilon spent at ``delta`` (see :mod:`common.privacy`).
    """

    differential_privacy: bool = False
    noise_multiplier: float = Field(0.5, gt=0)
    clipping_norm: float = Field(1.0, gt=0, description="L2 bound on one site's update per round")
    delta: float = Field(1e-5, gt=0, lt=1)


class FaultSettings(StrictModel):
    """How a run rides through sites that crash, stall or vanish, and through coordinator restarts.

    Every wait has a bound: a stage ends at its limit, or ``straggler_grace_s`` after ``min_sites``
    sites have answered it; a round below quorum waits ``quorum_wait_s`` for sites to come back
    and is then tried again, ``round_attempts`` times in all, before the run pauses (resumable).
    """

    stage_timeout_s: float = Field(
        120, gt=0, description="limit of each SecAgg+ key-exchange stage and of the final evaluation"
    )
    straggler_grace_s: float = Field(
        60, ge=0, description="once min_sites sites have answered a stage, how long the others may still take"
    )
    quorum_wait_s: float = Field(
        900, ge=0, description="how long a round waits for min_sites sites to be online before the run pauses"
    )
    rejoin_wait_s: float = Field(
        30, ge=0, description="how long a round, its quorum met, still waits for sites of the last round to rejoin"
    )
    round_attempts: int = Field(3, ge=1, description="tries of a round that ends with fewer than min_sites replies")
    max_update_norm: float = Field(
        1000.0, gt=0, description="plain mode: an update that moves the model farther than this (L2) is refused"
    )
    coordinator_restarts: int = Field(
        5, ge=0, description="how often the run supervisor continues a run after the coordinator crashed"
    )


class StatsSettings(StrictModel):
    """What each site reports in a statistics run (``task = "stats"``), and what it withholds.

    The privacy rules follow NVIDIA FLARE's statistics filters: every figure is a count in a bin
    fixed here in advance (never a minimum, maximum or per-case value), and a count from 1 to
    ``min_count - 1`` is withheld (sent as withheld, not as zero), as is every histogram of a site
    with fewer than ``min_count`` cases. Bin edges are the same for every site, so the coordinator
    can put the sites side by side.
    """

    min_count: int = Field(5, ge=2, description="counts below this (zero aside) are withheld")
    intensity_bins: int = Field(64, ge=4, le=100, description="bins of the intensity histogram")
    intensity_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"CT": (-1024.0, 3072.0), "MR": (0.0, 4096.0), "PT": (0.0, 50.0)},
        description="raw-unit range of the intensity histogram per modality; values outside count as below/above",
    )
    default_intensity_range: tuple[float, float] = Field(
        (0.0, 4096.0), description="the range for a modality without its own (or an unknown one)"
    )
    spacing_edges_mm: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
    shape_edges: tuple[int, ...] = (32, 64, 128, 192, 256, 384, 512)
    lesion_edges_ml: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)

    @model_validator(mode="after")
    def _edges_ascend(self) -> StatsSettings:
        for name in ("spacing_edges_mm", "shape_edges", "lesion_edges_ml"):
            edges = getattr(self, name)
            if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"stats.{name} must be a non-empty, strictly ascending list")
        for modality, (low, high) in {**self.intensity_ranges, "default": self.default_intensity_range}.items():
            if not high > low:
                raise ValueError(f"stats intensity range of {modality} must have high > low, got ({low}, {high})")
        return self

    def intensity_range(self, modality: str) -> tuple[float, float]:
        return self.intensity_ranges.get(modality, self.default_intensity_range)

    def at_site(self, site_min_count: int) -> StatsSettings:
        """These settings as a site applies them: its own minimum count (site.toml) if that is higher.

        The coordinator chooses the bins; it cannot lower what a site withholds.
        """
        return self.model_copy(update={"min_count": max(self.min_count, site_min_count)})


class RunSettings(StrictModel):
    """One federated run: how many rounds, who must take part, what each site trains."""

    task: Literal["train", "stats", "evaluate"] = Field(
        "train",
        description="train: federated training; stats: each site reports its data statistics; evaluate: "
        "each site scores the models of the run folder's evaluation request (common.evaluation)",
    )
    rounds: int = Field(10, ge=1)
    min_sites: int = Field(2, ge=1, description="quorum: replies needed for a round to count")
    sites_per_round: int = Field(
        0,
        ge=0,
        description="sites drawn to train each round from those online (0: every online site); a "
        "consortium of many sites trains a different draw each round, at least min_sites",
    )
    round_timeout_s: float = Field(900, gt=0, description="limit of a round's training exchange")
    seed: int = 0
    strategy: StrategySettings = StrategySettings()
    aggregation: AggregationSettings = AggregationSettings()
    privacy: PrivacySettings = PrivacySettings()
    faults: FaultSettings = FaultSettings()
    training: TrainingSettings = TrainingSettings()
    model: ModelSettings = ModelSettings()
    stats: StatsSettings = StatsSettings()

    @model_validator(mode="after")
    def _draw_reaches_quorum(self) -> RunSettings:
        if 0 < self.sites_per_round < self.min_sites:
            raise ValueError(f"sites_per_round ({self.sites_per_round}) is below min_sites ({self.min_sites})")
        return self

    def time_limit_s(self, rounds: int | None = None) -> float:
        """How long ``rounds`` (default: all) may take at the most, every wait used to its end.

        The bound a run supervisor gives up at: each round may wait for its quorum, run all its
        attempts to their limits, and the run may restart its coordinator.
        """
        faults = self.faults
        stages = self.round_timeout_s + 3 * faults.stage_timeout_s
        per_round = faults.round_attempts * (faults.quorum_wait_s + stages)
        return (rounds if rounds is not None else self.rounds) * per_round * (1 + faults.coordinator_restarts) + 600

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: checkpoints carry it so a resume cannot mix configs."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def canonical_json(self) -> str:
        # A training run leaves out what only a statistics run reads, so that its digest is the one
        # run folders and checkpoints made before statistics existed carry: they still resume.
        # Likewise for the per-round draw of sites, when every site trains (as before it existed).
        exclude = {"task", "stats"} if self.task == "train" else set()
        if not self.sites_per_round:
            exclude.add("sites_per_round")
        return json.dumps(self.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":"))


def parse_run_settings(data: dict, source: str = "run settings") -> RunSettings:
    return validated(RunSettings, data, source)


def load_run_settings(path: Path) -> RunSettings:
    """Read ``federation.toml``; its ``[run]`` table holds :class:`RunSettings`."""
    data = read_toml(path)
    unknown = set(data) - {"run"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; expected only [run]")
    return parse_run_settings(data.get("run", {}), str(path))


def to_run_config(
    settings: RunSettings,
    run_dir: Path,
    round_offset: int = 0,
    initial_weights: Path | None = None,
) -> dict[str, str | int]:
    """Flower run-config overrides. Keys are those declared in pyproject ``[tool.flwr.app.config]``.

    What the ServerApp does with the run folder is the settings' ``task``.
    """
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
