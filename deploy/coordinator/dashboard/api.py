"""The dashboard's JSON, built from what the coordinator actually holds; nothing is guessed.

Each function reads the consortium's files (run records, ``state.json``, manifests, site keys) and
the SuperLink's database at the moment it is called and returns plain JSON-ready dicts, so the
page, a script and the tests all see the same thing. What the coordinator cannot know is said to
be unknown: the Flower and Python versions a site's SuperNode runs are never reported to it; the
app a site approved is known only from the runs it took part in (a site's gate executes approved
apps only, :mod:`deploy.site.app_approval`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common.errors import InsiteError
from common.run_record import RunRecord
from deploy.coordinator.consortium import CoordinatorDir, registered_sites
from deploy.coordinator.dashboard.source import DashboardSource
from deploy.coordinator.dashboard.superlink_db import FlowerNode, FlowerRun, read_nodes, read_runs
from deploy.coordinator.run_state import SILENT_S, describe_run, run_summary
from deploy.coordinator.statistics_view import side_by_side
from publication.manifest.approvals import (
    ManifestApproval,
    check_approvals,
    default_collected_path,
    load_approval,
    load_approval_set,
    manifest_digest,
)
from publication.manifest.policy import decisions
from publication.manifest.schema import load_manifest
from publication.signing import load_public_keys

UNKNOWN = "unknown"


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp))


def _records(source: DashboardSource) -> list[tuple[Path, dict[str, Any]]]:
    """Each readable run record, oldest first; a damaged one is left out here and named by :func:`runs`."""
    found = []
    for run_dir in source.run_dirs():
        try:
            found.append((run_dir, RunRecord(run_dir).read()))
        except InsiteError:
            continue
    return found


def _flower_runs(source: DashboardSource, records: list[tuple[Path, dict[str, Any]]]) -> dict[int, FlowerRun]:
    return read_runs(source.database, [int(i) for _, record in records for i in record.get("flower_runs", [])])


def _app_of(site: str, records: list[tuple[Path, dict[str, Any]]], flower: dict[int, FlowerRun]) -> dict | None:
    """The app the site last ran: the FAB of the latest Flower run of the latest run it contributed to."""
    for run_dir, record in reversed(records):
        if site not in record.get("sites", []):
            continue
        for run_id in reversed(record.get("flower_runs", [])):
            if int(run_id) in flower:
                run = flower[int(run_id)]
                return {
                    "digest": run.fab_hash,
                    "version": run.fab_version,
                    "run": run_dir.name,
                    "flower_run": str(run_id),
                }
    return None


def sites(source: DashboardSource, now: float) -> dict[str, Any]:
    """Every registered site: online or not (Flower's heartbeat deadline), last seen, key, app it ran."""
    nodes = read_nodes(source.database)
    by_name: dict[str, FlowerNode] = {node.name: node for node in nodes if node.name}
    records = _records(source)
    flower = _flower_runs(source, records)
    listed = []
    for site in registered_sites(CoordinatorDir(source.pki.root)):
        node = by_name.pop(site.name, None)
        listed.append(_site_row(site.name, site.fingerprint, True, node, now, _app_of(site.name, records, flower)))
    for name, node in sorted(by_name.items()):  # known to the SuperLink, key no longer in sites/
        listed.append(_site_row(name, None, False, node, now, _app_of(name, records, flower)))
    return {
        "superlink_database": str(source.database),
        "superlink_seen": source.database.is_file(),
        "sites": listed,
    }


def _site_row(
    name: str, key_fingerprint: str | None, registered: bool, node: FlowerNode | None, now: float, app: dict | None
) -> dict[str, Any]:
    heartbeat = node.last_heartbeat() if node else None
    return {
        "name": name,
        "registered": registered,
        "key_fingerprint": key_fingerprint,
        "node_id": str(node.node_id) if node else None,  # a 64-bit id: JavaScript numbers would round it
        "online": bool(node and node.online(now)),
        "flower_status": node.status if node else "never connected",
        "last_seen": _iso(heartbeat),
        "last_seen_s_ago": None if heartbeat is None else max(0.0, now - heartbeat),
        "heartbeat_interval_s": node.heartbeat_interval if node else None,
        "approved_app": app["digest"] if app else UNKNOWN,
        "approved_app_evidence": (
            f"ran it in run {app['run']} (Flower run {app['flower_run']})"
            if app
            else "the site has not contributed to a run the SuperLink still holds"
        ),
        "app_version": app["version"] if app else UNKNOWN,
        "supernode_version": UNKNOWN,  # SuperNodes do not report their Flower or Python version
    }


def runs(source: DashboardSource, now: float) -> dict[str, Any]:
    """The run history, newest first: status, state line, rounds, the last global Dice."""
    history: list[dict[str, Any]] = []
    for run_dir in reversed(source.run_dirs()):
        try:
            summary = run_summary(run_dir, now)
            record = RunRecord(run_dir).read()
            rows = RunRecord(run_dir).rounds()
        except InsiteError as error:
            history.append({"name": run_dir.name, "folder": str(run_dir), "error": str(error)})
            continue
        history.append(
            {
                **{key: summary[key] for key in ("name", "folder", "status", "state")},
                "run_name": record.get("name"),
                "created": record.get("created"),
                "rounds_done": record.get("rounds_done", 0),
                "rounds_planned": record.get("rounds_planned"),
                "sites": record.get("sites", []),
                "final_global_dice": rows[-1]["global_dice"] if rows else None,
                # Federated evaluations and statistics of this run, once the coordinator records them.
                "evaluations": record.get("evaluations", []),
            }
        )
    return {"runs": history}


def run(source: DashboardSource, name: str, now: float) -> dict[str, Any] | None:
    """One run in full: its record, what the coordinator does now, every closed round, its Flower runs."""
    run_dir = next((path for path in source.run_dirs() if path.name == name), None)
    if run_dir is None:
        return None
    record = RunRecord(run_dir)
    raw = record.read()
    live = record.state()
    flower = read_runs(source.database, [int(i) for i in raw.get("flower_runs", [])])
    return {
        "name": run_dir.name,
        "record": raw,
        "state": describe_run(raw, live, now),
        "now": _now(raw, live, now),
        "rounds": [_round_row(row) for row in record.rounds()],
        "flower_runs": [_flower_run(int(run_id), flower.get(int(run_id))) for run_id in raw.get("flower_runs", [])],
    }


def statistics(source: DashboardSource) -> dict[str, Any]:
    """The latest data statistics ('insite coord stats'): the sites side by side, and each intensity histogram."""
    for run_dir, record in reversed(_records(source)):
        found = record.get("statistics")
        if found is None:
            continue
        return {
            "run": run_dir.name,
            "collected": found["collected"],
            "min_count": found["settings"]["min_count"],
            "failures": found["failures"],
            "rows": side_by_side(found),
            "intensity": {site: figures["intensity"] for site, figures in sorted(found["sites"].items())},
        }
    return {"run": None}


def latest_run_name(source: DashboardSource) -> str | None:
    found = source.run_dirs()
    return found[-1].name if found else None


def _now(record: dict[str, Any], live: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """The run's phase in fields: the same facts :func:`describe_run` puts in one line."""
    status = record.get("status")
    if status in ("completed", "failed", "paused") or not live:
        return {
            "phase": status or "created",
            "reason": record.get("failure") if status == "failed" else record.get("paused"),
        }
    return {
        "phase": live.get("phase"),
        "round": live.get("round"),
        "stage": live.get("stage"),
        "attempt": live.get("attempt"),
        "detail": live.get("detail"),
        "since": _iso(live.get("since")),
        "last_report_s_ago": now - float(live.get("updated", now)),
        "stale": now - float(live.get("updated", now)) > SILENT_S,
    }


def _round_row(row: dict[str, Any]) -> dict[str, Any]:
    """A closed round as recorded, plus the longest site's training time beside the round's."""
    sites = row.get("sites", {})
    training = [m["train_seconds"] for m in sites.values() if "train_seconds" in m]
    return {
        "round": row["round"],
        "global_dice": row.get("global_dice"),
        "site_dice": {name: m.get("dice") for name, m in sites.items()},
        "sites": sites,
        "failures": row.get("failures", {}),
        "dropped": row.get("dropped", {}),
        "attempts": row.get("attempts", 1),
        "earlier_attempts": row.get("earlier_attempts", []),
        "sites_online": row.get("sites_online", []),
        "round_s": row.get("wall_s"),
        "longest_training_s": max(training) if training else None,
        "train_exchange_s": row.get("train_exchange_s"),
        "closed_at": _iso(row.get("closed_at")),
    }


def _flower_run(run_id: int, run: FlowerRun | None) -> dict[str, Any]:
    """A Flower run of this run: the app digest shipped and the bytes the SuperLink counted on the wire.

    Its id is a string: a 64-bit id as a JSON number is rounded by JavaScript.
    """
    if run is None:
        return {"flower_run": str(run_id), "app_digest": UNKNOWN, "bytes_to_sites": None, "bytes_from_sites": None}
    return {
        "flower_run": str(run_id),
        "app_digest": run.fab_hash,
        "app_version": run.fab_version,
        "bytes_to_sites": run.bytes_sent,
        "bytes_from_sites": run.bytes_received,
    }


def publication(source: DashboardSource) -> dict[str, Any]:
    """Each manifest: every asset's decision, and which sites' approvals of its exact bytes hold."""
    return {"manifests": [_manifest(source, path) for path in source.manifests if path.is_file()]}


def _manifest(source: DashboardSource, path: Path) -> dict[str, Any]:
    """A manifest, its approvals and its run's contributors; what cannot be read is named, not hidden."""
    try:
        return _manifest_view(source, path)
    except InsiteError as error:
        return {"path": str(path), "error": str(error)}


def _manifest_view(source: DashboardSource, path: Path) -> dict[str, Any]:
    loaded = load_manifest(path)
    manifest = loaded.manifest
    digest = manifest_digest(loaded.raw)
    approvals = _approvals_beside(path)
    keys_dir = source.pki.root / "sites"
    check = check_approvals(approvals, digest, load_public_keys(keys_dir) if keys_dir.is_dir() else {})
    contributors = next(
        (
            record.get("sites", [])
            for _, record in _records(source)
            if record.get("name") == manifest.run.name and record.get("settings_digest") == manifest.run.settings_digest
        ),
        None,
    )
    return {
        "path": str(path),
        "sha256": digest,
        "project": manifest.project.title,
        "run": manifest.run.model_dump(mode="json"),
        "assets": [
            {
                "kind": asset.kind,
                "decision": decision.outcome.title,
                "licence": asset.licence,
                "access": asset.access,
                "embargo": asset.embargo.isoformat() if asset.embargo else None,
                "files": [file.path for file in asset.files],
            }
            for asset, decision in zip(manifest.assets, decisions(manifest), strict=True)
        ],
        "approved_by": list(check.valid),
        "rejected": check.rejected,
        "contributors": contributors,
        "awaiting": None if contributors is None else sorted(set(contributors) - set(check.valid)),
    }


def _approvals_beside(manifest: Path) -> list[ManifestApproval]:
    """The collected approval set and loose approval files next to a manifest (as ``insite manifest`` writes them)."""
    found: dict[str, ManifestApproval] = {}
    collected = default_collected_path(manifest)
    if collected.is_file():
        found.update({a.site: a for a in load_approval_set(collected).approvals})
    for path in sorted((manifest.parent / "approvals").glob("*.json")) + sorted(
        manifest.parent.glob(f"{manifest.stem}.*.approval.json")
    ):
        approval = load_approval(path)
        found.setdefault(approval.site, approval)
    return list(found.values())
