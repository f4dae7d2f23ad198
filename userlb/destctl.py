"""Changing a service's real servers at run time: add, remove, edit weight.

Mirrors ip_vs_add_dest / ip_vs_del_dest / ip_vs_edit_dest: a new server goes
to the head of the scan order; a removed server is unlinked and its live
connections lose their destination (their packets are dropped as dest_gone,
as the kernel drops packets of a connection whose server lost AVAILABLE); a
weight of 0 quiesces. The connection table stores each connection's row in
its service's DestTable, so a structural change remaps that column. Every
change ends with the scheduler's dests_changed hook. Also applies health
events (quiesce / remove / restore). Pure: called on the data-path thread.
"""

from __future__ import annotations

import numpy as np

from userlb.services import RealServer, int_to_ip, ip_to_int


def _remap(engine, service: int, mapping: np.ndarray) -> None:
    """conn.dest ← mapping[conn.dest] for the live connections of `service`."""
    t = engine.table
    ids = t.live_ids()
    ids = ids[(t.service[ids] == service) & (t.dest[ids] >= 0)]
    t.dest[ids] = mapping[t.dest[ids]]


def add_dest(engine, service: int, rs: RealServer) -> None:
    rt = engine.services[service]
    n = len(rt.dests)
    rt.dests.add(ip_to_int(rs.address), rs.port, rs.weight, rs.u_threshold, rs.l_threshold)
    _remap(engine, service, np.arange(1, n + 1, dtype=np.int32))
    rt.scheduler.dests_changed(rt.dests)


def remove_dest(engine, service: int, address: str, port: int) -> None:
    rt = engine.services[service]
    row = rt.find(address, port)
    mapping = np.arange(len(rt.dests), dtype=np.int32)
    mapping[row] = -1
    mapping[row + 1:] -= 1
    _remap(engine, service, mapping)
    rt.dests.remove(row)
    rt.scheduler.dests_changed(rt.dests)


def service_by_key(engine, key: tuple[int, int, int]) -> int:
    for i, rt in enumerate(engine.services):
        if rt is not None and rt.config.key == tuple(key):
            return i
    raise KeyError(f"no service with key {key}")


def apply_health(engine, service_key, real_key, up: bool, weight: int | None,
                 template: RealServer | None = None) -> str:
    """Apply one health decision: up → (re)add or set weight; down → weight 0 or remove.

    `template` supplies port and thresholds when a removed server comes back.
    Returns what was done, for the log."""
    svc = service_by_key(engine, service_key)
    rt = engine.services[svc]
    addr, port = real_key
    row = rt.dests.find(addr, port)
    address = int_to_ip(addr)
    if up:
        if row < 0:
            base = template or RealServer(address, port)
            add_dest(engine, svc, RealServer(address, port, weight if weight is not None
                                             else base.weight, base.u_threshold, base.l_threshold))
            return "added"
        engine.edit_dest(svc, address, port, int(rt.dests.last_weight[row])
                         if weight is None else weight)
        return "weight restored"
    if row < 0:
        return "already out"
    if weight is None:
        remove_dest(engine, svc, address, port)
        return "removed"
    engine.edit_dest(svc, address, port, weight)
    return "quiesced" if weight == 0 else "weight set"
