"""ICMP errors about NAT'd connections: parse the quote, rewrite both layers, originate one.

What it does: `parse_error` checks that an ICMPv4 error of a related type (3, 4,
11) quotes a usable TCP/UDP header and has a good checksum, and returns the
quoted flow. `rewrite_from_client` / `rewrite_from_server` apply the NAT to the
outer header and, mirrored, to the quoted header, then recompute the quoted IP,
ICMP and outer IP checksums. `build_dest_unreachable` makes the port-unreachable
IPVS sends when no real server is available. Per-packet Python: ICMP errors are
rare, so this file favours plainness over numpy.

What it does not do: look up connections (the engine does, with the quote's
addresses swapped), adjust the quoted L4 checksum (the kernel does not either),
decrement TTL, or decide whether an error may be sent (never about an ICMP
error, a non-first fragment or a broadcast: RFC 1122 §3.2.2; the caller checks).

Mirrors: ip_vs_in_icmp / ip_vs_out_icmp / ip_vs_nat_icmp (ip_vs_core.c) and the
quote rules of RFC 792; ip_vs_leave → icmp_send(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import checksum
from .drops import DropReason
from .services import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP

ICMP_DEST_UNREACH = 3
ICMP_SOURCE_QUENCH = 4
ICMP_TIME_EXCEEDED = 11
ICMP_PORT_UNREACH = 3
RELATED_TYPES = (ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_TIME_EXCEEDED)   # as ip_vs_in_icmp

ICMP_HEADER_BYTES = 8
QUOTED_L4_BYTES = 8          # RFC 792: the quote holds the IP header + 64 bits of data
IPV4_MIN_HEADER_BYTES = 20
ICMP_ERROR_TTL = 64
IPTOS_TOS_MASK = 0x1E
IPTOS_PREC_INTERNETCONTROL = 0xC0


@dataclass(frozen=True)
class IcmpQuote:
    """A related ICMP error and the flow of the datagram it quotes (addresses host-order u32)."""

    icmp_type: int
    icmp_code: int
    proto: int      # quoted protocol: TCP or UDP
    saddr: int      # quoted source address
    sport: int
    daddr: int      # quoted destination address
    dport: int
    ihl: int        # quoted IP header length in bytes


def _get16(row, offset: int) -> int:
    return (int(row[offset]) << 8) | int(row[offset + 1])


def _get32(row, offset: int) -> int:
    return (_get16(row, offset) << 16) | _get16(row, offset + 2)


def _put16(row, offset: int, value: int) -> None:
    row[offset] = (value >> 8) & 0xFF
    row[offset + 1] = value & 0xFF


def _put32(row, offset: int, value: int) -> None:
    _put16(row, offset, (value >> 16) & 0xFFFF)
    _put16(row, offset + 2, value & 0xFFFF)


def _refresh(row, start: int, end: int, csum_offset: int) -> None:
    """Recompute the RFC 1071 checksum at row[csum_offset] over row[start:end]."""
    _put16(row, csum_offset, 0)
    _put16(row, csum_offset, checksum.full(np.asarray(row[start:end], dtype=np.uint8)))


def _quote_problem(row, total_len: int, ihl: int) -> bool:
    """True if the quoted header is unusable: not IPv4, bad IHL, too short, not TCP/UDP, or a
    non-first fragment (no ports in it; ip_vs_in_icmp ignores those too)."""
    q = ihl + ICMP_HEADER_BYTES
    if q + IPV4_MIN_HEADER_BYTES > total_len:
        return True
    qihl = (int(row[q]) & 0x0F) * 4
    return (int(row[q]) >> 4 != 4 or qihl < IPV4_MIN_HEADER_BYTES
            or q + qihl + QUOTED_L4_BYTES > total_len
            or int(row[q + 9]) not in (IPPROTO_TCP, IPPROTO_UDP)
            or _get16(row, q + 6) & 0x1FFF != 0)


def parse_error(row: np.ndarray, length: int, ihl: int) -> IcmpQuote | DropReason:
    """Classify an ICMP datagram in `row` (outer header parsed OK, `ihl` in bytes).

    Checks in order: total length within `length` (else BAD_TOTAL_LENGTH; cannot
    happen after parse_ipv4), related type (else ICMP_NOT_RELATED), usable quote
    (else BAD_ICMP_QUOTE), ICMP checksum over total_len - ihl bytes (else
    BAD_ICMP_CHECKSUM). Never raises on row contents.
    """
    if len(row) < IPV4_MIN_HEADER_BYTES or not IPV4_MIN_HEADER_BYTES <= ihl <= 60:
        return DropReason.BAD_ICMP_QUOTE
    total_len = _get16(row, 2)
    if total_len > min(int(length), len(row)):           # parse_ipv4 already drops these
        return DropReason.BAD_TOTAL_LENGTH
    if ihl + ICMP_HEADER_BYTES > total_len:
        return DropReason.BAD_ICMP_QUOTE
    icmp_type, icmp_code = int(row[ihl]), int(row[ihl + 1])
    if icmp_type not in RELATED_TYPES:
        return DropReason.ICMP_NOT_RELATED
    if _quote_problem(row, total_len, ihl):
        return DropReason.BAD_ICMP_QUOTE
    if checksum.full(np.asarray(row[ihl:total_len], dtype=np.uint8)) != 0:
        return DropReason.BAD_ICMP_CHECKSUM
    q = ihl + ICMP_HEADER_BYTES
    qihl = (int(row[q]) & 0x0F) * 4
    return IcmpQuote(icmp_type=icmp_type, icmp_code=icmp_code, proto=int(row[q + 9]),
                     saddr=_get32(row, q + 12), sport=_get16(row, q + qihl),
                     daddr=_get32(row, q + 16), dport=_get16(row, q + qihl + 2), ihl=qihl)


def _rewrite(row, ihl: int, outer_addr_at: int, quoted_addr_at: int, quoted_port_at: int,
             addr: int, port: int) -> None:
    """Write addr into the outer and quoted header, port into the quote; refresh 3 checksums."""
    total_len = _get16(row, 2)
    q = ihl + ICMP_HEADER_BYTES
    qihl = (int(row[q]) & 0x0F) * 4
    _put32(row, outer_addr_at, addr)
    _put32(row, q + quoted_addr_at, addr)
    _put16(row, q + qihl + quoted_port_at, port)
    _refresh(row, q, q + qihl, q + 10)                  # quoted IP header checksum
    _refresh(row, ihl, total_len, ihl + 2)              # ICMP checksum, full (as ip_vs_nat_icmp)
    _refresh(row, 0, ihl, 10)                           # outer IP header checksum


def rewrite_from_client(row: np.ndarray, length: int, ihl: int, real_addr: int,
                        real_port: int) -> None:
    """Error from a client about a reply we sent (quote: VIP:vport → client:cport), in place.

    Outer daddr ← real server; quoted saddr ← real server; quoted sport ← real_port.
    Precondition: parse_error(row, length, ihl) returned an IcmpQuote.
    """
    _rewrite(row, ihl, 16, 12, 0, real_addr, real_port)


def rewrite_from_server(row: np.ndarray, length: int, ihl: int, vip: int, vport: int) -> None:
    """Error from a real server about a packet we forwarded (quote: client:cport → RS:dport).

    Outer saddr ← VIP; quoted daddr ← VIP; quoted dport ← vport. Same precondition.
    """
    _rewrite(row, ihl, 12, 16, 2, vip, vport)


def build_dest_unreachable(orig: bytes, src_addr: int, code: int = ICMP_PORT_UNREACH,
                           next_hop_mtu: int = 0) -> bytes:
    """ICMP destination unreachable from src_addr to orig's source, quoting orig's IP header
    + 8 bytes (RFC 792). TTL 64, TOS as Linux __icmp_send for errors, ID 0, no DF.

    `next_hop_mtu` fills the RFC 1191 field for code 4 (fragmentation needed).
    """
    if len(orig) < IPV4_MIN_HEADER_BYTES:
        raise ValueError("original datagram shorter than an IPv4 header")
    ihl = max((orig[0] & 0x0F) * 4, IPV4_MIN_HEADER_BYTES)
    quote = bytes(orig[: min(len(orig), ihl + QUOTED_L4_BYTES)])
    icmp = bytearray(bytes((ICMP_DEST_UNREACH, code, 0, 0, 0, 0)) + next_hop_mtu.to_bytes(2, "big"))
    icmp += quote
    _put16(icmp, 2, checksum.full(bytes(icmp)))
    tos = (orig[1] & IPTOS_TOS_MASK) | IPTOS_PREC_INTERNETCONTROL   # __icmp_send, error types
    header = bytearray(IPV4_MIN_HEADER_BYTES)
    header[0], header[1] = 0x45, tos
    _put16(header, 2, IPV4_MIN_HEADER_BYTES + len(icmp))
    header[8], header[9] = ICMP_ERROR_TTL, IPPROTO_ICMP
    _put32(header, 12, src_addr)
    header[16:20] = orig[12:16]
    _put16(header, 10, checksum.full(bytes(header)))
    return bytes(header + icmp)
