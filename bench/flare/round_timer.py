"""The FLARE server's clock: when each round starts and is aggregated, and what each site reported.

A FLARE component in the server app (named in the job's config, built by FLARE, never imported by
insite). It listens to the FedAvg controller's events and appends one JSON line per event to
``path``, which :mod:`bench.flare.compare` reads once the simulator has exited. Stamps are wall
clock (``time.time``) because stamps taken in the bench's, the server's and the clients'
processes are compared with one another.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils


def stamp(path: Path, event: str, **fields: object) -> None:
    """Append ``event`` with the current time and ``fields`` as one JSON line to ``path`` (odd values as text)."""
    with path.open("a") as out:
        out.write(json.dumps({"event": event, "t": time.time(), **fields}, default=str) + "\n")


class RoundTimer(FLComponent):
    """Stamps ROUND_STARTED, each accepted contribution (with the site's metrics and meta) and AFTER_AGGREGATION."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path  # FLARE writes a component's config from the attributes named like its arguments

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        round_number = fl_ctx.get_prop(AppConstants.CURRENT_ROUND)
        if event_type == AppEventType.ROUND_STARTED:
            stamp(Path(self.path), "round_started", round=round_number)
        elif event_type == AppEventType.AFTER_CONTRIBUTION_ACCEPT:
            result = fl_ctx.get_prop(AppConstants.TRAINING_RESULT)
            if result is not None:
                model = FLModelUtils.from_shareable(result)
                stamp(Path(self.path), "contribution", round=round_number, metrics=model.metrics, meta=model.meta)
        elif event_type == AppEventType.AFTER_AGGREGATION:
            stamp(Path(self.path), "aggregated", round=round_number)
