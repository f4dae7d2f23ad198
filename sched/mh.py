"""mh scheduler (Maglev hashing, Linux >= 4.18). Mirrors ip_vs_mh_schedule(),
ip_vs_mh_get(), ip_vs_mh_get_fallback(), ip_vs_mh_permutate() and
ip_vs_mh_populate(); does not touch counters (the engine binds).

Table: M = 4093 slots (CONFIG_IP_VS_MH_TAB_INDEX 12), rebuilt on every
add/del/edit from last_weight, so quiescing (weight 0) leaves it unchanged.
g = gcd of the positive last_weights (none → empty table); rshift =
max(0, fls(max // g) - 6); turns = (lw // g) >> rshift, or 1 if that is 0 and
lw != 0. Each server's permutation: offset = h1(addr, port) % M,
skip = h2(addr, port) % (M - 1) + 1, with h = hsiphash of the u32
offset + port + addr under the fixed keys. Populate: rounds over the servers,
each claiming `turns` free slots along its permutation, until all M are taken.
More than M servers: the kernel refuses (-EINVAL) and the old table stays.

Lookup: slot = h1(saddr, port) % M, port = source port only with mh-port
(TCP/UDP/SCTP). Unavailable = weight <= 0 or OVERLOAD → NO_DEST, or with
mh-fallback: an empty slot stops (NO_DEST), else probe k = 0..M-1 with a fresh
hash h1(saddr, port, offset=(k + ihash) % M) % M; first available wins.
"""

from __future__ import annotations

import math
from functools import reduce

import numpy as np

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow, FlowBatch
from userlb.sched.common import (HAS_PORTS, PORT_PROTOCOLS, SVC_F_SCHED1, SVC_F_SCHED2,
                                 UidRows, binds_exact, eligible, sched_flag_bits)
from userlb.sched.hashing import (MH_HASH1, MH_HASH2, hsiphash_u32_raw, mh_hash,
                                  mh_hash_array)
from userlb.services import DestTable

PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
TAB_INDEX = 12                      # CONFIG_IP_VS_MH_TAB_INDEX
TAB_SIZE = PRIMES[TAB_INDEX - 8]    # M = 4093
TAB_BITS = TAB_INDEX // 2           # IP_VS_MH_TAB_BITS = 6


@register
class MaglevHashing(BaseScheduler):
    name = "mh"

    def __init__(self, flags: tuple[str, ...] = (), **params) -> None:
        super().__init__(flags, **params)
        bits = sched_flag_bits(self.flags, self.name)
        self.fallback = bool(bits & SVC_F_SCHED1)       # mh-fallback
        self.use_port = bool(bits & SVC_F_SCHED2)       # mh-port
        self.table = UidRows(np.full(TAB_SIZE, -1, np.int64))

    def dests_changed(self, dests: DestTable) -> None:
        if len(dests) > TAB_SIZE:
            return                                      # -EINVAL: table kept
        self.table = UidRows(build_table(dests.uid.tolist(), dests.addr.tolist(),
                                         dests.port.tolist(), dests.last_weight.tolist()))

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        port = flow.sport if self.use_port and flow.proto in PORT_PROTOCOLS else 0
        rows = self.table.rows(dests)
        ok = eligible(dests)
        ihash = mh_hash(flow.saddr, port, MH_HASH1) % TAB_SIZE
        row = int(rows[ihash])
        if row >= 0 and ok[row]:
            return row
        if not self.fallback or row < 0 or not ok[rows[rows >= 0]].any():
            return NO_DEST                  # (nothing available: the probe could only fail)
        for offset in range(TAB_SIZE):
            roffset = (offset + ihash) % TAB_SIZE
            row = int(rows[mh_hash(flow.saddr, port, MH_HASH1, roffset) % TAB_SIZE])
            if row < 0:
                break
            if ok[row]:
                return row
        return NO_DEST

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        keys = flows.saddr.astype(np.uint32, copy=False)
        ports = None
        if self.use_port:                   # offset + port + addr, a u32 sum that wraps
            ports = np.where(HAS_PORTS[flows.proto], flows.sport, 0).astype(np.uint32)
            keys = keys + ports
        ihash = hsiphash_u32_raw(keys, MH_HASH1) % np.uint64(TAB_SIZE)
        picks = self.table.usable(dests)[ihash]     # one gather: slot → usable row or -1
        if self.fallback:
            rows = self.table.rows(dests)
            probe = np.flatnonzero((picks < 0) & (rows[ihash] >= 0))
            ok = np.append(eligible(dests), False)
            if len(probe) and ok[rows].any():
                port = np.zeros(len(probe), np.int64) if ports is None else ports[probe]
                picks[probe] = _probe(rows, ok, flows.saddr[probe], port,
                                      ihash[probe].astype(np.int64))
        if not binds_exact(dests, picks):
            return super().schedule_batch(dests, flows, now)
        return picks


