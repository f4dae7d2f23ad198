"""fo scheduler (weighted failover). Mirrors ip_vs_fo_schedule(); does not touch
counters (the engine binds) and keeps no state.

Returns the non-OVERLOAD server with the highest weight: strict > starting from
0, so weight 0 never wins and ties go to the earlier server. Connection counts
are ignored.

Batch form: weights do not move, so the best server takes every flow until its
u_threshold sets OVERLOAD, then the next best does (leastconn.fill_constant).
"""

from __future__ import annotations

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.leastconn import binds_left, fill_constant
from userlb.services import DEST_F_OVERLOAD, DestTable


@register
class WeightedFailover(BaseScheduler):
    name = "fo"

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        over = (dests.flags & DEST_F_OVERLOAD).tolist()
        best, hw = NO_DEST, 0
        for row, w in enumerate(dests.weight.tolist()):
            if not over[row] and w > hw:            # as ip_vs_fo: weight > hw
                best, hw = row, w
        return best

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        picks = np.full(len(flows), NO_DEST, np.int32)
        rows = ((dests.weight > 0) & ((dests.flags & DEST_F_OVERLOAD) == 0)).nonzero()[0]
        if len(rows) and len(flows):
            keys = -dests.weight[rows].astype(np.int64)     # highest weight, then scan order
            local = fill_constant(keys, binds_left(dests, rows), len(flows))
            picks[:len(local)] = rows[local]
        return picks
