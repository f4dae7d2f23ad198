"""sh scheduler (source hashing). Mirrors ip_vs_sh_schedule(), ip_vs_sh_get(),
ip_vs_sh_get_fallback() and ip_vs_sh_reassign(); does not touch counters (the
engine binds).

Table: 256 buckets, rebuilt on every add/del/edit. Walking the servers
cyclically, each occupies `weight` consecutive buckets — a weight-0 server
still takes one (the advance test is ++count >= weight). Key:
(offset + hash_32(port + saddr, 8)) & 255, port = the client's source port only
with flag sh-port (TCP/UDP/SCTP), else 0; port and address are *added*.
Unavailable = weight <= 0 or OVERLOAD. Without sh-fallback an unavailable
bucket gives NO_DEST. With it, an empty bucket gives NO_DEST and an unavailable
one probes buckets (2*ihash + k) & 255, k = 0..255 (offset = (k + ihash) % 256
added to the hash again), first available wins, an empty bucket stops.
"""

from __future__ import annotations

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.common import (HAS_PORTS, PORT_PROTOCOLS, SVC_F_SCHED1, SVC_F_SCHED2,
                                 UidRows, binds_exact, eligible, sched_flag_bits)
from userlb.sched.hashing import hash_32_u32, sh_hash
from userlb.services import DestTable

TAB_BITS = 8                        # CONFIG_IP_VS_SH_TAB_BITS
TAB_SIZE = 1 << TAB_BITS
TAB_MASK = TAB_SIZE - 1


@register
class SourceHashing(BaseScheduler):
    name = "sh"

    def __init__(self, flags: tuple[str, ...] = (), **params) -> None:
        super().__init__(flags, **params)
        bits = sched_flag_bits(self.flags, self.name)
        self.fallback = bool(bits & SVC_F_SCHED1)       # sh-fallback
        self.use_port = bool(bits & SVC_F_SCHED2)       # sh-port
        self.table = UidRows(np.full(TAB_SIZE, -1, np.int64))

    def dests_changed(self, dests: DestTable) -> None:
        uids, weight = dests.uid.tolist(), dests.weight.tolist()
        table = np.full(TAB_SIZE, -1, np.int64)
        p = count = 0
        for i in range(TAB_SIZE if uids else 0):
            table[i] = uids[p]
            count += 1
            if count >= weight[p]:      # as ip_vs_sh_reassign: don't move on until weight filled
                p, count = (p + 1) % len(uids), 0
        self.table = UidRows(table)

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        port = flow.sport if self.use_port and flow.proto in PORT_PROTOCOLS else 0
        rows = self.table.rows(dests)
        ok = eligible(dests)
        ihash = sh_hash(flow.saddr, port)
        row = int(rows[ihash])
        if row >= 0 and ok[row]:
            return row
        if not self.fallback or row < 0:
            return NO_DEST
        for offset in range(TAB_SIZE):
            roffset = (offset + ihash) % TAB_SIZE
            row = int(rows[sh_hash(flow.saddr, port, roffset)])
            if row < 0:
                break
            if ok[row]:
                return row
        return NO_DEST

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        keys = flows.saddr.astype(np.uint32, copy=False)
        if self.use_port:                   # port + addr, a u32 sum that wraps
            keys = keys + np.where(HAS_PORTS[flows.proto], flows.sport, 0).astype(np.uint32)
        ihash = hash_32_u32(keys, TAB_BITS)
        picks = self.table.usable(dests)[ihash]     # one gather: bucket → usable row or -1
        if self.fallback:
            rows = self.table.rows(dests)
            probe = (picks < 0) & (rows[ihash] >= 0)
            if probe.any():
                ok = np.append(eligible(dests), False)
                picks[probe] = _probe_results(rows, ok)[(2 * ihash[probe]) & TAB_MASK]
        if not binds_exact(dests, picks):
            return super().schedule_batch(dests, flows, now)
        return picks


def _probe_results(rows: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """For each start bucket p: the row the probe p, p+1, … (mod 256) ends on.

    The probe stops at the first available bucket (its row) or the first empty
    one (NO_DEST); NO_DEST if neither occurs in 256 buckets.
    """
    good = ok[rows]
    stop = good | (rows < 0)
    seq = (np.arange(TAB_SIZE)[:, None] + np.arange(TAB_SIZE)[None, :]) & TAB_MASK
    hit = stop[seq]
    first = seq[np.arange(TAB_SIZE), hit.argmax(axis=1)]
    return np.where(hit.any(axis=1) & good[first], rows[first], NO_DEST)
