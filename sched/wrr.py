"""wrr scheduler. Mirrors ip_vs_wrr_schedule() and ip_vs_wrr_dest_changed();
does not touch counters (the engine binds).

State: cl (cursor: last pick by uid, or the list head), cw (current weight),
mw = max weight - (di - 1), di = gcd of the positive weights (1 if none). A pick
scans after cl for the first non-OVERLOAD server with weight >= cw; at the end
of the list cw -= di, wrapping to mw, with the kernel's last-pass/stop rules
deciding failure ("all destinations are overloaded").

Every add/del/edit (dests_changed) resets cl to the head and recomputes di, mw;
cw becomes mw if cw > mw or cw == 0, else (cw // di) * di + 1 when di > 1.
Build order therefore matters (spec §2.2): a fresh scheduler given the full
server list in one dests_changed call behaves like init_service on that list
(`-E -s wrr`, cw = mw); one call per added server reproduces ipvsadm/keepalived
filling an empty service (userlb.runtime does this).

The batch form walks a precomputed period (pass k = 0..K-1 at cw = mw - k*di
lists the eligible rows with weight >= cw), cached per eligibility mask.
"""

from __future__ import annotations

import math
from functools import reduce

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.common import binds_exact, eligible, not_overloaded
from userlb.services import DestTable

HEAD = None
MAX_PERIOD = 1 << 20        # longer periods (huge co-prime weights) use the loop


@register
class WeightedRoundRobin(BaseScheduler):
    name = "wrr"

    def __init__(self, flags: tuple[str, ...] = (), **params) -> None:
        super().__init__(flags, **params)
        self.cl: int | None = HEAD     # uid of the last pick, None = list head
        self.cw = 0                     # init_service on an empty service: cw = mw = 0
        self.mw = 0
        self.di = 1
        self._period: tuple[bytes, np.ndarray | None] | None = None
        self._weights = b""                 # weights at the last dests_changed

    def dests_changed(self, dests: DestTable) -> None:
        # as ip_vs_wrr_dest_changed (add_dest, del_dest and upd_dest alike)
        self.cl = HEAD
        positive = [w for w in dests.weight.tolist() if w > 0]
        self.di = reduce(math.gcd, positive) if positive else 1
        self.mw = max(dests.weight.tolist(), default=0) - (self.di - 1)
        if self.cw > self.mw or self.cw == 0:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1
        self._period = None
        self._weights = dests.weight.tobytes()

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        if self.mw == 0:
            return NO_DEST                  # "no destination available"; cl kept
        ok = not_overloaded(dests).tolist()
        weight = dests.weight.tolist()
        last = self._cl_row(dests)
        row, stop = last, None
        last_pass = restarted = False
        top = max((w for w, good in zip(weight, ok) if good), default=0)
        while True:
            if row < 0 and stop is None:
                self._skip_empty_passes(top)
            for row in range(row + 1, len(weight)):
                if ok[row] and weight[row] >= self.cw:
                    self.cl = int(dests.uid[row])
                    return row
                if row == stop:
                    return self._fail(dests, row)
            row = -1                        # back at the list head
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                # a pass for weight >= 1 over every server already failed
                if last_pass or last < 0:
                    return self._fail(dests, -1)
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last >= 0:
                stop = last                 # now check the servers up to 'last' as well

    def _skip_empty_passes(self, top: int) -> None:
        """Jump over whole passes that cannot pick (cw > every usable weight).

        Same result as scanning them: while cw stays above max(di, top) each such
        pass only does cw -= di (no wrap, last_pass stays false). Saves 65534
        scans when a weight-65535 server is overloaded next to a weight-1 one.
        """
        floor = max(self.di, top)
        if self.cw > floor:
            self.cw -= ((self.cw - floor - 1) // self.di) * self.di

    def _fail(self, dests: DestTable, row: int) -> int:
        self.cl = HEAD if row < 0 else int(dests.uid[row])
        return NO_DEST                      # "all destinations are overloaded"

    def _cl_row(self, dests: DestTable) -> int:
        if self.cl is HEAD:
            return -1
        hits = np.flatnonzero(dests.uid == self.cl)
        return int(hits[0]) if len(hits) else -1

    # -- batch ---------------------------------------------------------------------------
    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        n = len(flows)
        keys = self._period_keys(dests) if n else None
        k = (self.mw - self.cw) // self.di if self.mw > 0 else -1
        if keys is None or not (0 < self.cw <= self.mw and (self.mw - self.cw) % self.di == 0):
            return super().schedule_batch(dests, flows, now)
        size = len(dests)
        # the next pick is the first (pass, row) after (pass of cw, cursor row)
        start = int(np.searchsorted(keys, k * size + self._cl_row(dests), side="right"))
        chosen = keys[(start + np.arange(n)) % len(keys)]
        picks = chosen % size
        if not binds_exact(dests, picks):
            return super().schedule_batch(dests, flows, now)
        self.cl = int(dests.uid[picks[-1]])
        self.cw = self.mw - int(chosen[-1] // size) * self.di
        return picks.astype(np.int32)

    def _period_keys(self, dests: DestTable) -> np.ndarray | None:
        """Sorted keys pass*len(dests) + row of one period, or None (nothing eligible,
        period too long, or stale mw); cached per eligibility mask."""
        if dests.weight.tobytes() != self._weights:
            return None                     # weights edited behind our back: mw/di stale
        ok = eligible(dests)
        tag = ok.tobytes()
        if self._period is None or self._period[0] != tag:
            self._period = (tag, self._build_period(dests, ok))
        return self._period[1]

    def _build_period(self, dests: DestTable, ok: np.ndarray) -> np.ndarray | None:
        rows = np.flatnonzero(ok)
        if not len(rows) or self.mw <= 0:
            return None
        passes = (self.mw - 1) // self.di + 1           # cw = mw, mw-di, ..., 1
        w = dests.weight[rows].astype(np.int64)
        # row r is in pass k iff mw - k*di <= w_r  ⇔  k >= ceil((mw - w_r) / di)
        first = np.maximum(-((w - self.mw) // self.di), 0)
        counts = np.maximum(passes - first, 0)
        total = int(counts.sum())
        if total == 0 or total > MAX_PERIOD:
            return None
        row_of = np.repeat(rows, counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        k = np.repeat(first, counts) + offsets
        return np.sort(k * len(dests) + row_of)
