"""Connection sync between routers, engine side: export changes, import entries.

The active router exports connections created or changed since the last export
(ip_vs_sync_conn is called on state changes too); the backup imports them into
its own table, bound to its own copy of the real servers, so that after a
takeover established connections continue (spec ha-health-config §5). The wire
format is ha/sync.py's; this module only moves rows between an Engine and plain
tuples, and `to_sync_conns`/`from_sync_conns` map those tuples to and from
ha/sync.py's IPVS sync v1 records (state numbers are the kernel's already; UDP's
one state is 0 on the wire; persistence templates are not sent, a backup makes
its own). Pure: `now` is passed in.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ipaddress import IPv4Address

from userlb import tcpstate
from userlb.ha import sync as wire
from userlb.conntable import CONN_F_TEMPLATE


class SyncEntry(NamedTuple):
    proto: int
    caddr: int
    cport: int
    vaddr: int
    vport: int
    daddr: int
    dport: int
    state: int
    timeout_s: float


def export_changes(engine, now: float, everything: bool = False) -> list[SyncEntry]:
    """Entries created or changed since the last call (all live ones with everything=True)."""
    t = engine.table
    ids = t.live_ids()
    ids = ids[(t.flags[ids] & CONN_F_TEMPLATE) == 0]   # templates are not synced (yet)
    if not everything:
        ids = ids[engine.dirty[ids]]
    engine.dirty[ids] = False
    return [SyncEntry(int(t.proto[i]), int(t.caddr[i]), int(t.cport[i]), int(t.vaddr[i]),
                      int(t.vport[i]), int(t.daddr[i]), int(t.dport[i]), int(t.state[i]),
                      max(0.0, float(t.expires[i]) - now)) for i in ids.tolist()]


def import_entries(engine, entries: list[SyncEntry], now: float) -> int:
    """Insert or refresh entries; returns how many were applied (unknown services/servers skip)."""
    applied = 0
    t = engine.table
    for e in entries:
        svc = engine.index.lookup(np.array([e.proto], np.uint8), np.array([e.vaddr], np.uint32),
                                  np.array([e.vport], np.uint16))[0]
        if svc < 0:
            continue
        dests = engine.services[svc].dests
        row = dests.find(e.daddr, e.dport)
        if row < 0:
            continue
        key = [np.array([v], dt) for v, dt in ((e.proto, np.uint8), (e.caddr, np.uint32),
                                                 (e.cport, np.uint16), (e.vaddr, np.uint32),
                                                 (e.vport, np.uint16))]
        cid = int(t.lookup_in(*key)[0])
        if cid < 0:
            engine.make_room(1, now)
            cid = int(t.insert(*key, np.array([e.daddr], np.uint32), np.array([e.dport], np.uint16),
                               np.array([svc], np.int32), np.array([row], np.int32),
                               np.array([tcpstate.NONE], np.uint8),
                               np.array([engine.acct.INACTIVE], np.uint16),
                               np.array([now + e.timeout_s]))[0])
            if cid < 0:
                continue
            engine.acct.bind(np.array([cid]))
        ids = np.array([cid])
        state = np.array([e.state], np.uint8)
        t.state[ids] = state
        t.expires[ids] = now + e.timeout_s
        engine.acct.transition(ids, state, np.zeros(1, bool), np.zeros(1, np.int64), count=False)
        applied += 1
    return applied


_TEMPLATE_PROTO_BIT = 0x80        # persist.TEMPLATE_PROTO_BIT: templates stay local


def to_sync_conns(entries: list[SyncEntry]) -> list[wire.SyncConn]:
    """IPVS sync v1 records for `entries` (NAT forwarding; INACTIVE unless ESTABLISHED/UDP)."""
    conns = []
    for e in entries:
        if e.proto & _TEMPLATE_PROTO_BIT:
            continue
        udp = e.state == tcpstate.UDP
        flags = wire.IP_VS_CONN_F_MASQ
        if not udp and e.state != tcpstate.ESTABLISHED:
            flags |= wire.IP_VS_CONN_F_INACTIVE       # as ip_vs_sync_conn: not established
        conns.append(wire.SyncConn(e.proto, IPv4Address(e.caddr), e.cport, IPv4Address(e.vaddr),
                                   e.vport, IPv4Address(e.daddr), e.dport,
                                   0 if udp else e.state, flags, int(-(-e.timeout_s // 1))))
    return conns


def from_sync_conns(conns) -> list[SyncEntry]:
    """Entries to import from decoded records; IPv6, templates, one-packet and unknown
    protocols are skipped (userlb's table is IPv4 TCP/UDP only)."""
    skip = wire.IP_VS_CONN_F_TEMPLATE | wire.IP_VS_CONN_F_ONE_PACKET
    entries = []
    for c in conns:
        if c.caddr.version != 4 or c.flags & skip or c.proto not in (6, 17):
            continue
        if c.proto == 17:
            state = tcpstate.UDP
        elif c.state < tcpstate.N_TCP_STATES:
            state = c.state
        else:
            continue
        entries.append(SyncEntry(c.proto, int(c.caddr), c.cport, int(c.vaddr), c.vport,
                                 int(c.daddr), c.dport, state, float(c.timeout_s)))
    return entries
