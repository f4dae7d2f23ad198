"""ovf scheduler (weighted overflow). Mirrors ip_vs_ovf_schedule(); does not
touch counters (the engine binds) and keeps no state.

Skips servers that are OVERLOAD-flagged, have weight 0, or have
active > weight; of the rest returns the highest weight (the first on ties).
Because the test is active > weight, a server takes weight + 1 active
connections before traffic overflows. Only active connections count, so the
kernel itself warns it is unsuited to UDP.
"""

from __future__ import annotations

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow
from userlb.services import DEST_F_OVERLOAD, DestTable


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
