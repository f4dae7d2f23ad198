"""fo scheduler (weighted failover). Mirrors ip_vs_fo_schedule(); does not touch
counters (the engine binds) and keeps no state.

Returns the non-OVERLOAD server with the highest weight: strict > starting from
0, so weight 0 never wins and ties go to the earlier server. Connection counts
are ignored.
"""

from __future__ import annotations

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow
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
