"""wlc scheduler (ipvsadm's default). Mirrors ip_vs_wlc_schedule(); does not
touch counters (the engine binds) and keeps no state.

Picks the minimum overhead/weight, overhead = 256*active + inactive, compared by
cross-multiplication. The first non-OVERLOAD server with weight > 0 starts as
the candidate; later non-OVERLOAD servers replace it only when strictly less
loaded, so ties go to the earlier server in scan order and weight 0 never wins.
"""

from __future__ import annotations

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.common import wlc_pick
from userlb.sched.leastconn import WLC, merge_batch
from userlb.services import DestTable


@register
class WeightedLeastConnection(BaseScheduler):
    name = "wlc"

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        row = wlc_pick(dests)
        return row if row >= 0 else NO_DEST

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        picks = merge_batch(WLC, dests, flows)      # exact merge (leastconn.py)
        return super().schedule_batch(dests, flows, now) if picks is None else picks
