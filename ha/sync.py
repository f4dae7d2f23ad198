"""Connection synchronisation messages: the Linux IPVS sync protocol, version 1.

What it does: encodes a batch of connection entries into IPVS sync v1
datagrams (split to fit `maxlen_bytes`) and decodes them back, checking what
the kernel's ip_vs_process_message() checks. Malformed input raises `SyncError`
with a `SyncDropReason`; nothing else escapes `decode_message`.

What it does not do: sockets (224.0.0.81:8848, TTL 1, the edge's job), choosing
which connections to sync (sync_threshold), or applying entries to a table.

Why the kernel's v1 format rather than a native authenticated one:
  * It is fully specified (HA spec §5.2; net/netfilter/ipvs/ip_vs_sync.c) and
    carries everything a backup needs: protocol, the three address/port pairs,
    state, flags (templates, inactive), fwmark, remaining timeout, IPv6.
  * It interoperates: a userlb backup can learn from a kernel IPVS master
    (`ipvsadm --start-daemon master`) and the reverse, so an LVS pair can be
    migrated one node at a time, and existing operational knowledge applies.
  * The risk of no authentication is bounded and different from heartbeats: a
    forged entry can only pre-create connection entries on the backup (bounded
    by table size and timeouts, and the consumer drops entries whose vaddr is not
    a configured VIP); it cannot move VIPs. The heartbeat, which can, is
    authenticated (ha/heartbeat.py). Keep sync on a trusted link with TTL 1, as
    the kernel does; if it must cross untrusted links, protect it below (IPsec).
  * A native format would add a second protocol to document and test with no
    interop oracle; there is no kernel IPVS here to test against, so this module
    is held to the byte layout of §5.2 and to round trips.

Wire layout (big-endian). Header, 8 bytes: reserved 0 | syncid | size (whole
datagram) | nr_conns | version 1 | spare 0. Each entry: type (bit 0 = IPv6) |
protocol | ver_size (version 0 in the top 4 bits, entry length in the low 12) |
flags u32 | state u16 | cport | vport | dport | fwmark u32 | timeout u32 (s) |
caddr | vaddr | daddr (4 or 16 bytes each) | options TLV (type, len, data).
The next entry starts at the entry length rounded up to 4 (the kernel pads
before an entry, so the datagram's last entry is not padded).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Iterable, Sequence

SYNC_GROUP4 = IPv4Address("224.0.0.81")
SYNC_PORT = 8848
SYNC_PROTO_VER = 1
DEFAULT_MAXLEN = 1472              # 1500 - 20 IP - 8 UDP: what a kernel master assumes
MAX_DATAGRAM = 65507
MAX_CONNS = 255                    # nr_conns is a u8
STYPE_F_INET6 = 0x01
SVER_SHIFT, SVER_MASK = 12, 0x0FFF
IPVS_OPT_SEQ_DATA, IPVS_OPT_PE_DATA, IPVS_OPT_PE_NAME = 1, 2, 3
# IP_VS_CONN_F_* bits most useful to a backup (include/uapi/linux/ip_vs.h).
IP_VS_CONN_F_MASQ = 0x0000         # forwarding method NAT (bits 0-2)
IP_VS_CONN_F_SYNC = 0x0020         # entry created by sync
IP_VS_CONN_F_INACTIVE = 0x0100     # not established
IP_VS_CONN_F_TEMPLATE = 0x1000     # persistence template
IP_VS_CONN_F_ONE_PACKET = 0x2000   # never synced
_HDR = struct.Struct("!BBHBbH")
_FIXED = struct.Struct("!BBHIHHHHII")    # 24 bytes before the addresses
HEADER_LEN = _HDR.size


class SyncDropReason(IntEnum):
    """Why a sync datagram was dropped whole (as the kernel drops it)."""

    TRUNCATED = 1          # shorter than the header or than an entry claims
    BAD_SIZE = 2           # header size differs from the datagram length
    WRONG_SYNCID = 3       # not our sync id (when ours is not 0)
    UNSUPPORTED_VERSION = 4  # not v1 (reserved/spare not 0, version != 1): v0 is not spoken
    BAD_ENTRY_TYPE = 5     # entry type other than 0 (IPv4) or 1 (IPv6)
    BAD_ENTRY_VERSION = 6  # entry version bits not 0
    BAD_ENTRY_LENGTH = 7   # entry length shorter than its fixed part or past the end
    BAD_OPTION = 8         # option TLV malformed (zero length, overrun)


class SyncError(ValueError):
    """A sync datagram that must be dropped; `reason` says why."""

    def __init__(self, reason: SyncDropReason, detail: str = "") -> None:
        super().__init__(f"{reason.name.lower()}: {detail}" if detail else reason.name.lower())
        self.reason = reason


Address = IPv4Address | IPv6Address


@dataclass(frozen=True)
class SyncConn:
    """One synchronised connection (str addresses accepted; all three of one family)."""

    proto: int
    """IP protocol: 6 TCP, 17 UDP, 132 SCTP."""
    caddr: Address
    cport: int
    vaddr: Address
    vport: int
    daddr: Address
    dport: int
    state: int
    """IPVS state number (TCP: 1 ESTABLISHED, 2 SYN_SENT, …; UDP 0)."""
    flags: int
    """IP_VS_CONN_F_* bits (HASHED is the sender's business; pass it stripped)."""
    timeout_s: int
    """Seconds the connection has left; 0 lets the receiver use the state's default."""
    fwmark: int = 0
    """Firewall mark of the virtual service, 0 for address:port services."""
    options: bytes = b""
    """Raw option TLVs (SEQ_DATA, PE_DATA, PE_NAME), kept opaque and validated for shape."""

    def __post_init__(self) -> None:
        for name in ("caddr", "vaddr", "daddr"):
            object.__setattr__(self, name, ip_address(getattr(self, name)))
        if len({self.caddr.version, self.vaddr.version, self.daddr.version}) != 1:
            raise ValueError("caddr, vaddr and daddr must be of one address family")
        limits = (("proto", 0xFF), ("cport", 0xFFFF), ("vport", 0xFFFF), ("dport", 0xFFFF),
                  ("state", 0xFFFF), ("flags", 0xFFFFFFFF), ("timeout_s", 0xFFFFFFFF),
                  ("fwmark", 0xFFFFFFFF))
        for name, top in limits:
            if not 0 <= getattr(self, name) <= top:
                raise ValueError(f"{name} {getattr(self, name)} out of range")
        _check_options(bytes(self.options))
        if _FIXED.size + 3 * len(self.caddr.packed) + len(self.options) > SVER_MASK:
            raise ValueError("entry longer than the 12-bit size field")


@dataclass(frozen=True)
class SyncMessage:
    """One decoded datagram."""

    syncid: int
    conns: tuple[SyncConn, ...]


def _check_options(options: bytes) -> None:
    # As ip_vs_proc_sync_conn(): each TLV needs 2 header bytes, a nonzero length, and must fit.
    i = 0
    while i < len(options):
        if i + 2 > len(options) or options[i + 1] == 0 or i + 2 + options[i + 1] > len(options):
            raise SyncError(SyncDropReason.BAD_OPTION, f"at option byte {i}")
        i += 2 + options[i + 1]


def encode_conn(conn: SyncConn) -> bytes:
    """One entry, unpadded (its length is in ver_size)."""
    addrs = conn.caddr.packed + conn.vaddr.packed + conn.daddr.packed
    length = _FIXED.size + len(addrs) + len(conn.options)
    entry_type = STYPE_F_INET6 if conn.caddr.version == 6 else 0
    fixed = _FIXED.pack(entry_type, conn.proto, length & SVER_MASK, conn.flags, conn.state,
                        conn.cport, conn.vport, conn.dport, conn.fwmark, conn.timeout_s)
    return fixed + addrs + conn.options


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def encode_message(syncid: int, conns: Sequence[SyncConn]) -> bytes:
    """One datagram holding all of `conns` (at most 255 and 65507 bytes); ValueError otherwise."""
    if not 0 <= syncid <= 255 or len(conns) > MAX_CONNS:
        raise ValueError("syncid must be 0..255 and a message holds at most 255 connections")
    body = b""
    for conn in conns:
        body = body.ljust(_pad4(len(body)), b"\0") + encode_conn(conn)   # pad before, as the kernel
    size = HEADER_LEN + len(body)
    if size > MAX_DATAGRAM:
        raise ValueError(f"message of {size} bytes exceeds {MAX_DATAGRAM}")
    return _HDR.pack(0, syncid, size, len(conns), SYNC_PROTO_VER, 0) + body


def encode_batch(syncid: int, conns: Iterable[SyncConn],
                 maxlen_bytes: int = DEFAULT_MAXLEN) -> list[bytes]:
    """Pack `conns` in order into as few datagrams of at most `maxlen_bytes` as fit (sync_maxlen)."""
    messages: list[bytes] = []
    group: list[SyncConn] = []
    used = HEADER_LEN
    for conn in conns:
        length = len(encode_conn(conn))
        if HEADER_LEN + length > maxlen_bytes:
            raise ValueError(f"one entry of {length} bytes does not fit in {maxlen_bytes}")
        if group and (_pad4(used) + length > maxlen_bytes or len(group) == MAX_CONNS):
            messages.append(encode_message(syncid, group))
            group, used = [], HEADER_LEN
        used = (_pad4(used) if group else used) + length
        group.append(conn)
    if group:
        messages.append(encode_message(syncid, group))
    return messages


def decode_message(data: bytes, syncid: int = 0) -> SyncMessage:
    """Parse one datagram; `syncid` 0 accepts any (as the kernel backup). Raises SyncError."""
    if len(data) < HEADER_LEN:
        raise SyncError(SyncDropReason.TRUNCATED, f"{len(data)} bytes")
    reserved, msg_syncid, size, nr_conns, version, spare = _HDR.unpack_from(data)
    if size != len(data):
        raise SyncError(SyncDropReason.BAD_SIZE, f"header says {size}, got {len(data)}")
    if syncid and msg_syncid != syncid:
        raise SyncError(SyncDropReason.WRONG_SYNCID, str(msg_syncid))
    if version != SYNC_PROTO_VER or reserved or spare:
        raise SyncError(SyncDropReason.UNSUPPORTED_VERSION, f"version {version}, reserved {reserved}")
    conns, offset = [], HEADER_LEN
    for _ in range(nr_conns):
        conn, length = _decode_conn(data, offset)
        conns.append(conn)
        offset += _pad4(length)
    return SyncMessage(msg_syncid, tuple(conns))


def _decode_conn(data: bytes, offset: int) -> tuple[SyncConn, int]:
    if offset + _FIXED.size > len(data):
        raise SyncError(SyncDropReason.TRUNCATED, f"entry at {offset}")
    (etype, proto, ver_size, flags, state, cport, vport, dport,
     fwmark, timeout_s) = _FIXED.unpack_from(data, offset)
    if etype not in (0, STYPE_F_INET6):
        raise SyncError(SyncDropReason.BAD_ENTRY_TYPE, str(etype))
    if ver_size >> SVER_SHIFT:
        raise SyncError(SyncDropReason.BAD_ENTRY_VERSION, str(ver_size >> SVER_SHIFT))
    alen = 16 if etype else 4
    length = ver_size & SVER_MASK
    if length < _FIXED.size + 3 * alen or offset + length > len(data):
        raise SyncError(SyncDropReason.BAD_ENTRY_LENGTH, f"{length} at {offset}")
    a = offset + _FIXED.size
    family = IPv6Address if etype else IPv4Address
    caddr, vaddr, daddr = (family(data[a + i * alen:a + (i + 1) * alen]) for i in range(3))
    options = data[a + 3 * alen:offset + length]
    _check_options(options)
    return SyncConn(proto, caddr, cport, vaddr, vport, daddr, dport, state, flags,
                    timeout_s, fwmark, options), length
