"""ICMP errors about NAT'd connections, one packet at a time (spec/ipvs.md §3.9).

Mirrors ip_vs_in_icmp / ip_vs_out_icmp: the quoted header is looked up with
source and destination swapped. From a client (quoting our reply VIP → client):
found by the inbound lookup, sent on to the real server. From a real server
(quoting the packet we forwarded client → server): found by the outbound
lookup, sent on to the client as if from the VIP. ICMP with no matching
connection passes unmodified unless it is addressed to a VIP (writing that back
would loop through the TUN), which is dropped and counted. Rare packets, so
plain Python; the rewriting itself is icmp.py's.
"""

from __future__ import annotations

from userlb import icmp
from userlb.drops import DropReason


def handle_icmp(engine, batch, h, row: int, now: float) -> int:
    """Rewrite ICMP frame `row` in place when it is about one of our connections.

    Returns the DropReason (OK = write the frame out)."""
    to_vip = bool(engine.index.is_vip(h.daddr[row : row + 1])[0])
    if int(h.icmp_type[row]) not in icmp.RELATED_TYPES:
        return DropReason.ICMP_NOT_RELATED if to_vip else DropReason.OK
    quote = icmp.parse_error(batch.buf[row], int(batch.length[row]), int(h.ihl[row]))
    if isinstance(quote, DropReason):
        # Unusable or bad-checksum errors not addressed to a VIP are not provably about
        # our connections: pass them on untouched, as the kernel does for unknown flows.
        return quote if to_vip else DropReason.OK
    t = engine.table
    # From the client side: the quoted packet is our reply VIP:vport → client:cport.
    ids = t.lookup_in([quote.proto], [quote.daddr], [quote.dport], [quote.saddr], [quote.sport])
    if ids[0] >= 0 and t.dest[ids[0]] >= 0:
        c = int(ids[0])
        icmp.rewrite_from_client(batch.buf[row], int(batch.length[row]), int(h.ihl[row]),
                                 int(t.daddr[c]), int(t.dport[c]))
        return DropReason.OK
    # From a real server: the quoted packet is client:cport → RS:dport we forwarded.
    ids = t.lookup_out([quote.proto], [quote.daddr], [quote.dport], [quote.saddr], [quote.sport])
    if ids[0] >= 0:
        c = int(ids[0])
        icmp.rewrite_from_server(batch.buf[row], int(batch.length[row]), int(h.ihl[row]),
                                 int(t.vaddr[c]), int(t.vport[c]))
        return DropReason.OK
    return DropReason.ICMP_NOT_RELATED if to_vip else DropReason.OK
