"""lc scheduler. Mirrors ip_vs_lc_schedule(); does not touch counters (the
engine binds) and keeps no state.

Skips OVERLOAD-flagged and weight-0 servers and picks the least overhead,
256*active + inactive (ip_vs_dest_conn_overhead; the source comment's "<<5" is
stale), with a strict < so ties go to the earlier server. Other weights are
ignored.
"""

from __future__ import annotations

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.common import conn_overhead
from userlb.sched.leastconn import LC, merge_batch
from userlb.services import DEST_F_OVERLOAD, DestTable


@register
class LeastConnection(BaseScheduler):
    name = "lc"

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        weight = dests.weight.tolist()
        over = (dests.flags & DEST_F_OVERLOAD).tolist()
        active = dests.activeconns.tolist()
        inact = dests.inactconns.tolist()
        least, loh = NO_DEST, 0
        for row, w in enumerate(weight):
            if over[row] or w == 0:
                continue
            doh = conn_overhead(active[row], inact[row])
            if least == NO_DEST or doh < loh:       # as ip_vs_lc: strict <, first wins ties
                least, loh = row, doh
        return least

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        picks = merge_batch(LC, dests, flows)      # exact merge (leastconn.py)
        return super().schedule_batch(dests, flows, now) if picks is None else picks
