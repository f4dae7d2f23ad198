"""lblcr scheduler. Mirrors ip_vs_lblcr_schedule(), the dest-set helpers
(ip_vs_dest_set_insert/erase/min/max) and the GC timer (see locality.py); does
not touch counters (the engine binds).

Each destination address maps to a server *set* (newest member first) with
lastmod, plus the entry's lastuse. On a hit: lastuse = now; d = set_min (wlc
over AVAILABLE members); if the set has more than one member and
now > lastmod + expiration_s, set_max (the weighted *most* loaded member) is
erased (lastmod = now) — possibly d itself, which is still returned. If d
exists and is not lblc-"overloaded" it is used; otherwise wlc over the whole
service picks and joins the set (lastmod = now if new). On a miss: wlc picks
and a new entry {d} is created.

A member deleted from the service is kept, as the kernel keeps the trashed
dest: never AVAILABLE, but set_max still weighs it, using the weight and load
it had when this scheduler last saw it (the kernel would see its draining
connections; we cannot).

Parameters: expiration_s (sysctl lblcr_expiration, default 86400) and
created_s (service creation time, anchors the 60 s GC timer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from userlb.sched import register
from userlb.sched.base import NO_DEST, BaseScheduler, Flow
from userlb.sched.common import conn_overhead, wlc_pick
from userlb.sched.locality import (DEFAULT_EXPIRATION_S, DestKeys, LocalityTable, dest_key,
                                   lblc_overloaded)
from userlb.services import DEST_F_AVAILABLE, DEST_F_OVERLOAD, DestTable


@dataclass
class Member:
    """One server of a set, with what we last saw of it."""

    key: tuple[int, int]
    weight: int = 0
    overhead: int = 0
    flags: int = 0
    row: int = -1                # current row, -1 once deleted (not AVAILABLE)

    def refresh(self, dests: DestTable, row: int) -> None:
        self.row = row
        if row >= 0:
            self.weight = int(dests.weight[row])
            self.overhead = conn_overhead(int(dests.activeconns[row]),
                                          int(dests.inactconns[row]))
            self.flags = int(dests.flags[row])
        else:
            self.flags &= ~DEST_F_AVAILABLE

    @property
    def over(self) -> bool:
        return bool(self.flags & DEST_F_OVERLOAD)

    @property
    def avail(self) -> bool:
        return bool(self.flags & DEST_F_AVAILABLE)


@dataclass
class Entry:
    """struct ip_vs_lblcr_entry: daddr → a server set."""

    lastuse: float
    lastmod: float
    members: list[Member] = field(default_factory=list)


@register
class LocalityBasedLeastConnectionReplication(BaseScheduler):
    name = "lblcr"

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
        if en is None:
            row = wlc_pick(dests)
            if row < 0:
                return NO_DEST
            en = Entry(lastuse=now, lastmod=now)
            self._insert(en, dests, row, now)
            self.table.entries[flow.daddr] = en
            self.table.count += 1
            return row
        en.lastuse = now
        for m in en.members:
            m.refresh(dests, self._keys.row(dests, m.key))
        least = set_min(en.members)
        if len(en.members) > 1 and now > en.lastmod + self.table.expiration_s:
            most = set_max(en.members)
            if most is not None:                        # as ip_vs_dest_set_erase
                en.members.remove(most)
                en.lastmod = now
        if least is not None and not lblc_overloaded(dests, least.row):
            return least.row
        row = wlc_pick(dests)
        if row < 0:
            return NO_DEST
        self._insert(en, dests, row, now)
        return row

    def _insert(self, en: Entry, dests: DestTable, row: int, now: float) -> None:
        # as ip_vs_dest_set_insert: new members go to the head, lastmod = now
        key = dest_key(dests, row)
        if any(m.key == key for m in en.members):
            return
        member = Member(key)
        member.refresh(dests, row)
        en.members.insert(0, member)
        en.lastmod = now


def set_min(members: list[Member]) -> Member | None:
    """Weighted least-connection member [ip_vs_dest_set_min]."""
    least = None
    for m in members:
        if m.over:
            continue
        if least is None:
            if m.weight > 0 and m.avail:
                least = m
            continue
        # as ip_vs_dest_set_min: loh * w(dest) > doh * w(least), and dest AVAILABLE
        if least.overhead * m.weight > m.overhead * least.weight and m.avail:
            least = m
    return least


def set_max(members: list[Member]) -> Member | None:
    """Weighted most-connection member with weight > 0 [ip_vs_dest_set_max]."""
    most = None
    for m in members:
        if most is None:
            if m.weight > 0:
                most = m
            continue
        # as ip_vs_dest_set_max: moh * w(dest) < doh * w(most), ties keep the earlier
        if most.overhead * m.weight < m.overhead * most.weight and m.weight > 0:
            most = m
    return most
