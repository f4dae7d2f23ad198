"""Exact batch forms for the least-connection family: lc, wlc, sed and nq (and the
fill that fo and ovf use).

What it does: returns what scheduling a batch of new flows one at a time would
return, each pick bound before the next (TCP → active + 1, any other protocol
→ inactive + 1, OVERLOAD once active + inactive reaches u_threshold
[conn: ip_vs_bind_dest]), without a scan per flow. These schedulers read
counters only, never a flow's addresses. Within a run of flows that bind the
same way, each eligible server offers a stream of loads, its load after 0, 1,
2, … more binds, cut off where u_threshold sets OVERLOAD; the loop always takes
the least load, the earlier server on ties, so its picks are the first m items
of the streams merged in (load, row) order. A batch is one merge per run.

Loads are compared as integers: K = floor(overhead * Q / weight), with Q a
common multiple of the weights or max(weight)**2, orders the fractions exactly
(two different ones with denominators <= W differ by >= 1/W**2), which is the
cross-multiplication of ip_vs_wlc folded into one number per item.

What it does not do: bind on the caller's table, or guess. When a key could
overflow int64 a heap replays the loop with Python integers; when sed or nq
products could wrap as the kernel's unsigned int does, or a weight is
negative, it answers None and the caller runs the loop. Batches that switch
between TCP and other protocols often go through the heap: O(n + k log n).

Mirrors: ip_vs_lc/wlc/sed/nq_schedule (scan order, strict comparisons) and
ip_vs_dest_conn_overhead / ip_vs_sed_dest_overhead.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from userlb.sched.base import NO_DEST, FlowBatch
from userlb.services import DEST_F_OVERLOAD, IPPROTO_TCP, DestTable

NO_CAP = 1 << 40            # "no u_threshold": more binds than any batch holds
RUN_COST = 48               # one vectorised run costs about as much as this many heap steps
GRID_ITEMS = 1024           # servers x flows up to which a run lists every item outright
_I64_ROOM = 1 << 60
_LAST = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Load:
    """A server's load as the scheduler sees it: (act*active + inact*inactive + base) / weight."""

    act: int                    # numerator step per TCP bind
    inact: int                  # numerator step per other bind
    base: int
    weighted: bool
    idle_first: bool = False    # nq: a server with no active connection wins at once
    unsigned: bool = False      # sed/nq: the kernel's products are unsigned int

    def key(self, numer: int, weight: int, scale: int) -> int:
        if self.idle_first and numer == self.base:
            return -1
        return numer * scale // weight if self.weighted else numer


LC = Load(256, 1, 0, weighted=False)                     # ip_vs_dest_conn_overhead
WLC = Load(256, 1, 0, weighted=True)
SED = Load(1, 0, 1, weighted=True, unsigned=True)        # ip_vs_sed_dest_overhead
NQ = Load(1, 0, 1, weighted=True, idle_first=True, unsigned=True)


def merge_batch(load: Load, dests: DestTable, flows: FlowBatch) -> np.ndarray | None:
    """Picks equal to the sequential loop's, or None when that cannot be promised."""
    k = len(flows)
    scale, wmax, negative = _weights(dests.weight.astype(np.int32, copy=False).tobytes())
    if negative or k == 1:                          # (one flow: the scan itself is cheapest)
        return None
    picks = np.full(k, NO_DEST, np.int32)
    notover = (dests.flags & DEST_F_OVERLOAD) == 0
    # every scan skips OVERLOAD; weight 0 never wins (lc/nq skip it, wlc/sed need the
    # candidate's weight > 0 and a product with weight 0 is never the smaller)
    rows = (notover & (dests.weight > 0)).nonzero()[0]
    if not len(rows) or not k:
        return picks
    if load.unsigned and not _products_fit_u32(dests, notover, wmax, k):
        return None
    state = _State(load, dests, rows, scale if load.weighted else 1)
    tcp = flows.proto == IPPROTO_TCP
    edges = [0, *((tcp[1:] != tcp[:-1]).nonzero()[0] + 1).tolist(), k]
    # runs cost a fixed numpy overhead each, heap steps a little Python per flow
    if (len(edges) - 1) * RUN_COST >= k + len(rows) // 2 or not state.fits_int64(k, wmax):
        picks[:] = state.heap_picks(tcp.tolist())
        return picks
    for lo, hi in zip(edges, edges[1:]):
        got = state.run(bool(tcp[lo]), hi - lo, last=hi == k)
        picks[lo:lo + len(got)] = got
        if len(got) < hi - lo:
            break                                    # every server is OVERLOADed now
    return picks


