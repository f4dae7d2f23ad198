"""The fast path's lookup memo: per live connection, its lookups and rewrite sums.

What it does: LookupMemo remembers, for each connection FastPath has looked up,
  - its IN key → (entry id, inbound NAT)       (in_hits; id → IN key in in_key_of)
  - its OUT key → entry id                     (out_hits; id → OUT key in out_key_of)
  - its outbound NAT                           (nat_out, by entry id)
where a NAT is (new address, new port, m, m_l4), the RFC 1624 sums of the rewrite
(nat_of). All of it comes from key columns, which stay as they are while the entry
lives, so a remembered value is right until the entry leaves the table; forget(ids)
drops it then (Engine.remove_ids, the only way out, calls it), so an id reused by
another connection is looked up afresh. IN keys of live entries are unique, so a
remembered IN hit stays right while its entry lives. OUT keys need not be (two
services may share a real server), and an insert may put an equal key ahead in the
probe order or rebuild the index, so the OUT memo starts afresh after any insert
(valid_out_hits, given the count of inserts so far). Each dict starts afresh once it
holds MEMO_MAX entries, so memory stays bounded however many flows pass.

The dicts are cleared in place, never rebound: FastPath binds them once and probes
them with plain dict.get in its per-packet loop.

What it does not do: look anything up (FastPath calls ConnTable's scalar lookups and
hands the results in), decide which frames are eligible, or write a packet; the
rewrite itself, with these sums, is FastPath.process's. Its values are only ever a
cache: the vector path (engine.py) neither reads nor needs them.

Mirrors: nothing in IPVS (the kernel looks every packet up); the sums are RFC 1624's
eqn 3 as in nat.py and checksum.py.
"""

from __future__ import annotations

MEMO_MAX = 1 << 16
"""Entries per dict before it starts afresh."""


class LookupMemo:
    """Lookups and rewrite sums remembered per live connection (see the module docstring).

    `views` is ConnTable.views(): the key columns nat_of reads (vaddr, vport, daddr,
    dport), memoryviews of arrays written in place only."""

    def __init__(self, views) -> None:
        self._vaddr, self._vport, self._daddr, self._dport = (views[n] for n in (
            "vaddr", "vport", "daddr", "dport"))
        self.in_hits: dict[tuple, tuple] = {}     # IN key → (id, inbound NAT)
        self.in_key_of: dict[int, tuple] = {}     # id → IN key
        self.out_hits: dict[tuple, int] = {}      # OUT key → id
        self.out_key_of: dict[int, tuple] = {}    # id → OUT key
        self.nat_out: dict[int, tuple] = {}       # id → outbound NAT
        self._inserts = -1                        # inserts counted when out_hits was valid

    def remember_in(self, key: tuple, c: int) -> tuple | None:
        """Memoise an IN lookup's hit (c >= 0) with its inbound NAT; None for a miss."""
        if c < 0:
            return None
        in_hits = self.in_hits
        if len(in_hits) >= MEMO_MAX:
            in_hits.clear()
            self.in_key_of.clear()
        hit = in_hits[key] = (c, self.nat_of(c, True))
        self.in_key_of[c] = key
        return hit

    def valid_out_hits(self, inserts: int) -> dict:
        """out_hits, emptied first if an entry went into the table since last time;
        `inserts` counts every insert so far (len(table) + entries removed)."""
        if inserts != self._inserts:
            self.out_hits.clear()
            self.out_key_of.clear()
            self._inserts = inserts
        return self.out_hits

    def remember_out(self, key: tuple, c: int) -> int:
        """Memoise an OUT lookup's hit (c >= 0); returns c."""
        if c >= 0:
            out_hits = self.out_hits
            if len(out_hits) >= MEMO_MAX:
                out_hits.clear()
                self.out_key_of.clear()
            out_hits[key] = c
            self.out_key_of[c] = key
        return c

    def nat_of(self, c: int, inbound: bool) -> tuple:
        """Connection c's rewrite: (new address, new port, m, m_l4) with RFC 1624 eqn 3,
        HC' = ~(~HC + ~old + new), summed over the changed 16-bit words: m over the
        address (the IP header checksum, and the L4 one through the pseudo-header), m_l4
        over the address and the port. Inbound packets go VIP:vport → server:dport, replies
        server:dport → VIP:vport (the lookups found them by those very fields). An
        outbound one is remembered in nat_out; an inbound one goes with its IN hit."""
        vaddr, vport, daddr, dport = self._vaddr[c], self._vport[c], self._daddr[c], self._dport[c]
        old_addr, old_port, new_addr, new_port = ((vaddr, vport, daddr, dport) if inbound
                                                  else (daddr, dport, vaddr, vport))
        m = 0x1FFFE - (old_addr >> 16) - (old_addr & 0xFFFF) + (new_addr >> 16) \
            + (new_addr & 0xFFFF)
        nat = (new_addr, new_port, m, m + 0xFFFF - old_port + new_port)
        if not inbound:
            nat_out = self.nat_out
            if len(nat_out) >= MEMO_MAX:
                nat_out.clear()
            nat_out[c] = nat
        return nat

    def forget(self, ids) -> None:
        """Entries `ids` (an integer array) left the table: drop what is remembered of
        them, so that an id reused by another connection is looked up."""
        in_hits, in_key_of, out_hits, out_key_of, nat_out = (
            self.in_hits, self.in_key_of, self.out_hits, self.out_key_of, self.nat_out)
        if not (in_key_of or out_key_of or nat_out):
            return
        for c in ids.tolist():
            key = in_key_of.pop(c, None)
            if key is not None:
                del in_hits[key]
            key = out_key_of.pop(c, None)
            if key is not None:
                del out_hits[key]
            nat_out.pop(c, None)
