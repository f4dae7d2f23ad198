"""twos scheduler (power of two choices, Linux >= 6.2). Mirrors
ip_vs_twos_schedule(); does not touch counters (the engine binds).

total = sum of weights of the non-OVERLOAD servers with weight > 0 (none →
NO_DEST). Two draws r1, r2 = u32 % (total + 1), each in [0, total]. Walking the
eligible servers in order and subtracting each weight from both, the first
server where r1 <= 0 is choice1, likewise choice2. choice2 wins if
w2 * overhead1 > w1 * overhead2 (C int arithmetic, wrapping), else choice1.

Randomness is injectable: pass rng= (anything with getrandbits(32), e.g. a
random.Random) or seed= for a deterministic sequence; the default is a Random
seeded from the OS, like the kernel's prandom_u32().
"""

from __future__ import annotations

import random

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow
from userlb.sched.common import conn_overhead, s32
from userlb.services import DEST_F_OVERLOAD, DestTable


@register
class PowerOfTwoChoices(BaseScheduler):
    name = "twos"

    def __init__(self, flags: tuple[str, ...] = (), rng=None, seed: int | None = None,
                 **params) -> None:
        super().__init__(flags, **params)
        self.rng = rng if rng is not None else random.Random(seed)

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        over = (dests.flags & DEST_F_OVERLOAD).tolist()
        weight = dests.weight.tolist()
        rows = [r for r, w in enumerate(weight) if not over[r] and w > 0]
        if not rows:
            return NO_DEST
        total = sum(weight[r] for r in rows) + 1        # inclusive of total_weight
        r1 = self.rng.getrandbits(32) % total           # as prandom_u32() % total_weight
        r2 = self.rng.getrandbits(32) % total
        c1 = c2 = -1
        for row in rows:
            r1 -= weight[row]
            r2 -= weight[row]
            if r1 <= 0 and c1 < 0:
                c1 = row
            if r2 <= 0 and c2 < 0:
                c2 = row
            if c1 >= 0 and c2 >= 0:
                break
        oh1 = conn_overhead(int(dests.activeconns[c1]), int(dests.inactconns[c1]))
        oh2 = conn_overhead(int(dests.activeconns[c2]), int(dests.inactconns[c2]))
        # as ip_vs_twos: (weight2 * overhead1) > (weight1 * overhead2), int products
        if s32(weight[c2] * oh1) > s32(weight[c1] * oh2):
            return c2
        return c1
