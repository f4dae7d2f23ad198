"""Vectorised IPv4 + TCP/UDP/ICMP header parser over a FrameBatch.

What it does: `parse_ipv4(batch)` reads the fixed-offset fields of every row in
one pass of numpy column operations (no Python loop per packet, no objects per
packet) and gives every row either a DropReason or a set of header columns.
`l4_checksum_ok` verifies full TCP/UDP/ICMP checksums, for tests and a strict mode.

What it does not do: verify L4 checksums on the normal path (the incremental NAT
update carries a bad checksum through, so the end host still rejects the
segment, as the kernel's forwarding does), reassemble fragments, interpret IP
or TCP options, or decide anything about services or connections.

Mirrors: the header sanity checks of ip_rcv_core() (net/ipv4/ip_input.c) plus
the L4 header checks of tcp_v4_rcv / __udp4_lib_rcv, and the "first applicable
reason wins" ordering documented on DropReason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import checksum
from .drops import DropReason
from .frames import FrameBatch
from .services import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP

IPV4_MIN_HEADER_BYTES = 20
IPV4_MAX_HEADER_BYTES = 60
TCP_MIN_HEADER_BYTES = 20
UDP_HEADER_BYTES = 8
ICMP_HEADER_BYTES = 8
_WINDOW_BYTES = IPV4_MAX_HEADER_BYTES + TCP_MIN_HEADER_BYTES   # every byte parse_ipv4 looks at

IP_MF = 0x2000           # RFC 791 flags: bit 2 "more fragments"
IP_OFFSET_MASK = 0x1FFF  # fragment offset, in 8-byte units

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = (1 << i for i in range(8))


@dataclass
class Headers:
    """Parsed header columns, one entry per batch row 0..count-1.

    Rows with `drop != 0` have unspecified field values (the parser reads the first
    80 bytes of every row, stale bytes past `length` included, and lets the drop
    reason decide what counts). `sport`/`dport` are 0 unless TCP/UDP, `tcp_flags` 0 unless TCP,
    `icmp_type`/`icmp_code` 0 unless ICMP. Addresses are host-order uint32.
    """

    drop: np.ndarray        # uint8 DropReason, 0 = OK
    ihl: np.ndarray         # int32, IP header length in BYTES (= offset of the L4 header)
    total_len: np.ndarray   # int32, IPv4 total length in bytes
    proto: np.ndarray       # uint8
    saddr: np.ndarray       # uint32
    daddr: np.ndarray       # uint32
    sport: np.ndarray       # uint16
    dport: np.ndarray       # uint16
    tcp_flags: np.ndarray   # uint8, FIN 0x01 .. CWR 0x80
    icmp_type: np.ndarray   # uint8
    icmp_code: np.ndarray   # uint8

    def __len__(self) -> int:
        return len(self.drop)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of rows that parsed cleanly."""
        return self.drop == DropReason.OK


def _window(batch: FrameBatch, n: int, width: int) -> np.ndarray:
    """The first `width` bytes of rows 0..n-1 (a view; zero-padded copy if snaplen < width)."""
    if batch.snaplen >= width:
        return batch.buf[:n, :width]
    out = np.zeros((n, width), np.uint8)
    out[:, : batch.snaplen] = batch.buf[:n]
    return out


def _be16(cols: np.ndarray) -> np.ndarray:
    """Big-endian 16-bit values from an (n, 2) uint8 slice, as int32."""
    return (cols[:, 0].astype(np.int32) << 8) | cols[:, 1]


