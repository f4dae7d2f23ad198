"""ovf scheduler (weighted overflow). Mirrors ip_vs_ovf_schedule(); does not
touch counters (the engine binds) and keeps no state.

Skips servers that are OVERLOAD-flagged, have weight 0, or have
active > weight; of the rest returns the highest weight (the first on ties).
Because the test is active > weight, a server takes weight + 1 active
connections before traffic overflows. Only active connections count, so the
kernel itself warns it is unsuited to UDP.

Batch form: the order of servers never changes within a batch, so the best one
takes flows until its weight + 1 - active TCP binds are used up or u_threshold
sets OVERLOAD, then the next takes over; a prefix count of TCP flows finds each
hand-over point.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.leastconn import NO_CAP, binds_left
from userlb.services import DEST_F_OVERLOAD, IPPROTO_TCP, DestTable


@register
class WeightedOverflow(BaseScheduler):
    name = "ovf"

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        over = (dests.flags & DEST_F_OVERLOAD).tolist()
        active = dests.activeconns.tolist()
        best, hw = NO_DEST, 0
        for row, w in enumerate(dests.weight.tolist()):
            if over[row] or active[row] > w or w == 0:
                continue
            if best == NO_DEST or w > hw:
                best, hw = row, w
        return best

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        k = len(flows)
        picks = np.full(k, NO_DEST, np.int32)
        weight, active = dests.weight, dests.activeconns
        ok = (weight > 0) & (active <= weight) & ((dests.flags & DEST_F_OVERLOAD) == 0)
        rows = ok.nonzero()[0]
        if not len(rows) or not k:
            return picks
        rows = rows[np.argsort(-weight[rows], kind="stable")]    # highest weight, scan order
        cap = binds_left(dests, rows)
        caps = [NO_CAP] * len(rows) if cap is None else cap.tolist()
        need = (weight[rows] - active[rows] + 1).tolist()         # TCP binds until active > w
        tcp_before = [0, *np.cumsum(flows.proto == IPPROTO_TCP).tolist()]
        start = 0
        for row, left, tcp_left in zip(rows.tolist(), caps, need):
            end = min(k, start + left, bisect_left(tcp_before, tcp_before[start] + tcp_left))
            picks[start:end] = row
            start = end
            if start == k:
                break
        return picks
