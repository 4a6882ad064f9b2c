"""A site's list of approved app digests and its log of refused apps, both in the site's cache folder.

The list is the site administrator's decision (``insite site approve-app``, written by
:mod:`deploy.site.app_approval`); the ClientApp gate
(:mod:`deploy.site.clientapp_gate`) reads it before every ClientApp process imports any shipped code.
This module imports only the standard library on purpose: the gate runs inside the process that
later imports the shipped app, and the app's own packages (``common``, ``client``, ``server``)
must come from the FAB, not from an earlier import of the site's installed copy.

Files, in ``<cache-path>`` of the SuperNode's ``--node-config``:

* ``approved-apps.json``: ``{"apps": [{"digest", "approved_at", "note"}, ...]}``; no file means
  nothing is approved yet, so every app is refused.
* ``app-refusals.jsonl``: one JSON object per refused ClientApp process (time, site, run, digest,
  reason), appended.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

APPROVALS_FILE = "approved-apps.json"
REFUSALS_FILE = "app-refusals.jsonl"
DIGEST = re.compile(r"[0-9a-f]{64}")


class ApprovalListError(ValueError):
    """The approval file exists but is not a readable approval list."""


@dataclass(frozen=True)
class AppApproval:
    """One approved app: the SHA-256 of its FAB, when the administrator approved it, and why."""

    digest: str
    approved_at: str
    note: str = ""


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_approvals(cache: Path) -> list[AppApproval] | None:
    """The site's approvals, or None when the site has no approval file yet."""
    path = cache / APPROVALS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        approvals = [AppApproval(**entry) for entry in raw["apps"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ApprovalListError(f"{path}: not a readable approval list ({error})") from None
    malformed = [a.digest for a in approvals if not DIGEST.fullmatch(a.digest)]
    if malformed:
        raise ApprovalListError(f"{path}: malformed digest(s) {malformed}")
    return approvals


def log_refusal(cache: Path, **entry: object) -> Path:
    """Append one refusal (with the time) to the site's refusal log; returns the log's path."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / REFUSALS_FILE
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"time": utc_now(), **entry}) + "\n")
    return path
