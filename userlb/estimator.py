"""IPVS's rate estimator and `ipvsadm -Z`, over every real server and service at once.

What it does: every 2 s, per stats object, for conns/inpkts/outpkts
`rate = (count - last) << 9` and for inbytes/outbytes `rate = (count - last) << 4`,
then `avg += (rate - avg) >> 2` (arithmetic shift, as the kernel's s64); reported
as `(avg + 0x1FF) >> 10` per second (cps, inpps, outpps) and `(avg + 0xF) >> 5`
(inbps, outbps) (spec/ipvs.md §3.11). One row per real server, keyed by the
DestTable `uid` (stable across edits and reordering), vectorised over all
DestTables; one row per service, whose counters are the sum of its servers plus
what servers removed since counted (the kernel keeps separate service counters,
so a removed server's packets stay in its service's total). `zero()` is
ip_vs_zero_stats: the current counters become the base that listings subtract,
and the estimator restarts from them with rates 0. The raw DestTable counters are
never written, so Prometheus counters stay monotonic across -Z.

`tick(now)` applies as many 2-s steps as have elapsed. When the caller was late
(n steps due at once) the counter change is spread evenly over the n steps (at
most the last 64 are run: by then 0.75^64 of the past is left), so a late tick
gives the rate the kernel would have shown under steady traffic; a tick every
2 s is exact.

What it does not do: count packets (accounting.py does) or read a clock. The
packets of a server removed since the last tick or report are missing from its
service's total (the removal happens in destctl, which this module does not hook).

Mirrors ip_vs_est.c estimation_timer / ip_vs_read_estimator / ip_vs_zero_estimator
and ip_vs_ctl.c ip_vs_zero_stats. Pure: `now` is passed in.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

STEP_S = 2.0
"""The estimator's period (ip_vs_est.c: 2 * HZ)."""
MAX_STEPS = 64
FIELDS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
RATE_FIELDS = ("cps", "inpps", "outpps", "inbps", "outbps")
_SHIFT_IN = np.array([9, 9, 9, 4, 4], np.int64)       # per-second rate scaled by 2^10 / 2^5
_ROUND = np.array([0x1FF, 0x1FF, 0x1FF, 0xF, 0xF], np.int64)
_SHIFT_OUT = np.array([10, 10, 10, 5, 5], np.int64)