@lru_cache(maxsize=64)
def _weights(weight_bytes: bytes) -> tuple[int, int, bool]:
    """(Q, max weight, any negative): Q is a common multiple of the positive weights
    if that is at most max(weight)**2, else max(weight)**2."""
    weights = np.frombuffer(weight_bytes, np.int32)
    positive = np.unique(weights[weights > 0]).tolist()
    negative = bool((weights < 0).any())
    if not positive:
        return 1, 0, negative
    square = positive[-1] ** 2
    common = 1
    for w in positive:
        common = math.lcm(common, w)
        if common > square:
            return square, positive[-1], negative
    return common, positive[-1], negative


def _products_fit_u32(dests: DestTable, notover, wmax: int, k: int) -> bool:
    """sed/nq: no (active + 1) * weight of this batch can wrap a C unsigned int."""
    if not len(dests) or (int(dests.activeconns.max()) + 1 + k) * wmax < 1 << 32:
        return True
    if not notover.any():
        return True
    top = int(dests.activeconns[notover].max()) + 1 + k
    return top * int(dests.weight[notover].max()) < 1 << 32


def binds_left(dests: DestTable, rows: np.ndarray, every: bool = False) -> np.ndarray | None:
    """Per row: binds until OVERLOAD (at least one, as bind() tests after counting;
    NO_CAP without u_threshold), or None when no row has a u_threshold."""
    upper = dests.u_threshold if every else dests.u_threshold[rows]
    if not upper.any():
        return None
    if every:
        total = dests.activeconns + dests.inactconns
    else:
        total = dests.activeconns[rows] + dests.inactconns[rows]
    return np.where(upper > 0, np.maximum(upper - total, 1), NO_CAP)


class _State:
    """The servers eligible at batch start: load numerators, weights, binds left (cap)."""

    def __init__(self, load: Load, dests: DestTable, rows, scale: int) -> None:
        every = len(rows) == len(dests)
        active = dests.activeconns if every else dests.activeconns[rows]
        inact = dests.inactconns if every else dests.inactconns[rows]
        self.load, self.rows, self.scale = load, rows, scale
        self.numer = active * load.act + load.base
        if load.inact:
            self.numer += inact * load.inact
        self.weight = None
        if load.weighted:
            weight = dests.weight if every else dests.weight[rows]
            self.weight = weight.astype(np.int64)       # int32 products would wrap
        self.cap = binds_left(dests, rows, every)        # None: no u_threshold anywhere

    def fits_int64(self, k: int, wmax: int) -> bool:
        top = int(self.numer.max()) + (k + 1) * max(self.load.act, self.load.inact)
        return top * self.scale * max(wmax, len(self.rows)) < _I64_ROOM

    def run(self, tcp: bool, m: int, last: bool) -> np.ndarray:
        """Rows of the next m picks for flows that all bind the same way (fewer if all fill)."""
        load, step = self.load, self.load.act if tcp else self.load.inact
        live = None if self.cap is None else (self.cap > 0).nonzero()[0]
        numer, weight, cap = self.numer, self.weight, self.cap
        if live is not None:
            if not len(live):
                return live
            numer, cap = numer[live], cap[live]
            weight = None if weight is None else weight[live]
        local = np.empty(0, np.int64)
        if load.idle_first and step:
            # as ip_vs_nq: the first idle server is returned at once, in scan order
            local = (numer == load.base).nonzero()[0][:m]
            if len(local):
                numer = numer.copy()
                numer[local] += step
                if cap is not None:
                    cap = cap.copy()
                    cap[local] -= 1
        if m > len(local):
            rest = m - len(local)
            if step:
                more = _merge(numer, weight, step, cap, rest, self.scale)
            else:
                more = fill_constant(self._keys(numer, weight), cap, rest)
            local = np.concatenate([local, more]) if len(local) else more
        if not last:
            self._bind(live, local, step)
        return (self.rows if live is None else self.rows[live])[local]

    def _bind(self, live, local, step: int) -> None:
        at = slice(None) if live is None else live
        counts = np.bincount(local, minlength=len(self.numer if live is None else live))
        self.numer[at] += counts * step
        if self.cap is not None:
            self.cap[at] -= counts

    def _keys(self, numer, weight) -> np.ndarray:
        keys = numer * self.scale // weight if self.load.weighted else numer.copy()
        if self.load.idle_first:
            keys[numer == self.load.base] = -1
        return keys

    def heap_picks(self, tcp: list[bool]) -> list[int]:
        """The loop itself, with a heap of (key, row) instead of a scan: O(n + k log n)."""
        load, scale, rows = self.load, self.scale, self.rows.tolist()
        numer = self.numer.tolist()
        cap = [NO_CAP] * len(numer) if self.cap is None else self.cap.tolist()
        weight = self.weight.tolist() if load.weighted else [1] * len(numer)
        key = load.key
        heap = [(key(numer[j], weight[j], scale), j) for j in range(len(numer))]
        heapq.heapify(heap)
        out = []
        for is_tcp in tcp:
            if not heap:
                out.append(NO_DEST)
                continue
            j = heap[0][1]
            out.append(rows[j])
            numer[j] += load.act if is_tcp else load.inact
            cap[j] -= 1
            if cap[j]:
                heapq.heapreplace(heap, (key(numer[j], weight[j], scale), j))
            else:
                heapq.heappop(heap)                   # bind set OVERLOAD
        return out


