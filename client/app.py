"""The site's Flower ClientApp: records in, records out; the work is in :mod:`client.local_round`.

A site failure the administrator can fix (missing data, unreadable volume, bad node config) is
returned as a Flower error reply whose reason names the site and the file, so the coordinator can
say which site failed and why.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.local_round import SiteRound
from client.site import SiteContext
from common.config import from_run_config
from common.errors import InsiteError

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
log = logging.getLogger(__name__)

SITE_ERROR = 100  # Flower reserves small codes; ours is any site-side InsiteError
app = ClientApp()


def _answer(msg: Message, context: Context,
            work: Callable[[SiteRound, dict], RecordDict]) -> Message:
    site_name = str(context.node_config.get("site-name", "unknown site"))
    try:
        site = SiteContext.from_node_config(context.node_config)
        job = SiteRound.prepare(site, from_run_config(context.run_config))
        weights = msg.content["arrays"].to_torch_state_dict()
        content = work(job, weights)
    except InsiteError as error:
        log.error("%s", error)
        return Message(Error(code=SITE_ERROR, reason=f"site {site_name}: {error}"), reply_to=msg)
    content["site"] = ConfigRecord({"name": site_name})
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    round_number = int(msg.content["config"]["server-round"])

    def work(job: SiteRound, weights: dict) -> RecordDict:
        new_weights, metrics = job.train(weights, round_number, msg.metadata.run_id)
        return RecordDict({"arrays": ArrayRecord(new_weights), "metrics": MetricRecord(metrics)})

    return _answer(msg, context, work)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    def work(job: SiteRound, weights: dict) -> RecordDict:
        return RecordDict({"metrics": MetricRecord(job.evaluate(weights))})

    return _answer(msg, context, work)
