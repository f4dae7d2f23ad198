"""LVS-NAT address/port rewrite of TCP and UDP rows of a FrameBatch, in place.

What it does: `rewrite_dst` (DNAT, inbound client→VIP:vport becomes
client→RS:dport) and `rewrite_src` (SNAT, outbound RS:dport→client becomes
VIP:vport→client), or `rewrite` for rows of both kinds at once, write the new
address and port and patch the IPv4 header checksum and the TCP/UDP checksum
with RFC 1624 incremental updates, for many rows at once with a fixed number of
numpy operations. Each rewritten row's `batch.length` is set to its IPv4 total
length: trailing bytes past the datagram are not written out.

Rows the TUN flagged NEEDS_CSUM (offload, `batch.vnet`; spec/perf.md A1) hold in
the L4 checksum field the folded, uncomplemented pseudo-header sum that the kernel
completes later: an address change updates it as P' = fold(P + ~old + new) with no
final complement, a port change leaves it alone (it is not in the pseudo-header),
and no UDP checksum is filled in; the IPv4 header checksum is updated as always.
This is inet_proto_csum_replace4/2 on a CHECKSUM_PARTIAL skb.

What it does not do: touch the TTL (the kernel's forwarding around the TUN
decrements it), verify checksums (a bad L4 checksum stays exactly as bad), handle
ICMP (icmp.py), update the `Headers` columns (they keep describing the packet as
received), or decide which rows to rewrite (the engine does).

Mirrors: ip_vs_nat_xmit + tcp_dnat_handler/tcp_snat_handler and
udp_dnat_handler/udp_snat_handler (net/netfilter/ipvs/ip_vs_proto_{tcp,udp}.c):
incremental L4 update via the pseudo-header, except UDP with checksum 0, where
IPVS computes a full checksum and sends a computed 0 as 0xFFFF (RFC 768).
"""

from __future__ import annotations

import numpy as np

from . import checksum
from .frames import VNET_F_NEEDS_CSUM, FrameBatch
from .parse import Headers
from .services import IPPROTO_UDP

IP_CSUM_OFFSET = 10
IP_SADDR_OFFSET = 12
IP_DADDR_OFFSET = 16
TCP_CSUM_OFFSET = 16
UDP_CSUM_OFFSET = 6
UDP_LEN_OFFSET = 4
SPORT_OFFSET = 0
DPORT_OFFSET = 2
_PAIR = np.arange(2)


def rewrite_dst(batch: FrameBatch, rows, headers: Headers, new_daddr, new_dport) -> None:
    """DNAT `rows` (TCP/UDP, parsed OK): destination ← (new_daddr, new_dport), checksums patched."""
    rows = np.asarray(rows, dtype=np.intp)
    _rewrite(batch, rows, headers, IP_DADDR_OFFSET, DPORT_OFFSET, new_daddr, new_dport)


def rewrite_src(batch: FrameBatch, rows, headers: Headers, new_saddr, new_sport) -> None:
    """SNAT `rows` (TCP/UDP, parsed OK): source ← (new_saddr, new_sport), checksums patched."""
    rows = np.asarray(rows, dtype=np.intp)
    _rewrite(batch, rows, headers, IP_SADDR_OFFSET, SPORT_OFFSET, new_saddr, new_sport)


def rewrite(batch: FrameBatch, rows, headers: Headers, inbound, new_addr, new_port) -> None:
    """Both at once: DNAT the `inbound` rows, SNAT the others (one numpy pass, not two)."""
    rows = np.asarray(rows, dtype=np.intp)
    inbound = np.asarray(inbound, dtype=bool)
    _rewrite(batch, rows, headers, np.where(inbound, IP_DADDR_OFFSET, IP_SADDR_OFFSET),
             np.where(inbound, DPORT_OFFSET, SPORT_OFFSET), new_addr, new_port)


def _words(cols: np.ndarray) -> np.ndarray:
    """(n, 2k) bytes → (n, k) big-endian 16-bit words as uint32."""
    return (cols[:, 0::2].astype(np.uint32) << 8) | cols[:, 1::2]


