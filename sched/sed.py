"""sed scheduler. Mirrors ip_vs_sed_schedule(); does not touch counters (the
engine binds) and keeps no state.

As wlc, but the overhead is the expected delay active + 1 (inactive connections
are ignored): minimum (active + 1) / weight by cross-multiplication in C
unsigned int (wrapping mod 2**32, as the kernel's unsigned loh * weight does),
strict >, so ties go to the earlier server. For UDP every server looks idle.
"""

from __future__ import annotations

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.common import u32
from userlb.sched.leastconn import SED, merge_batch
from userlb.services import DEST_F_OVERLOAD, DestTable


@register
class ShortestExpectedDelay(BaseScheduler):
    name = "sed"

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        weight = dests.weight.tolist()
        over = (dests.flags & DEST_F_OVERLOAD).tolist()
        active = dests.activeconns.tolist()
        least, loh = NO_DEST, 0
        for row, w in enumerate(weight):
            if over[row]:
                continue
            doh = u32(active[row] + 1)          # as ip_vs_sed_dest_overhead
            if least == NO_DEST:
                if w > 0:
                    least, loh = row, doh
                continue
            # as ip_vs_sed: loh * w(dest) > doh * w(least), unsigned int products
            if u32(loh * w) > u32(doh * weight[least]):
                least, loh = row, doh
        return least

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        picks = merge_batch(SED, dests, flows)      # exact merge (leastconn.py)
        return super().schedule_batch(dests, flows, now) if picks is None else picks