def _ip_header_sum_ok(words: np.ndarray, ihl_bytes: np.ndarray) -> np.ndarray:
    """RFC 1071 verify: the folded sum of the header's ihl/2 words (checksum included) is 0xFFFF."""
    mask = np.arange(IPV4_MAX_HEADER_BYTES // 2) < (ihl_bytes[:, None] >> 1)
    total = (words[:, : IPV4_MAX_HEADER_BYTES // 2] * mask).sum(axis=1, dtype=np.uint32)  # < 2**21
    return checksum.fold32(total) == 0xFFFF


def _l4_words(words: np.ndarray, ihl_bytes: np.ndarray) -> np.ndarray:
    """The first 10 words (20 bytes) after the IP header of every row; ihl clipped into range.
    IHL counts 4-byte units, so the L4 header always starts on a word boundary."""
    start = np.clip(ihl_bytes, IPV4_MIN_HEADER_BYTES, IPV4_MAX_HEADER_BYTES) >> 1
    return np.take_along_axis(words, start[:, None] + np.arange(TCP_MIN_HEADER_BYTES // 2), axis=1)


# Checked in this order; the first that applies is the row's reason (DropReason's documented order).
_REASON_ORDER = np.array([DropReason.OVERSIZE, DropReason.TRUNCATED, DropReason.BAD_VERSION,
                          DropReason.BAD_IHL, DropReason.BAD_TOTAL_LENGTH, DropReason.BAD_IP_CHECKSUM,
                          DropReason.FRAGMENT, DropReason.UNKNOWN_PROTOCOL, DropReason.TRUNCATED,
                          DropReason.BAD_L4_HEADER, DropReason.OK], dtype=np.uint8)


def _drop_reasons(length, snaplen, version, ihl_bytes, total_len, csum_ok, frag, proto,
                  l4_len, l4_bad) -> np.ndarray:
    """First applicable reason per row: argmax over a (checks + 1, n) table whose last row,
    always true, stands for OK (cheaper than np.select's per-condition copies)."""
    is_tcp, is_udp, is_icmp = proto == IPPROTO_TCP, proto == IPPROTO_UDP, proto == IPPROTO_ICMP
    need = np.where(is_tcp, TCP_MIN_HEADER_BYTES, UDP_HEADER_BYTES)    # UDP and ICMP both need 8
    checks = np.empty((len(_REASON_ORDER), len(length)), dtype=bool)
    checks[0] = length >= snaplen                                      # the read may have been cut
    checks[1] = length < IPV4_MIN_HEADER_BYTES
    checks[2] = version != 4
    checks[3] = (ihl_bytes < IPV4_MIN_HEADER_BYTES) | (ihl_bytes > length)
    checks[4] = (total_len < ihl_bytes) | (total_len > length)         # trailing bytes are fine
    checks[5] = ~csum_ok
    checks[6] = frag
    checks[7] = ~(is_tcp | is_udp | is_icmp)
    checks[8] = l4_len < need
    checks[9] = l4_bad
    checks[10] = True
    return _REASON_ORDER[checks.argmax(axis=0)]


def parse_ipv4(batch: FrameBatch) -> Headers:
    """Parse rows 0..batch.count-1. Never raises on row contents; see Headers."""
    n = batch.count
    win = _window(batch, n, _WINDOW_BYTES)
    words = (win[:, 0::2].astype(np.uint32) << 8) | win[:, 1::2]     # (n, 40) big-endian 16-bit words
    length = batch.length[:n].astype(np.int32)
    ihl_bytes = (win[:, 0] & 0x0F).astype(np.int32) << 2
    total_len = words[:, 1].astype(np.int32)
    proto = win[:, 9].copy()
    is_tcp, is_udp, is_icmp = proto == IPPROTO_TCP, proto == IPPROTO_UDP, proto == IPPROTO_ICMP
    l4 = _l4_words(words, ihl_bytes)               # word 0 sport/type+code, 1 dport, 2 ulen, 6 doff+flags
    l4_len = total_len - ihl_bytes
    tcp_doff_bytes = (l4[:, 6] >> 12).astype(np.int32) << 2
    udp_len = l4[:, 2].astype(np.int32)
    l4_bad = (is_tcp & ((tcp_doff_bytes < TCP_MIN_HEADER_BYTES) | (tcp_doff_bytes > l4_len))) | \
             (is_udp & ((udp_len < UDP_HEADER_BYTES) | (udp_len > l4_len)))
    drop = _drop_reasons(length, batch.snaplen, win[:, 0] >> 4, ihl_bytes, total_len,
                         _ip_header_sum_ok(words, ihl_bytes),
                         (words[:, 3] & (IP_MF | IP_OFFSET_MASK)) != 0, proto, l4_len, l4_bad)
    has_ports = is_tcp | is_udp
    return Headers(
        drop=drop, ihl=ihl_bytes, total_len=total_len, proto=proto,
        saddr=(words[:, 6] << 16) | words[:, 7], daddr=(words[:, 8] << 16) | words[:, 9],
        sport=(l4[:, 0] * has_ports).astype(np.uint16), dport=(l4[:, 1] * has_ports).astype(np.uint16),
        tcp_flags=((l4[:, 6] & 0xFF) * is_tcp).astype(np.uint8),
        icmp_type=((l4[:, 0] >> 8) * is_icmp).astype(np.uint8),
        icmp_code=((l4[:, 0] & 0xFF) * is_icmp).astype(np.uint8),
    )


def l4_checksum_ok(batch: FrameBatch, headers: Headers, rows) -> np.ndarray:
    """Full L4 checksum check for `rows` (parsed OK): TCP/UDP with the RFC 793/768 pseudo-header,
    ICMP without one. A UDP checksum of 0 means "none" and counts as OK. Other protocols → False.

    UDP covers the UDP length field's span (as __udp4_lib_rcv trims to it), TCP
    total_len - ihl. Cost is O(rows × snaplen); not for the fast path.
    """
    rows = np.asarray(rows, dtype=np.intp)
    proto = headers.proto[rows]
    start = headers.ihl[rows]
    buf = batch.buf[rows]
    at = np.minimum(start[:, None] + np.arange(UDP_HEADER_BYTES), batch.snaplen - 1)
    l4_0 = buf[np.arange(len(rows))[:, None], at]                 # first 8 L4 bytes
    udp_len = _be16(l4_0[:, 4:6])
    span = np.where(proto == IPPROTO_UDP, udp_len, headers.total_len[rows] - start)
    col = np.arange(batch.snaplen)
    inside = (col >= start[:, None]) & (col < (start + span)[:, None])
    data = (buf * inside).astype(np.uint64)
    if batch.snaplen & 1:
        data = np.concatenate([data, np.zeros((len(rows), 1), np.uint64)], axis=1)
    words = (data[:, 0::2] << 8) | data[:, 1::2]                 # ihl is even: L4 words stay aligned
    saddr, daddr = headers.saddr[rows].astype(np.uint64), headers.daddr[rows].astype(np.uint64)
    pseudo = (saddr >> 16) + (saddr & 0xFFFF) + (daddr >> 16) + (daddr & 0xFFFF) + \
        proto.astype(np.uint64) + span.astype(np.uint64)        # RFC 793 §3.1 pseudo-header
    pseudo *= (proto != IPPROTO_ICMP)
    folded = checksum.fold_wide(words.sum(axis=1, dtype=np.uint64) + pseudo)
    udp_none = (proto == IPPROTO_UDP) & (l4_0[:, 6] == 0) & (l4_0[:, 7] == 0)
    known = (proto == IPPROTO_TCP) | (proto == IPPROTO_UDP) | (proto == IPPROTO_ICMP)
    return known & ((folded == 0xFFFF) | udp_none)
