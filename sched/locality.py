"""The entry table and garbage collector that lblc and lblcr share.

Mirrors struct ip_vs_lblc_table / ip_vs_lblcr_table with their periodic timer
(ip_vs_lblc_check_expire, ip_vs_lblc_full_check and the lblcr twins), the
"overloaded" test both use (is_overloaded) and how both find the cached server.
Does not pick servers: lblc.py and lblcr.py do.

Time is passed in. The GC timer ticks every 60 s from the service's creation
(`created_s`; if not given, the first `now` seen anchors it). advance(now) runs
every tick due up to `now`, so lblc/lblcr call it before each pick and the
engine may call expire(now) whenever it likes: the result is the same as the
kernel's independent timer. On each tick:
  counter % 30 == 0        → full sweep: drop entries with t >= lastuse + expiration_s,
                             counter = 1 (so about every 30 minutes);
  entries <= 16384         → counter += 1;
  else                     → partial GC from bucket rover + 1: drop entries idle for
                             >= 360 s until goal = min((entries - 16384)*4/3, 8192)
                             is met at the end of a bucket; rover = last bucket.
Cached servers are identified by (addr, port), as the kernel's entries hold the
dest itself: a deleted server stays in the trash while referenced and comes
back, AVAILABLE again, if re-added with the same address and port.
"""

from __future__ import annotations

from typing import Any

from userlb.sched.hashing import hash_32
from userlb.services import DestTable

TAB_BITS = 10                       # CONFIG_IP_VS_LBLC_TAB_BITS / LBLCR_TAB_BITS
TAB_SIZE = 1 << TAB_BITS
MAX_SIZE = TAB_SIZE * 16            # tbl->max_size
CHECK_EXPIRE_INTERVAL_S = 60
ENTRY_TIMEOUT_S = 6 * 60
DEFAULT_EXPIRATION_S = 24 * 60 * 60  # sysctl lblc_expiration / lblcr_expiration
COUNT_FOR_FULL_EXPIRATION = 30


class LocalityTable:
    """daddr → entry (anything with a `lastuse` attribute) plus the GC timer state."""

    def __init__(self, expiration_s: float = DEFAULT_EXPIRATION_S,
                 created_s: float | None = None) -> None:
        self.expiration_s = expiration_s
        self.entries: dict[int, Any] = {}
        self.count = 0                   # tbl->entries, kept as the kernel keeps it
        self.counter = 1
        self.rover = 0
        self.created_s = created_s
        self.ticks = 0                   # ticks already run

    @property
    def next_tick_s(self) -> float | None:
        if self.created_s is None:
            return None
        return self.created_s + (self.ticks + 1) * CHECK_EXPIRE_INTERVAL_S

    def advance(self, now: float) -> None:
        """Run every GC tick due at or before `now`."""
        if self.created_s is None:
            self.created_s = now
        while (tick := self.next_tick_s) <= now:
            if self.count <= MAX_SIZE and self.counter % COUNT_FOR_FULL_EXPIRATION:
                # quiet ticks only count up: jump to the next full sweep or to now
                due = int((now - tick) // CHECK_EXPIRE_INTERVAL_S) + 1
                quiet = COUNT_FOR_FULL_EXPIRATION - self.counter % COUNT_FOR_FULL_EXPIRATION
                step = min(due, quiet)
                self.counter += step
                self.ticks += step
                continue
            self._tick(tick)
            self.ticks += 1

    def _tick(self, t: float) -> None:
        # as ip_vs_lblc_check_expire
        if self.counter % COUNT_FOR_FULL_EXPIRATION == 0:
            self._drop(lambda en: t >= en.lastuse + self.expiration_s)
            self.counter = 1
        elif self.count <= MAX_SIZE:
            self.counter += 1
        else:
            self._partial(t)

    def _drop(self, stale) -> None:
        for key in [k for k, en in self.entries.items() if stale(en)]:
            del self.entries[key]
            self.count -= 1

    def _partial(self, t: float) -> None:
        goal = min((self.count - MAX_SIZE) * 4 // 3, MAX_SIZE // 2)
        buckets: dict[int, list[int]] = {}
        for key in self.entries:
            buckets.setdefault(hash_32(key, TAB_BITS), []).append(key)
        j = self.rover
        for _ in range(TAB_SIZE):
            j = (j + 1) & (TAB_SIZE - 1)
            for key in buckets.get(j, ()):
                if t >= self.entries[key].lastuse + ENTRY_TIMEOUT_S:
                    del self.entries[key]
                    self.count -= 1
                    goal -= 1
            if goal <= 0:
                break
        self.rover = j


class DestKeys:
    """(addr, port) ↔ row of a DestTable, rebuilt when the rows change."""

    def __init__(self) -> None:
        self._key: bytes | None = None
        self._rows: dict[tuple[int, int], int] = {}

    def row(self, dests: DestTable, key: tuple[int, int]) -> int:
        uid_bytes = dests.uid.tobytes()
        if uid_bytes != self._key:
            pairs = zip(dests.addr.tolist(), dests.port.tolist())
            self._rows = {}
            for row, pair in enumerate(pairs):
                self._rows.setdefault(pair, row)
            self._key = uid_bytes
        return self._rows.get(key, -1)


def dest_key(dests: DestTable, row: int) -> tuple[int, int]:
    return int(dests.addr[row]), int(dests.port[row])


def lblc_overloaded(dests: DestTable, row: int) -> bool:
    """is_overloaded(): active > weight and some server has active*2 < weight.

    The OVERLOAD flag (thresholds) is not consulted [lblc, lblcr].
    """
    if dests.activeconns[row] <= dests.weight[row]:
        return False
    return bool((dests.activeconns * 2 < dests.weight).any())
