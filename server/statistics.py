"""A statistics run: every site reports its data statistics, and the coordinator keeps them side by side.

Selected by ``task = "stats"`` in the run settings (see :func:`server.app.main`), before any
training, so that a site whose scans differ from the others' is seen first. Like a training round,
it waits (bounded) for ``min_sites`` sites to be online (:mod:`server.presence`) and collects the
replies with the same deadlines and attribution (:mod:`server.exchange`): a site that fails or does
not answer is named with its reason, and the others' statistics are kept. What each site sends
is binned counts only (:mod:`common.statistics`); the result goes into ``run.json`` under
``statistics``, where ``insite coord stats`` and the dashboard read it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from common.errors import FederationError
from common.run_record import RunRecord
from common.settings import RunSettings
from common.statistics import QUERY, RECORD, decode
from server.exchange import Deadline, exchange
from server.live_state import LiveState
from server.presence import Presence
from server.rounds import site_of

log = logging.getLogger(__name__)


def collect_statistics(grid: Grid, settings: RunSettings, record: RunRecord, state: LiveState) -> dict[str, Any]:
    """Ask the online sites for their statistics; record and return them (``run.json`` ``statistics``)."""
    presence = Presence(
        grid,
        settings.min_sites,
        settings.faults.quorum_wait_s,
        on_wait=lambda _, message: state.set("waiting", detail=message),
    )
    online = presence.wait_for_quorum(1, "the statistics request")
    state.set("statistics", detail=f"asking {', '.join(sorted(online.values()))} for their data statistics")
    messages = [
        Message(RecordDict({"config": ConfigRecord()}), dst_node_id=node, message_type=QUERY) for node in online
    ]
    deadline = Deadline(settings.round_timeout_s, settings.faults.straggler_grace_s, settings.min_sites)
    outcome = exchange(grid, messages, deadline, "statistics", online)
    sites: dict[str, Any] = {}
    failures = dict(outcome.failures)
    for reply in outcome.replies:
        name = online.get(reply.metadata.src_node_id, site_of(reply))
        values = reply.content.metric_records.get(RECORD)
        if values is None:
            failures[name] = "its reply holds no statistics"
            continue
        # cast: the site's egress guard let only integer counts through; a record types any value
        sites[name] = decode(cast(dict[str, int], dict(values)), settings.stats)
    if not sites:
        reasons = "; ".join(f"{site}: {why}" for site, why in failures.items()) or "no site was asked"
        raise FederationError(f"no site sent its data statistics ({reasons})")
    result = {
        "collected": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings.stats.model_dump(mode="json"),
        "sites": sites,
        "failures": failures,
        "exchange_s": outcome.seconds,
    }
    record.update(statistics=result, sites=sorted(sites))
    log.info("statistics of %d site(s); failed: %s", len(sites), ", ".join(failures) or "none")
    return result
