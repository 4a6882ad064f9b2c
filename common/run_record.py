"""The coordinator's run directory: checkpoints, per-round metrics and the run record.

Layout (what ``insite coord resume`` and ``insite export`` read)::

    run.json                 run record: settings, digest, contributing sites, rounds done, status
    metrics.json             {"rounds": [{"round", "global_dice", "sites": {name: {...}}, ...}]}
    rounds.jsonl             the same rows appended as each round closes (for live progress)
    state.json               what the coordinator is doing now (server.live_state), refreshed every few s
    checkpoints/round-NNNN.pt  {"round", "weights", "metrics", "settings_digest", "settings"}

Rounds are numbered across resumes: a run resumed after round 4 writes round-0005.pt next.
Files are written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.errors import CheckpointError
from common.files import atomic_write
from common.settings import RunSettings

RUN_RECORD = "run.json"
STATE = "state.json"
METRICS = "metrics.json"
ROUNDS_LOG = "rounds.jsonl"
CHECKPOINTS = "checkpoints"


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: corrupt JSON ({error})") from None


def checkpoint_path(run_dir: Path, round_number: int) -> Path:
    return run_dir / CHECKPOINTS / f"round-{round_number:04d}.pt"


@dataclass(frozen=True)
class Checkpoint:
    round: int
    weights: dict[str, torch.Tensor]
    metrics: dict[str, Any]
    settings_digest: str
    settings_json: str = ""  # the run's settings (canonical JSON): what network the weights are for


def save_checkpoint(
    run_dir: Path, round_number: int, weights: dict[str, torch.Tensor], metrics: dict[str, Any], settings: RunSettings
) -> Path:
    """Write round ``round_number``'s checkpoint; written again once the round's Dice is known."""
    path = checkpoint_path(run_dir, round_number)
    buffer = io.BytesIO()
    torch.save(
        {
            "round": round_number,
            "weights": weights,
            "metrics": metrics,
            "settings_digest": settings.digest(),
            "settings": settings.canonical_json(),
        },
        buffer,
    )
    atomic_write(path, buffer.getvalue())
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return Checkpoint(
            int(raw["round"]), raw["weights"], raw["metrics"], raw["settings_digest"], str(raw.get("settings", ""))
        )
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: not a readable insite checkpoint ({error})") from None


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / CHECKPOINTS).glob("round-*.pt"))
    return found[-1] if found else None


class RunRecord:
    """Reads and updates ``run.json`` and the metrics files of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def create(self, name: str, settings: RunSettings, transport: dict[str, Any]) -> None:
        # A run that never reached a checkpoint has nothing to lose: launching again replaces it.
        if (self.run_dir / RUN_RECORD).exists() and latest_checkpoint(self.run_dir) is not None:
            raise CheckpointError(
                f"{self.run_dir}: a run with checkpoints exists here; continue it with "
                f"'insite coord resume {self.run_dir}' (a consortium's run) or 'insite demo "
                "--resume' (the demo's), or choose another folder"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            self.run_dir / RUN_RECORD,
            {
                "name": name,
                "settings": settings.model_dump(mode="json"),
                "settings_digest": settings.digest(),
                "transport": transport,
                "rounds_planned": settings.rounds if settings.task == "train" else 0,  # evaluations, statistics
                "rounds_done": 0,
                "sites": [],
                "flower_runs": [],
                "status": "created",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "run_key": secrets.token_hex(16),
            },
        )
        write_json(self.run_dir / METRICS, {"rounds": []})

    def read(self) -> dict[str, Any]:
        return read_json(self.run_dir / RUN_RECORD)

    def run_key(self) -> str:
        """The run's identity for the sites (common.protocol.RUN_KEY): the same across resumes, new per run.

        Random, drawn when the record is created; a run folder made before run keys existed gets
        one derived from its creation time and settings, the same at every resume.
        """
        record = self.read()
        if "run_key" in record:
            return str(record["run_key"])
        return hashlib.sha256(f"{record['created']}|{record['settings_digest']}".encode()).hexdigest()[:32]

    def settings(self) -> RunSettings:
        record = self.read()
        settings = RunSettings.model_validate(record["settings"])
        if settings.digest() != record["settings_digest"]:
            raise CheckpointError(f"{self.run_dir / RUN_RECORD}: settings do not match their digest")
        return settings

    def update(self, **fields: Any) -> None:
        record = self.read()
        record.update(fields)
        write_json(self.run_dir / RUN_RECORD, record)

    def write_state(self, state: dict[str, Any]) -> None:
        write_json(self.run_dir / STATE, state)

    def state(self) -> dict[str, Any] | None:
        """The coordinator's last word on the run (``state.json``), or None before it started."""
        try:
            return dict(read_json(self.run_dir / STATE))
        except CheckpointError:
            return None

    def rounds(self) -> list[dict[str, Any]]:
        return read_json(self.run_dir / METRICS)["rounds"]

    def append_round(self, row: dict[str, Any]) -> None:
        """Record a closed round: metrics.json, the live log, and the set of contributing sites."""
        rows = [r for r in self.rounds() if r["round"] < row["round"]] + [row]
        write_json(self.run_dir / METRICS, {"rounds": rows})
        with open(self.run_dir / ROUNDS_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(row, sort_keys=True) + "\n")
        record = self.read()
        sites = sorted(set(record["sites"]) | set(row.get("sites", {})))
        self.update(rounds_done=row["round"], sites=sites)


def resume_point(run_dir: Path) -> tuple[RunSettings, int, Path]:
    """Settings, rounds already done and the checkpoint an interrupted run continues from."""
    record = RunRecord(run_dir)
    settings = record.settings()
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(f"{run_dir}: no checkpoint yet; start the run again instead")
    done = load_checkpoint(checkpoint).round
    if done >= settings.rounds and record.read()["rounds_done"] >= settings.rounds:
        raise CheckpointError(f"{run_dir}: all {settings.rounds} rounds are done; nothing to resume")
    return settings, done, checkpoint
