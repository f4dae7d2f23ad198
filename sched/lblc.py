"""lblc scheduler. Mirrors ip_vs_lblc_schedule(), ip_vs_lblc_new() and the GC
timer (see locality.py); does not touch counters (the engine binds).

Keyed on the packet's destination address (for a plain VIP service that is
always the VIP: one entry serves everybody). A cached server is used if it is
still in the service (AVAILABLE), has weight > 0 and is not "overloaded" in the
lblc sense (active > weight while some server has active*2 < weight; the
OVERLOAD flag is not checked on this path). Otherwise wlc over all servers
picks, and the entry is replaced if the server differs (lastuse = now).

Kernel quirk kept: replacing an entry unlinks the old one without decrementing
tbl->entries but the new one increments it, so the count that steers the GC
drifts upward with every replacement, exactly as in ip_vs_lblc_new().

Parameters: expiration_s (sysctl lblc_expiration, default 86400) and
created_s (service creation time, anchors the 60 s GC timer).
"""

from __future__ import annotations

from dataclasses import dataclass

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow
from userlb.sched.common import wlc_pick
from userlb.sched.locality import (DEFAULT_EXPIRATION_S, DestKeys, LocalityTable, dest_key,
                                   lblc_overloaded)
from userlb.services import DEST_F_AVAILABLE, DestTable


@dataclass
class Entry:
    """struct ip_vs_lblc_entry: daddr → one server."""

    dest: tuple[int, int]
    lastuse: float


@register
class LocalityBasedLeastConnection(BaseScheduler):
    name = "lblc"

    def __init__(self, flags: tuple[str, ...] = (),
                 expiration_s: float = DEFAULT_EXPIRATION_S,
                 created_s: float | None = None, **params) -> None:
        super().__init__(flags, **params)
        self.table = LocalityTable(expiration_s, created_s)
        self._keys = DestKeys()

    def expire(self, now: float) -> None:
        self.table.advance(now)

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        self.table.advance(now)
        en = self.table.entries.get(flow.daddr)
        if en is not None:
            en.lastuse = now
            row = self._keys.row(dests, en.dest)
            if row >= 0 and self._usable(dests, row):
                return row
        row = wlc_pick(dests)
        if row < 0:
            return NO_DEST
        self._new(flow.daddr, dest_key(dests, row), now)
        return row

    @staticmethod
    def _usable(dests: DestTable, row: int) -> bool:
        return (bool(dests.flags[row] & DEST_F_AVAILABLE) and dests.weight[row] > 0
                and not lblc_overloaded(dests, row))

    def _new(self, daddr: int, dest: tuple[int, int], now: float) -> None:
        # as ip_vs_lblc_new: same server → keep; else unlink (entries not
        # decremented) and hash a new entry (entries incremented)
        en = self.table.entries.get(daddr)
        if en is not None and en.dest == dest:
            return
        self.table.entries[daddr] = Entry(dest, now)
        self.table.count += 1
