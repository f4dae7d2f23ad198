"""pcapng writer: packets with per-packet comments, readable by Wireshark and tshark.

Writes one Section Header Block, one Interface Description Block per named
interface (link type RAW: each packet is a bare IPv4 datagram) and an Enhanced
Packet Block per packet, with an opt_comment carrying the annotation
(draft-ietf-opsawg-pcapng: block and option layouts, 32-bit padding,
microsecond timestamps by default). Pure: returns bytes; the caller writes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

LINKTYPE_RAW = 101
SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT, OPT_COMMENT, IF_NAME = 0, 1, 2


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _options(*opts: tuple[int, bytes]) -> bytes:
    body = b"".join(_option(code, value) for code, value in opts if value)
    return body + struct.pack("<HH", OPT_ENDOFOPT, 0) if body else b""


def _block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


@dataclass(frozen=True)
class Packet:
    interface: int          # index into the writer's interface names
    time_s: float
    data: bytes
    comment: str = ""


def write(interfaces: list[str], packets: list[Packet]) -> bytes:
    """A complete pcapng file."""
    out = [_block(SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _options())]
    for name in interfaces:
        out.append(_block(IDB, struct.pack("<HHI", LINKTYPE_RAW, 0, 0)
                          + _options((IF_NAME, name.encode()))))
    for p in packets:
        micros = int(round(p.time_s * 1_000_000))
        head = struct.pack("<IIIII", p.interface, micros >> 32, micros & 0xFFFFFFFF,
                           len(p.data), len(p.data))
        out.append(_block(EPB, head + _pad(p.data)
                          + _options((OPT_COMMENT, p.comment.encode()))))
    return b"".join(out)
