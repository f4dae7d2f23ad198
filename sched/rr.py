"""rr scheduler. Mirrors ip_vs_rr_schedule() and ip_vs_rr_del_dest(); does not
touch counters (the engine binds).

The cursor is the last picked server (by DestTable uid), initially the list
head. A pick scans the servers after the cursor to the end, then from the first
one up to and including the cursor; the first with weight > 0 and no OVERLOAD
flag wins. From the head only one pass is made. Weights are yes/no only.
Deleting the server under the cursor moves the cursor to its predecessor; adding
one never moves it (new servers sit at the head, reached after the wrap).
"""

from __future__ import annotations

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.common import binds_exact, eligible
from userlb.services import DestTable

HEAD = None


@register
class RoundRobin(BaseScheduler):
    name = "rr"

    def __init__(self, flags: tuple[str, ...] = (), **params) -> None:
        super().__init__(flags, **params)
        self.cursor: int | None = HEAD    # uid of the last pick, None = list head
        self._order: list[int] = []       # scan order (uids) at the last dests_changed

    def dests_changed(self, dests: DestTable) -> None:
        uids = dests.uid.tolist()
        if self.cursor is not HEAD and self.cursor not in uids:
            # as ip_vs_rr_del_dest: the cursor steps back to the deleted entry's predecessor
            self.cursor = _surviving_predecessor(self._order, self.cursor, set(uids))
        self._order = uids

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        rows = np.flatnonzero(eligible(dests))
        if not len(rows):
            return NO_DEST                  # "no destination available"; cursor kept
        row = int(rows[self._first_index(dests, rows)])
        self.cursor = int(dests.uid[row])
        return row

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        n = len(flows)
        rows = np.flatnonzero(eligible(dests))
        if not len(rows) or not n:
            return np.full(n, NO_DEST, np.int32)
        start = self._first_index(dests, rows)
        picks = rows[(start + np.arange(n)) % len(rows)]
        if not binds_exact(dests, picks):
            return super().schedule_batch(dests, flows, now)
        self.cursor = int(dests.uid[picks[-1]])
        return picks.astype(np.int32)

    def _first_index(self, dests: DestTable, rows: np.ndarray) -> int:
        """Index into `rows` (the eligible rows) of the next pick."""
        at = self._cursor_row(dests)
        # first eligible row after the cursor, else wrap to the first one (which is
        # at or before the cursor: the second pass stops at the cursor inclusive)
        k = int(np.searchsorted(rows, at, side="right"))
        return k if k < len(rows) else 0

    def _cursor_row(self, dests: DestTable) -> int:
        """Row of the cursor, -1 for the head; repairs a cursor whose server left."""
        if self.cursor is HEAD:
            return -1
        hits = np.flatnonzero(dests.uid == self.cursor)
        if len(hits):
            return int(hits[0])
        self.dests_changed(dests)           # the engine removed it without telling us
        return self._cursor_row(dests)


def _surviving_predecessor(order: list[int], uid: int, alive: set[int]) -> int | None:
    """Nearest earlier uid in `order` that is still present, else the head."""
    if uid not in order:
        return HEAD
    for prev in reversed(order[:order.index(uid)]):
        if prev in alive:
            return prev
    return HEAD