def step(avg: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """One 2-s estimation step on (..., 5) arrays of averages and counter changes."""
    rate = np.left_shift(delta, _SHIFT_IN)
    return avg + np.right_shift(rate - avg, 2)


def report(avg: np.ndarray) -> np.ndarray:
    """ip_vs_read_estimator: scaled averages → cps, inpps, outpps, inbps, outbps."""
    return np.right_shift(avg + _ROUND, _SHIFT_OUT)


@dataclass(frozen=True)
class Row:
    """What `ipvsadm --stats` / `--rate` show for one server or service."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True)
class Report:
    """Rates and counters since the last -Z, for listings and metrics."""

    dests: dict[int, Row]
    """By DestTable uid."""
    services: dict[int, Row]
    """By engine service index."""
    service_totals: dict[int, tuple[int, ...]]
    """Raw (never zeroed) service counters conns..outbytes, monotonic for Prometheus."""

    def dest(self, uid: int) -> Row:
        return self.dests.get(int(uid), Row())

    def service(self, index: int) -> Row:
        return self.services.get(int(index), Row())


def _row(counts: np.ndarray, rates: np.ndarray) -> Row:
    return Row(*(int(v) for v in counts), *(int(v) for v in rates))


class Estimator:
    """Estimator state for one engine's servers (by uid) and services (by index)."""

    def __init__(self) -> None:
        self.uids = np.zeros(0, np.int64)              # sorted
        self.svc_of = np.zeros(0, np.int64)
        self.seen = np.zeros((0, 5), np.int64)         # counters at the last look
        self.last = np.zeros((0, 5), np.int64)         # counters at the last step
        self.avg = np.zeros((0, 5), np.int64)
        self.base = np.zeros((0, 5), np.int64)         # -Z point
        self.retired = np.zeros((0, 5), np.int64)      # per service: removed servers' counts
        self.svc_known = np.zeros(0, bool)
        self.svc_last = np.zeros((0, 5), np.int64)
        self.svc_avg = np.zeros((0, 5), np.int64)
        self.svc_base = np.zeros((0, 5), np.int64)
        self.next_due: float | None = None

    # -- bookkeeping ---------------------------------------------------------------
    def _sync(self, engine) -> np.ndarray:
        """Reconcile with the engine's DestTables; returns the service totals (S, 5)."""
        uids, svc, counts = _gather(engine)
        order = np.argsort(uids, kind="stable")
        uids, svc, counts = uids[order], svc[order], counts[order]
        self._grow(len(engine.services))
        pos = np.searchsorted(self.uids, uids)
        known = pos < len(self.uids)
        known[known] = self.uids[pos[known]] == uids[known]
        gone = ~np.isin(self.uids, uids)
        np.add.at(self.retired, self.svc_of[gone], self.seen[gone])
        last, avg, base = counts.copy(), np.zeros_like(counts), np.zeros_like(counts)
        for new, old in ((last, self.last), (avg, self.avg), (base, self.base)):
            new[known] = old[pos[known]]
        self.uids, self.svc_of, self.seen = uids, svc, counts
        self.last, self.avg, self.base = last, avg, base
        totals = self.retired.copy()
        np.add.at(totals, svc, counts)
        fresh = ~self.svc_known & _live(engine, len(totals))
        self.svc_last[fresh] = totals[fresh]
        self.svc_known |= fresh
        return totals

    def _grow(self, n: int) -> None:
        extra = n - len(self.svc_known)
        if extra > 0:
            pad = np.zeros((extra, 5), np.int64)
            self.retired = np.concatenate([self.retired, pad])
            self.svc_last = np.concatenate([self.svc_last, pad])
            self.svc_avg = np.concatenate([self.svc_avg, pad])
            self.svc_base = np.concatenate([self.svc_base, pad])
            self.svc_known = np.concatenate([self.svc_known, np.zeros(extra, bool)])

    # -- the three operations ----------------------------------------------------------
    def tick(self, engine, now: float) -> int:
        """Run the 2-s steps due by `now`; returns how many were due."""
        if self.next_due is None:
            self._sync(engine)
            self.next_due = now + STEP_S
            return 0
        if now < self.next_due:
            return 0
        n = int((now - self.next_due) // STEP_S) + 1
        self.next_due += n * STEP_S
        totals = self._sync(engine)
        self.avg = _steps(self.avg, np.maximum(self.seen - self.last, 0), n)
        self.last = self.seen.copy()
        self.svc_avg = _steps(self.svc_avg, np.maximum(totals - self.svc_last, 0), n)
        self.svc_last = totals
        return n

    def rates(self, engine) -> Report:
        totals = self._sync(engine)
        dest_rates = report(self.avg)
        dests = {int(u): _row(self.seen[i] - self.base[i], dest_rates[i])
                 for i, u in enumerate(self.uids.tolist())}
        svc_rates = report(self.svc_avg)
        live = np.flatnonzero(_live(engine, len(totals))).tolist()
        services = {s: _row(totals[s] - self.svc_base[s], svc_rates[s]) for s in live}
        raw = {s: tuple(int(v) for v in totals[s]) for s in live}
        return Report(dests, services, raw)

    def zero(self, engine, service: int | None = None) -> None:
        """-Z: counters since now, rates 0; one service (engine index) or all."""
        totals = self._sync(engine)
        rows = np.ones(len(self.uids), bool) if service is None else self.svc_of == service
        self.base[rows] = self.seen[rows]
        self.last[rows] = self.seen[rows]
        self.avg[rows] = 0
        svcs = np.arange(len(totals)) if service is None else np.array([service])
        self.svc_base[svcs] = totals[svcs]
        self.svc_last[svcs] = totals[svcs]
        self.svc_avg[svcs] = 0


def _steps(avg: np.ndarray, delta: np.ndarray, n: int) -> np.ndarray:
    """n steps, `delta` spread evenly (step k gets ⌊δ(k+1)/n⌋ - ⌊δk/n⌋); only the last 64."""
    for k in range(max(0, n - MAX_STEPS), n):
        avg = step(avg, delta * (k + 1) // n - delta * k // n)
    return avg


def _gather(engine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uid, service index, counters (k, 5)) of every live real server."""
    uids, svcs, counts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros((0, 5),
                                                                                   np.int64)]
    for i, rt in enumerate(engine.services):
        if rt is None or not len(rt.dests):
            continue
        d = rt.dests
        uids.append(d.uid.astype(np.int64))
        svcs.append(np.full(len(d), i, np.int64))
        counts.append(np.stack([getattr(d, f).astype(np.int64) for f in FIELDS], axis=1))
    return np.concatenate(uids), np.concatenate(svcs), np.concatenate(counts)


def _live(engine, n: int) -> np.ndarray:
    live = np.zeros(n, bool)
    live[[i for i, rt in enumerate(engine.services) if rt is not None]] = True
    return live


# -- one estimator per engine, for callers that do not keep their own ---------------

_BY_ENGINE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def for_engine(engine) -> Estimator:
    est = _BY_ENGINE.get(engine)
    if est is None:
        est = _BY_ENGINE[engine] = Estimator()
    return est


def tick(engine, now: float) -> int:
    """Run the due 2-s steps of `engine`'s estimator (call it at least every 2 s)."""
    return for_engine(engine).tick(engine, now)


def rates(engine) -> Report:
    return for_engine(engine).rates(engine)


def zero(engine, service: int | None = None) -> None:
    for_engine(engine).zero(engine, service)