def _merge(numer, weight, step: int, cap, m: int, scale: int) -> np.ndarray:
    """First m items of the streams (numer + j*step) / weight, j < cap, in (key, row) order;
    as local rows, fewer than m when every cap runs out."""
    n = len(numer)
    if n * m <= GRID_ITEMS:                  # few servers: list m items of each
        j = np.arange(0, m * step, step)
        key = numer[:, None] + j
        if weight is not None:
            key *= scale
            key //= weight[:, None]
        key *= n
        key += np.arange(n)[:, None]
        if cap is not None:
            key[np.arange(m) >= cap[:, None]] = _LAST
        key = key.ravel()
    else:
        count, total = _counts(numer, weight, step, cap, m, scale)
        local = np.arange(n).repeat(count)
        start = count.cumsum() - count
        key = numer[local] + (np.arange(total) - start.repeat(count)) * step
        if weight is not None:
            key *= scale
            key //= weight[local]
        key *= n
        key += local
    if len(key) > 2 * m:
        key = np.partition(key, m - 1)[:m]
    key.sort()
    key = key[:m]
    if cap is not None and len(key) and key[-1] == _LAST:
        key = key[key != _LAST]
    return key % n


def _counts(numer, weight, step: int, cap, m: int, scale: int):
    """Items per server with key <= T, for a T at which the total reaches m (or every cap).

    T comes from the water level V at which sum((V*weight - numer) / step), over the
    servers below V, equals m: V = min over prefixes (in numer/weight order) of
    (m*step + sum numer) / sum weight. Below V each stream has at least that many
    items, so the exact integer count at T = floor(V*Q) + 1 reaches m unless caps
    bind, and then the target doubles until it does.
    """
    n = len(numer)
    if weight is None:
        w, sum_weight = 1, np.arange(1, n + 1)
        sum_numer = numer[numer.argsort()].cumsum()
    else:
        w = weight
        order = (numer / weight).argsort()
        sum_numer, sum_weight = numer[order].cumsum(), weight[order].cumsum()
    want, unit = m, step * scale
    while True:
        level = float(((want * step + sum_numer) / sum_weight).min())
        t = int(level * scale) + 1
        count = ((t + 1) * w + (unit - 1) - numer * scale) // unit
        np.maximum(count, 0, out=count)
        if cap is not None:
            np.minimum(count, cap, out=count)
        total = int(count.sum())
        if total >= m or (cap is not None and (count == cap).all()):
            return count, total
        want *= 2


def fill_constant(keys: np.ndarray, cap: np.ndarray | None, m: int) -> np.ndarray:
    """Loads that a bind does not move: the least server takes flows until OVERLOAD, then
    the next; as local rows, fewer than m when every cap runs out."""
    if cap is None:
        return np.full(m, keys.argmin())
    n = len(keys)
    order = np.sort(keys * n + np.arange(n)) % n
    take = np.minimum(cap[order], m)
    needed = int(take.cumsum().searchsorted(m)) + 1
    return order[:needed].repeat(take[:needed])[:m]
