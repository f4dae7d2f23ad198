"""EDGE: connects the health-check runner to the data path.

Each HealthChanged event is applied on the data-path thread
(destctl.apply_health: quiesce, remove, restore) between batches, logged, and
remembered so listings can show every real server's health. QuorumChanged is
logged. Decides nothing itself: the verdicts are health.policy's.
"""

from __future__ import annotations

import logging

from userlb import destctl
from userlb.health.policy import HealthChanged, QuorumChanged
from userlb.health.runner import HealthRunner
from userlb.services import int_to_ip, ip_to_int

log = logging.getLogger("userlb.health")


class HealthLink:
    def __init__(self, services, datapath) -> None:
        self.datapath = datapath
        self.state: dict[tuple, dict] = {}
        self.templates = {(s.key, (ip_to_int(rs.address), rs.port)): rs
                          for s in (h.service for h in services) for rs in s.reals}
        self.runner = HealthRunner(list(services), self.on_change)

    async def start(self) -> None:
        await self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()

    async def reload(self, services) -> None:
        """New check settings; unchanged checks keep their counters (HealthRunner.reload)."""
        self.templates = {(s.key, (ip_to_int(rs.address), rs.port)): rs
                          for s in (h.service for h in services) for rs in s.reals}
        await self.runner.reload(list(services))

    def on_change(self, event) -> None:
        if isinstance(event, QuorumChanged):
            log.warning("service %s quorum %s (%s)", event.service_key,
                        "up" if event.up else "lost", event.reason)
            return
        if not isinstance(event, HealthChanged):
            return
        key = (event.service_key, event.real_key)
        self.state[key] = {"up": event.up, "reason": event.reason}
        template = self.templates.get(key)
        fut = self.datapath.call(lambda engine, now: destctl.apply_health(
            engine, event.service_key, event.real_key, event.up, event.weight, template))
        fut.add_done_callback(lambda f: self._done(f, event))

    @staticmethod
    def _done(fut, event) -> None:
        addr, port = event.real_key
        real = f"{int_to_ip(addr)}:{port}"
        if fut.exception() is not None:
            log.error("health change for %s not applied: %s", real, fut.exception())
        else:
            log.info("real server %s %s (%s): %s", real, "up" if event.up else "down",
                     event.reason, fut.result())

    def health_of(self, service_key, real_key) -> str:
        entry = self.state.get((tuple(service_key), tuple(real_key)))
        if entry is None:
            return "unchecked" if (tuple(service_key), tuple(real_key)) not in self.templates \
                else "pending"
        return "up" if entry["up"] else "down"
