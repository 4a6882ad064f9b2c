"""Which sites are online, since when they are not, and a bounded wait for enough of them.

Flower's strategies wait for nodes in ``sample_nodes`` with no limit and no word on whom they
wait for. A round here first calls :meth:`Presence.wait_for_quorum`: it returns the sites online
as soon as ``min_sites`` are, says what it waits for while it waits ("round 6 waits for quorum:
1 of 3 sites online, 2 needed; site-b offline since 14:02:11; ..."), and gives up after ``quorum_wait_s`` with
:class:`QuorumLost`, which pauses the run instead of failing it.

A site that was online when the last round began and is not now is most likely restarting (its
supervisor brings it back within two heartbeats, deploy/site/supernode_launcher.py). Once the
quorum is there, the round waits up to ``rejoin_wait_s`` more for such sites, so that a crashed site
takes part again from the next round, and says so ("round 6 waits up to 30 s for site-b to rejoin").
A site that misses that wait is not waited for again until it has been back for a round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from flwr.serverapp import Grid

from common.errors import FederationError

log = logging.getLogger(__name__)

POLL_S = 1.0


class QuorumLost(FederationError):
    """Too few sites for too long: the run pauses here and can be continued."""


class BelowQuorum(FederationError):
    """A round's exchange ended with fewer than ``min_sites`` good replies: the round is tried again."""


class Presence:
    """Online sites by node id, and when each known site was last seen online (wall clock)."""

    def __init__(
        self,
        grid: Grid,
        min_sites: int,
        wait_s: float,
        known: Iterable[str] = (),
        rejoin_wait_s: float = 0.0,
        on_wait: Callable[[int, str], None] = lambda round_number, message: None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.grid = grid
        self.min_sites = min_sites
        self.wait_s = wait_s
        self.rejoin_wait_s = rejoin_wait_s
        self.on_wait = on_wait
        self.clock = clock
        self.sleep = sleep
        self.last_seen: dict[str, float | None] = dict.fromkeys(known)
        self.at_last_round: set[str] = set()  # the sites online when the last round began

    def online(self) -> dict[int, str]:
        """Node id -> site name of every site online now (Flower's view: heartbeats in time)."""
        nodes = {node.node_id: node.name or f"node {node.node_id}" for node in self.grid.get_nodes()}
        now = self.clock()
        for name in nodes.values():
            self.last_seen[name] = now
        return nodes

    def offline(self, online: Iterable[str]) -> list[str]:
        """Each known site that is not online, with since when (or that it was never seen)."""
        present = set(online)
        described = []
        for name, seen in sorted(self.last_seen.items()):
            if name in present:
                continue
            when = time.strftime("%H:%M:%S", time.localtime(seen)) if seen else None
            described.append(f"{name} offline since {when}" if when else f"{name} not seen in this run")
        return described

    def wait_for_quorum(self, round_number: int, work: str = "") -> dict[int, str]:
        """The online sites, once at least ``min_sites`` are; :class:`QuorumLost` after ``wait_s``.

        ``work`` names what waits, in the messages ("the evaluation of round-0013"); a training
        round by default.
        """
        work = work or f"round {round_number}"
        started = self.clock()
        said = ""
        while True:
            online = self.online()
            if len(online) >= self.min_sites:
                if said:
                    log.info("%s has its quorum: %s", work, ", ".join(sorted(online.values())))
                online = self._wait_for_rejoining(round_number, work, online)
                self.at_last_round = set(online.values())
                return online
            missing = "; ".join(self.offline(online.values())) or "no other site has connected yet"
            waited = self.clock() - started
            if waited >= self.wait_s:
                raise QuorumLost(
                    f"{work} waited {waited:.0f} s for quorum: {len(online)} sites online, "
                    f"{self.min_sites} needed ({missing}); continue the run when they are back"
                )
            known = max(len(self.last_seen), self.min_sites)
            message = (
                f"{work} waits for quorum: {len(online)} of {known} sites online, {self.min_sites} needed; {missing}"
            )
            if message != said:
                log.warning("%s (at most %.0f s more)", message, self.wait_s - waited)
                self.on_wait(round_number, message)
                said = message
            self.sleep(POLL_S)

    def _wait_for_rejoining(self, round_number: int, work: str, online: dict[int, str]) -> dict[int, str]:
        """``online``, or more: up to ``rejoin_wait_s`` for the sites of the last round that are not."""
        started = self.clock()
        said = ""
        while missing := sorted(self.at_last_round - set(online.values())):
            waited = self.clock() - started
            if waited >= self.rejoin_wait_s:
                if said:
                    log.warning("%s goes on without %s after %.0f s", work, ", ".join(missing), waited)
                break
            message = (
                f"{work} waits up to {self.rejoin_wait_s:.0f} s for {', '.join(missing)} to rejoin "
                f"({len(online)} sites online, quorum met); {'; '.join(self.offline(online.values()))}"
            )
            if message != said:
                log.warning(message)
                self.on_wait(round_number, message)
                said = message
            self.sleep(POLL_S)
            online = self.online()
        return online
