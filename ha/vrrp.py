"""VRRPv3 advertisements for IPv4: encode and decode, with the pseudo-header checksum.

What it does: turns an `Advert` into the 8 + 4n byte VRRP message (or the whole
IPv4 datagram) and back, checking every field RFC 5798 §7.1 asks a receiver to
check. Every malformed input raises `VrrpError` carrying a `VrrpDropReason`;
nothing else escapes `decode`/`decode_ip`, whatever the bytes.

What it does not do: open sockets, keep state, or decide anything (ha/fsm.py
decides; ha/net.py sends). No IPv6 and no VRRPv2 (its authentication is
deprecated, and keepalived's v3 mode interoperates).

Mirrors: RFC 5798 §5 (packet), §5.2.8 and keepalived/FRR/scapy for the IPv4
pseudo-header checksum (the RFC text points at the IPv6 one; every IPv4
implementation uses src|dst|0|112|len), §5.1.1.3 for TTL 255.

Wire layout (RFC 5798 §5.1, big-endian)::

    byte 0  version(4)=3 | type(4)=1
    byte 1  vrid          1..255
    byte 2  priority      0 = master stopping, 255 = address owner
    byte 3  count         number of IPv4 addresses, >= 1
    byte 4  rsvd(4)=0 | max_advert_int_cs(12)   centiseconds, 1..4095
    byte 6  checksum      ones' complement over pseudo-header + message
    byte 8  addresses     4 bytes each
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address

IPPROTO_VRRP = 112
VRRP_GROUP4 = IPv4Address("224.0.0.18")
VRRP_TTL = 255                  # RFC 5798 §5.1.1.3: send 255, drop anything else
VRRP_TOS = 0xC0                 # what keepalived sends (network control); not checked
VRRP_VERSION = 3
VRRP_TYPE_ADVERTISEMENT = 1
HEADER_LEN = 8
MAX_ADVERT_INT_CS = 0x0FFF      # 12-bit field
_HDR = struct.Struct("!BBBBHH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")


class VrrpDropReason(IntEnum):
    """Why a received advertisement was discarded (values are stable counter indexes)."""

    TRUNCATED = 1        # shorter than the VRRP header / IPv4 header
    BAD_VERSION = 2      # VRRP version is not 3
    BAD_TYPE = 3         # type is not ADVERTISEMENT
    BAD_VRID = 4         # VRID 0
    BAD_COUNT = 5        # address count 0
    BAD_LENGTH = 6       # length differs from 8 + 4 * count
    BAD_INTERVAL = 7     # Max Adver Int 0
    BAD_CHECKSUM = 8     # pseudo-header checksum does not verify
    BAD_IP_HEADER = 9    # not IPv4, bad IHL or total length
    FRAGMENT = 10        # fragmented datagram (adverts are never fragmented)
    BAD_PROTOCOL = 11    # IP protocol is not 112
    BAD_TTL = 12         # TTL is not 255 (RFC 5798 §7.1: MUST discard)
    BAD_DADDR = 13       # destination is not the expected group or peer
    BAD_IP_CHECKSUM = 14  # IPv4 header checksum does not verify


class VrrpError(ValueError):
    """A received VRRP message or datagram that must be dropped; `reason` says why."""

    def __init__(self, reason: VrrpDropReason, detail: str = "") -> None:
        super().__init__(f"{reason.name.lower()}: {detail}" if detail else reason.name.lower())
        self.reason = reason
        self.detail = detail


def _addr(value: IPv4Address | str | int) -> IPv4Address:
    return value if isinstance(value, IPv4Address) else IPv4Address(value)


@dataclass(frozen=True)
class Advert:
    """One VRRPv3 ADVERTISEMENT as the state machine sees it."""

    vrid: int
    """Virtual router id, 1..255."""
    priority: int
    """0 = the master is stopping; 1..254 backup priorities; 255 = address owner."""
    max_advert_int_cs: int
    """Sender's advertisement interval in centiseconds, 1..4095 (RFC default 100)."""
    addrs: tuple[IPv4Address, ...]
    """The virtual addresses, at least one (str accepted, stored as IPv4Address)."""
    saddr: IPv4Address = field(default=IPv4Address(0))
    """Sender's primary address (IP source); the tie-break on equal priority."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "addrs", tuple(_addr(a) for a in self.addrs))
        object.__setattr__(self, "saddr", _addr(self.saddr))
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid {self.vrid} not in 1..255")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority} not in 0..255")
        if not 1 <= self.max_advert_int_cs <= MAX_ADVERT_INT_CS:
            raise ValueError(f"max_advert_int_cs {self.max_advert_int_cs} not in 1..4095")
        if not 1 <= len(self.addrs) <= 255:
            raise ValueError(f"{len(self.addrs)} addresses; VRRP carries 1..255")


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071 16-bit ones' complement sum of `data` (odd length padded with a zero byte)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _pseudo_header(saddr: IPv4Address, daddr: IPv4Address, length: int) -> bytes:
    # RFC 5798 §5.2.8 read with the IPv4 pseudo-header, as keepalived, FRR and scapy do.
    return saddr.packed + daddr.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)


def checksum(message: bytes, saddr: IPv4Address | str, daddr: IPv4Address | str = VRRP_GROUP4) -> int:
    """Checksum for `message` whose checksum field (bytes 6-7) is zero."""
    pseudo = _pseudo_header(_addr(saddr), _addr(daddr), len(message))
    return ~ones_complement_sum(pseudo + message) & 0xFFFF


def encode(adv: Advert, daddr: IPv4Address | str = VRRP_GROUP4) -> bytes:
    """The VRRP message (no IP header) with its checksum, sourced from adv.saddr."""
    ver_type = (VRRP_VERSION << 4) | VRRP_TYPE_ADVERTISEMENT
    head = _HDR.pack(ver_type, adv.vrid, adv.priority, len(adv.addrs), adv.max_advert_int_cs, 0)
    body = head + b"".join(a.packed for a in adv.addrs)
    csum = checksum(body, adv.saddr, daddr)
    return body[:6] + struct.pack("!H", csum) + body[8:]


def decode(message: bytes, saddr: IPv4Address | str,
           daddr: IPv4Address | str = VRRP_GROUP4) -> Advert:
    """Parse and verify a VRRP message received from `saddr` to `daddr`; raises VrrpError."""
    if len(message) < HEADER_LEN:
        raise VrrpError(VrrpDropReason.TRUNCATED, f"{len(message)} bytes")
    ver_type, vrid, priority, count, rsvd_int, _ = _HDR.unpack_from(message)
    if ver_type >> 4 != VRRP_VERSION:
        raise VrrpError(VrrpDropReason.BAD_VERSION, str(ver_type >> 4))
    if ver_type & 0x0F != VRRP_TYPE_ADVERTISEMENT:
        raise VrrpError(VrrpDropReason.BAD_TYPE, str(ver_type & 0x0F))
    if vrid == 0:
        raise VrrpError(VrrpDropReason.BAD_VRID, "0")
    if count == 0:
        raise VrrpError(VrrpDropReason.BAD_COUNT, "0")
    if len(message) != HEADER_LEN + 4 * count:
        raise VrrpError(VrrpDropReason.BAD_LENGTH, f"{len(message)} bytes for {count} addresses")
    interval_cs = rsvd_int & MAX_ADVERT_INT_CS    # Rsvd ignored on receive (§5.2.5)
    if interval_cs == 0:
        raise VrrpError(VrrpDropReason.BAD_INTERVAL, "0")
    saddr, daddr = _addr(saddr), _addr(daddr)
    if ones_complement_sum(_pseudo_header(saddr, daddr, len(message)) + message) != 0xFFFF:
        raise VrrpError(VrrpDropReason.BAD_CHECKSUM)
    addrs = tuple(IPv4Address(message[i:i + 4]) for i in range(HEADER_LEN, len(message), 4))
    return Advert(vrid, priority, interval_cs, addrs, saddr)


def encode_ip(adv: Advert, daddr: IPv4Address | str = VRRP_GROUP4, ident: int = 0) -> bytes:
    """The whole IPv4 datagram: TTL 255, protocol 112, TOS 0xc0, DF clear (as keepalived)."""
    daddr = _addr(daddr)
    payload = encode(adv, daddr)
    header = _IPV4.pack(0x45, VRRP_TOS, 20 + len(payload), ident & 0xFFFF, 0,
                        VRRP_TTL, IPPROTO_VRRP, 0, adv.saddr.packed, daddr.packed)
    hsum = ~ones_complement_sum(header) & 0xFFFF
    return header[:10] + struct.pack("!H", hsum) + header[12:] + payload


def decode_ip(datagram: bytes, expect_daddr: IPv4Address | str | None = VRRP_GROUP4) -> Advert:
    """Parse an IPv4 datagram carrying VRRP (RFC 5798 §7.1 checks); raises VrrpError.

    `expect_daddr=None` accepts any destination (unicast peers); the checksum always
    uses the datagram's real destination, as keepalived >= 1.3.6 does.
    """
    if len(datagram) < 20:
        raise VrrpError(VrrpDropReason.TRUNCATED, f"{len(datagram)} bytes of IPv4")
    vihl, _tos, total, _id, frag, ttl, proto, _sum, src, dst = _IPV4.unpack_from(datagram)
    ihl_bytes = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl_bytes < 20 or not ihl_bytes <= total <= len(datagram):
        raise VrrpError(VrrpDropReason.BAD_IP_HEADER, f"version/ihl {vihl:#x}, total {total}")
    if ones_complement_sum(datagram[:ihl_bytes]) != 0xFFFF:
        raise VrrpError(VrrpDropReason.BAD_IP_CHECKSUM)
    if frag & 0x3FFF:                                   # MF or a fragment offset
        raise VrrpError(VrrpDropReason.FRAGMENT)
    if proto != IPPROTO_VRRP:
        raise VrrpError(VrrpDropReason.BAD_PROTOCOL, str(proto))
    if ttl != VRRP_TTL:
        raise VrrpError(VrrpDropReason.BAD_TTL, str(ttl))
    daddr = IPv4Address(dst)
    if expect_daddr is not None and daddr != _addr(expect_daddr):
        raise VrrpError(VrrpDropReason.BAD_DADDR, str(daddr))
    return decode(datagram[ihl_bytes:total], IPv4Address(src), daddr)
