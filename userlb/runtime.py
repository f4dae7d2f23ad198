"""A virtual service at run time: its config, its DestTable and its scheduler.

build_runtimes() builds each service the way ipvsadm, keepalived and lvs.cf
do: the service is created empty with its scheduler bound, then the real
servers are added one at a time in configuration order (each going to the
head of the scan order, each followed by the scheduler's dests_changed hook).
That matters for wrr, whose first picks depend on the build order (§2.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from userlb import sched
from userlb.sched import BaseScheduler
from userlb.services import DestTable, VirtualService, ip_to_int


@dataclass
class ServiceRuntime:
    config: VirtualService
    dests: DestTable
    scheduler: BaseScheduler

    def find(self, address: str, port: int) -> int:
        row = self.dests.find(ip_to_int(address), port)
        if row < 0:
            c = self.config
            raise KeyError(f"no real server {address}:{port} in {c.protocol} {c.vip}:{c.port}")
        return row


def build_runtime(config: VirtualService) -> ServiceRuntime:
    scheduler = sched.create(config.scheduler, flags=config.sched_flags)
    dests = DestTable()
    scheduler.dests_changed(dests)
    for rs in config.reals:
        dests.add(ip_to_int(rs.address), rs.port, rs.weight, rs.u_threshold, rs.l_threshold)
        scheduler.dests_changed(dests)
    return ServiceRuntime(config, dests, scheduler)


def build_runtimes(services) -> list[ServiceRuntime]:
    return [build_runtime(s) for s in services]