def _rewrite(batch, rows, headers, addr_offset, port_offset, new_addr, new_port) -> None:
    """Shared DNAT/SNAT body: one gather of the 10 bytes involved, arithmetic, one scatter.
    `addr_offset` and `port_offset` are one value or one per row.

    Byte columns: IP checksum (2), address (4), port (2), L4 checksum (2). The old
    values come from the frame itself, so a row is only ever patched relative to
    what it holds.
    """
    if len(rows) == 0:
        return
    buf = batch.buf
    ihl = headers.ihl[rows].astype(np.intp)
    is_udp = headers.proto[rows] == IPPROTO_UDP
    l4_csum_at = ihl + np.where(is_udp, UDP_CSUM_OFFSET, TCP_CSUM_OFFSET)
    cols = np.empty((len(rows), 10), np.intp)
    cols[:, 0:2] = IP_CSUM_OFFSET + _PAIR
    cols[:, 2:6] = np.reshape(addr_offset, (-1, 1)) + np.arange(4)
    cols[:, 6:8] = (ihl + port_offset)[:, None] + _PAIR
    cols[:, 8:10] = l4_csum_at[:, None] + _PAIR
    row_idx = rows[:, None]
    old = _words(buf[row_idx, cols])                 # (n, 5): ip csum, addr hi, addr lo, port, l4 csum
    new = np.empty_like(old)
    new[:, 1] = np.asarray(new_addr, dtype=np.uint32) >> 16
    new[:, 2] = np.asarray(new_addr, dtype=np.uint32) & 0xFFFF
    new[:, 3] = np.asarray(new_port, dtype=np.uint32) & 0xFFFF
    # IPv4 header checksum covers the address; the TCP/UDP checksum covers it through the
    # pseudo-header, plus the port. RFC 1624 eqn 3 on 2 and 3 words respectively.
    new[:, 0] = checksum.adjust(old[:, 0], old[:, 1:3], new[:, 1:3])
    new[:, 4] = checksum.adjust(old[:, 4], old[:, 1:4], new[:, 1:4])
    new[:, 4] = np.where(is_udp & (new[:, 4] == 0), 0xFFFF, new[:, 4])   # RFC 768: 0 is sent as all ones
    partial = None if batch.vnet is None else (batch.vnet[rows, 0] & VNET_F_NEEDS_CSUM) != 0
    if partial is not None and partial.any():
        # CHECKSUM_PARTIAL: P' = fold(P + ~old + new) over the address words only, i.e.
        # ~adjust(~P, old, new); the port is not part of the pseudo-header sum
        p_new = ~checksum.adjust(~old[partial, 4] & 0xFFFF, old[partial, 1:3],
                                 new[partial, 1:3]) & 0xFFFF
        new[partial, 4] = p_new
    out = np.empty((len(rows), 10), np.uint8)
    out[:, 0::2] = new >> 8
    out[:, 1::2] = new & 0xFF
    buf[row_idx, cols] = out
    batch.length[rows] = headers.total_len[rows]

    no_csum = is_udp & (old[:, 4] == 0)              # UDP "no checksum": IPVS fills one in
    if partial is not None:
        no_csum &= ~partial                          # a partial sum is not "no checksum"
    if no_csum.any():
        _fill_udp_checksums(batch, rows[no_csum], headers)


def _fill_udp_checksums(batch: FrameBatch, rows: np.ndarray, headers: Headers) -> None:
    """Full UDP checksum for rows sent without one (rare: per-row slow path).

    As udp_snat_handler/udp_dnat_handler when uh->check == 0: a full
    csum_tcpudp_magic over the datagram, CSUM_MANGLED_0 (0xFFFF) if it comes out 0.
    """
    for row in rows.tolist():
        ihl = int(headers.ihl[row])
        frame = batch.buf[row]
        udp_len = (int(frame[ihl + UDP_LEN_OFFSET]) << 8) | int(frame[ihl + UDP_LEN_OFFSET + 1])
        frame[ihl + UDP_CSUM_OFFSET: ihl + UDP_CSUM_OFFSET + 2] = 0
        pseudo = bytes(frame[IP_SADDR_OFFSET: IP_SADDR_OFFSET + 8]) + \
            bytes((0, IPPROTO_UDP)) + udp_len.to_bytes(2, "big")        # RFC 768 pseudo-header
        value = checksum.full(pseudo + bytes(frame[ihl: ihl + udp_len])) or 0xFFFF
        frame[ihl + UDP_CSUM_OFFSET] = value >> 8
        frame[ihl + UDP_CSUM_OFFSET + 1] = value & 0xFF
