"""A run's state as the coordinator last reported it: one line for people, one summary for scripts.

Shared by ``insite coord status``, the run reports at the terminal and the coordinator's dashboard,
so that all three say the same thing about the same run folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common.run_record import RunRecord

#: After this long without a heartbeat in ``state.json`` the coordinator's last word is stale.
SILENT_S = 20.0


def describe_run(record: dict, state: dict | None, now: float) -> str:
    """The run's state in one line, as the coordinator last reported it, never guessed."""
    status = record.get("status")
    done = f"{record.get('rounds_done', 0)} of {record.get('rounds_planned', '?')} rounds done"
    if record.get("settings", {}).get("task") == "stats":  # a statistics run has no rounds (insite coord stats)
        done = f"data statistics of {len(record.get('sites', []))} site(s)"
    if status in ("completed", "failed", "paused"):
        reason = record.get("failure") if status == "failed" else record.get("paused")
        return f"{status} ({done})" + (f": {reason}" if reason else "")
    if not state:
        return f"{status or 'created'} ({done}); the coordinator has not reported yet"
    since = time.strftime("%H:%M:%S", time.localtime(float(state.get("since", now))))
    silent = now - float(state.get("updated", now))
    if silent > SILENT_S:
        return f"{done}; the coordinator last reported {silent:.0f} s ago ({state.get('phase')})"
    match state.get("phase"):
        case "round":
            stage = f" at {state['stage']}" if state.get("stage") else ""
            attempt = f", attempt {state['attempt']}" if state.get("attempt", 1) > 1 else ""
            return f"running round {state.get('round')}{stage} since {since}{attempt} ({done})"
        case "waiting":
            return f"{state.get('detail')} (since {since}; {done})"
        case phase:
            return f"{phase} since {since} ({done})"


def run_summary(run_dir: Path, now: float) -> dict[str, Any]:
    """One run folder in brief: its status, its state line and the coordinator's last word."""
    record = RunRecord(run_dir)
    raw = record.read()
    live = record.state()
    return {
        "name": run_dir.name,
        "folder": str(run_dir),
        "status": raw.get("status"),
        "state": describe_run(raw, live, now),
        "live": live,
    }
