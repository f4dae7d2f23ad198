"""dh scheduler (destination hashing). Mirrors ip_vs_dh_schedule() and
ip_vs_dh_reassign(); does not touch counters (the engine binds).

Table: 256 buckets (IP_VS_DH_TAB_BITS 8), bucket i → the (i mod n)-th server
in scan order, rebuilt on every add/del (weights play no part). Key:
hash_32(daddr, 8) of the packet's destination address, so on a plain VIP
service all traffic goes to one server. The bucket's server is returned if it
is AVAILABLE, has weight > 0 and no OVERLOAD flag; otherwise NO_DEST — dh has
no fallback.
"""

from __future__ import annotations

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.common import UidRows, available, binds_exact
from userlb.sched.hashing import addr_hash, hash_32_u32
from userlb.services import DestTable

TAB_BITS = 8                        # CONFIG_IP_VS_DH_TAB_BITS
TAB_SIZE = 1 << TAB_BITS


@register
class DestinationHashing(BaseScheduler):
    name = "dh"

    def __init__(self, flags: tuple[str, ...] = (), **params) -> None:
        super().__init__(flags, **params)
        self.table = UidRows(np.full(TAB_SIZE, -1, np.int64))

    def dests_changed(self, dests: DestTable) -> None:
        # as ip_vs_dh_reassign: walk the list cyclically, one bucket per server
        n = len(dests)
        uids = dests.uid[np.arange(TAB_SIZE) % n] if n else np.full(TAB_SIZE, -1)
        self.table = UidRows(uids)

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        row = int(self.table.rows(dests)[addr_hash(flow.daddr, TAB_BITS)])
        if row < 0 or not available(dests)[row]:
            return NO_DEST
        return row

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        ihash = hash_32_u32(flows.daddr.astype(np.uint32, copy=False), TAB_BITS)
        picks = self.table.usable(dests, available)[ihash]    # bucket → available row or -1
        if not binds_exact(dests, picks):
            return super().schedule_batch(dests, flows, now)
        return picks