def _probe(rows, ok, saddr, ports, ihash) -> np.ndarray:
    """ip_vs_mh_get_fallback for many flows at once: one fresh hash per probe."""
    result = np.full(len(saddr), NO_DEST, np.int64)
    pending = np.arange(len(saddr))
    for offset in range(TAB_SIZE):
        if not len(pending):
            break
        roffset = (offset + ihash[pending]) % TAB_SIZE
        row = rows[mh_hash_array(saddr[pending], ports[pending], MH_HASH1, roffset) % TAB_SIZE]
        found = ok[row]
        result[pending[found]] = row[found]
        pending = pending[~found & (row >= 0)]          # an empty slot ends the search
    return result


def build_table(uids: list[int], addrs: list[int], ports: list[int],
                last_weights: list[int]) -> np.ndarray:
    """The lookup table as uids (-1 = empty) [ip_vs_mh_reassign]."""
    table = np.full(TAB_SIZE, -1, np.int64)
    positive = [w for w in last_weights if w > 0]
    if not positive:
        return table                                    # gcd < 1: ip_vs_mh_reset
    setup = []
    for addr, port, turns in zip(addrs, ports, dest_turns(last_weights)):
        offset = mh_hash(addr, port, MH_HASH1) % TAB_SIZE
        skip = mh_hash(addr, port, MH_HASH2) % (TAB_SIZE - 1) + 1
        setup.append([offset, skip, turns])
    owner = _populate(setup)
    return np.where(owner >= 0, np.asarray(uids, np.int64)[np.maximum(owner, 0)], -1)


def dest_turns(last_weights: list[int]) -> list[int]:
    """Slots each server claims per round [ip_vs_mh_gcd_weight, _shift_weight, _permutate]."""
    positive = [w for w in last_weights if w > 0]
    g = reduce(math.gcd, positive)
    # as ip_vs_mh_shift_weight: fls(max/gcd) - IP_VS_MH_TAB_BITS, not below 0
    rshift = max(0, (max(last_weights) // g).bit_length() - TAB_BITS)
    # as ip_vs_mh_permutate: ((lw / gcd) >> rshift) ? : (lw != 0)
    return [((lw // g) >> rshift) or (1 if lw else 0) for lw in last_weights]


def _populate(setup: list[list[int]]) -> np.ndarray:
    """Slot → index into setup [ip_vs_mh_populate]; setup rows are [perm, skip, turns]."""
    owner = [-1] * TAB_SIZE
    filled = 0
    while True:
        for i, ds in enumerate(setup):
            perm, skip, turns = ds
            for _ in range(turns):
                while owner[perm] >= 0:         # add skip, mod M, until a free slot
                    perm += skip
                    if perm >= TAB_SIZE:
                        perm -= TAB_SIZE
                owner[perm] = i
                filled += 1
                if filled == TAB_SIZE:
                    return np.asarray(owner, np.int64)
            ds[0] = perm
