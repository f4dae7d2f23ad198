"""nq scheduler. Mirrors ip_vs_nq_schedule(); does not touch counters (the
engine binds) and keeps no state.

Skips OVERLOAD-flagged and weight-0 servers. The first server with no active
connection is returned at once, whatever its weight; otherwise the minimum
(active + 1) / weight as sed (unsigned int cross-multiplication, strict >,
earlier server on ties). For UDP every server is idle: the first eligible wins.
"""

from __future__ import annotations

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.common import u32
from userlb.sched.leastconn import NQ, merge_batch
from userlb.services import DEST_F_OVERLOAD, DestTable


@register
class NeverQueue(BaseScheduler):
    name = "nq"

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        weight = dests.weight.tolist()
        over = (dests.flags & DEST_F_OVERLOAD).tolist()
        active = dests.activeconns.tolist()
        least, loh = NO_DEST, 0
        for row, w in enumerate(weight):
            if over[row] or w == 0:
                continue
            if active[row] == 0:
                return row                          # idle server: return it directly
            doh = u32(active[row] + 1)              # as ip_vs_nq_dest_overhead
            # as ip_vs_nq: loh * w(dest) > doh * w(least), unsigned int products
            if least == NO_DEST or u32(loh * w) > u32(doh * weight[least]):
                least, loh = row, doh
        return least

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        picks = merge_batch(NQ, dests, flows)      # exact merge (leastconn.py)
        return super().schedule_batch(dests, flows, now) if picks is None else picks
