"""Per-real-server connection counters and statistics, kept in step with the table.

Mirrors ip_vs_bind_dest / ip_vs_unbind_dest and set_tcp_state's counter moves
(spec/ipvs.md §1.4, §3.4): a new connection is bound INACTIVE (inactconns+1,
OVERLOAD when u_threshold is reached); a state change across the
active/inactive line moves one count and flips the connection's INACTIVE flag;
expiry or eviction unbinds (and may clear OVERLOAD). Also counts conns,
packets and bytes per server (§3.11). Vectorised per service with np.add.at;
decides nothing else.
"""

from __future__ import annotations

import numpy as np

from userlb import tcpstate
from userlb.services import DEST_F_OVERLOAD

CONN_F_INACTIVE = 0x0100
CONN_F_TEMPLATE = 0x1000


class Accounting:
    INACTIVE = CONN_F_INACTIVE

    def __init__(self, services, table) -> None:
        self.services = services
        self.table = table

    def _per_service(self, ids: np.ndarray):
        """Yield (DestTable, mask) for each service among `ids`, skipping gone dests."""
        svc = self.table.service[ids]
        dest = self.table.dest[ids]
        for s in np.unique(svc).tolist():
            mask = (svc == s) & (dest >= 0)
            if mask.any():
                yield self.services[s].dests, mask, dest

    def bind(self, ids: np.ndarray) -> None:
        for dests, m, dest in self._per_service(ids):
            rows = dest[m]
            np.add.at(dests.inactconns, rows, 1)
            np.add.at(dests.conns, rows, 1)
            u = dests.u_threshold[rows]
            over = (u != 0) & (dests.activeconns[rows] + dests.inactconns[rows] >= u)
            dests.flags[rows[over]] |= np.uint8(DEST_F_OVERLOAD)

    def transition(self, ids: np.ndarray, new_state: np.ndarray, inbound: np.ndarray,
                   nbytes: np.ndarray, count: bool = True) -> None:
        """Move counters for connections whose activity changed; count packets and bytes
        unless `count` is False (entries imported by connection sync carry no packet)."""
        self.move(ids, new_state)
        if count:
            self.count(ids, inbound, nbytes)

    def move(self, ids: np.ndarray, new_state: np.ndarray) -> None:
        """Counter moves and INACTIVE flags for distinct connections now in `new_state`."""
        flags = self.table.flags[ids]
        was_active = (flags & CONN_F_INACTIVE) == 0
        now_active = tcpstate.ACTIVE[new_state]
        up = now_active & ~was_active
        down = was_active & ~now_active
        if not (up.any() or down.any()):
            return
        self.table.flags[ids[up]] &= np.uint16(~CONN_F_INACTIVE & 0xFFFF)
        self.table.flags[ids[down]] |= np.uint16(CONN_F_INACTIVE)
        delta = up.astype(np.int64) - down.astype(np.int64)
        for dests, m, dest in self._per_service(ids):
            rows = dest[m]
            np.add.at(dests.activeconns, rows, delta[m])
            np.add.at(dests.inactconns, rows, -delta[m])

    def count(self, ids: np.ndarray, inbound: np.ndarray, nbytes: np.ndarray) -> None:
        """Per-server packets and bytes, in and out, of one packet per entry of `ids`."""
        nbytes = np.asarray(nbytes, np.int64)
        for dests, m, dest in self._per_service(ids):
            i, o = m & inbound, m & ~inbound
            np.add.at(dests.inpkts, dest[i], 1)
            np.add.at(dests.inbytes, dest[i], nbytes[i])
            np.add.at(dests.outpkts, dest[o], 1)
            np.add.at(dests.outbytes, dest[o], nbytes[o])

    def unbind(self, ids: np.ndarray) -> None:
        flags = self.table.flags[ids]
        template = (flags & CONN_F_TEMPLATE) != 0
        inactive = ((flags & CONN_F_INACTIVE) != 0) & ~template
        active = ~inactive & ~template
        for dests, m, dest in self._per_service(ids):
            np.add.at(dests.persistconns, dest[m & template], -1)
            np.add.at(dests.inactconns, dest[m & inactive], -1)
            np.add.at(dests.activeconns, dest[m & active], -1)
            dests.update_overload_on_unbind(dest[m & ~template])
