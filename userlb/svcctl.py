"""Adding, editing and deleting virtual services at run time.

Mirrors ip_vs_add_service / ip_vs_edit_service / ip_vs_del_service: a new
service gets the next engine index; editing keeps the real servers and their
counters, and a scheduler change builds the new scheduler and binds it to the
existing server list (done_service + init_service: the `-E -s wrr` path of
spec §2.2); deleting unlinks the service and its servers, so the packets of its
remaining connections are dropped as dest_gone until they expire (the kernel's
behaviour for connections whose destination lost AVAILABLE). Deleted services
leave a None at their index so the connection table's service column stays
valid. Pure: runs on the data-path thread.
"""

from __future__ import annotations

import dataclasses

from userlb import sched
from userlb.classify import ServiceIndex
from userlb.runtime import build_runtime
from userlb.services import VirtualService


def _reindex(engine) -> None:
    engine.index = ServiceIndex([rt.config if rt is not None else None
                                 for rt in engine.services])


def find_service(engine, key: tuple[int, int, int]) -> int:
    """Engine index of the live service with VirtualService.key `key`, or -1."""
    for i, rt in enumerate(engine.services):
        if rt is not None and rt.config.key == tuple(key):
            return i
    return -1


def add_service(engine, config: VirtualService) -> int:
    if find_service(engine, config.key) >= 0:
        raise ValueError("Service already exists")     # ipvsadm's message for EEXIST
    engine.services.append(build_runtime(config))
    _reindex(engine)
    return len(engine.services) - 1


def edit_service(engine, index: int, config: VirtualService) -> None:
    """New scheduler, flags, persistence or match rules; the real servers stay as they are."""
    rt = engine.services[index]
    if (config.scheduler, config.sched_flags) != (rt.config.scheduler, rt.config.sched_flags):
        rt.scheduler = sched.create(config.scheduler, flags=config.sched_flags)
        rt.scheduler.dests_changed(rt.dests)
    rt.config = dataclasses.replace(config, reals=rt.config.reals)
    _reindex(engine)


def delete_service(engine, index: int) -> None:
    t = engine.table
    ids = t.live_ids()
    ids = ids[t.service[ids] == index]
    engine.acct.unbind(ids)          # the counters go with the servers
    t.dest[ids] = -1
    engine.services[index] = None
    _reindex(engine)
