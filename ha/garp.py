"""Gratuitous ARP frames: bytes for the edge to write to an AF_PACKET socket.

What it does: builds the Ethernet + ARP frame a new master broadcasts for each
VIP so that neighbours repoint their ARP caches. The default is keepalived's
request form; Piranha's send_arp reply form is available for comparison.

What it does not do: send, time or repeat anything (ha/fsm.py schedules bursts
with SendGarp; ha/net.py sends). No scapy here: struct only, so the edge can
build frames without importing scapy (tests use scapy as the oracle).

Mirrors (HA spec §4.1):
  request (default)  op 1, sender = target IP = VIP, sender MAC = our MAC,
                     target MAC ff:ff:ff:ff:ff:ff   — keepalived's bytes, 42 long
  reply              op 2, target MAC = our MAC     — RFC 2002 §4.6, Piranha send_arp
Both go to Ethernet broadcast from the router's real interface MAC (keepalived's
default without use_vmac). Linux neighbours update an existing entry on either.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from typing import Iterable

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST_MAC = b"\xff" * 6
FRAME_LEN = 42            # 14 Ethernet + 28 ARP
MIN_FRAME_LEN = 60        # Ethernet minimum without FCS (Piranha pads to it)
_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")


def parse_mac(mac: bytes | str) -> bytes:
    """6 raw bytes from 'aa:bb:cc:dd:ee:ff' / 'aa-bb-…' or from 6 bytes; ValueError otherwise."""
    if isinstance(mac, (bytes, bytearray)):
        raw = bytes(mac)
    else:
        parts = mac.replace("-", ":").split(":")
        if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
            raise ValueError(f"not a MAC address: {mac!r}")
        raw = bytes(int(p, 16) for p in parts)
    if len(raw) != 6:
        raise ValueError(f"MAC must be 6 bytes, got {len(raw)}")
    return raw


def vrrp_virtual_mac(vrid: int) -> bytes:
    """RFC 5798 §7.3 IPv4 virtual router MAC 00-00-5E-00-01-{VRID} (for use_vmac setups)."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"vrid {vrid} not in 1..255")
    return bytes((0x00, 0x00, 0x5E, 0x00, 0x01, vrid))


def garp_frame(mac: bytes | str, vip: IPv4Address | str, *, op: int = ARP_REQUEST,
               pad: bool = False) -> bytes:
    """One gratuitous ARP for `vip` from interface MAC `mac` (request form unless op=ARP_REPLY)."""
    if op not in (ARP_REQUEST, ARP_REPLY):
        raise ValueError(f"ARP op must be 1 or 2, got {op}")
    own = parse_mac(mac)
    ip = IPv4Address(vip).packed
    target_mac = BROADCAST_MAC if op == ARP_REQUEST else own
    frame = (_ETH.pack(BROADCAST_MAC, own, ETH_P_ARP)
             + _ARP.pack(ARPHRD_ETHER, ETH_P_IP, 6, 4, op, own, ip, target_mac, ip))
    return frame.ljust(MIN_FRAME_LEN, b"\0") if pad else frame


def garp_frames(mac: bytes | str, vips: Iterable[IPv4Address | str], *, op: int = ARP_REQUEST,
                pad: bool = False) -> list[bytes]:
    """One frame per VIP, in the given order (one burst step of a SendGarp action)."""
    return [garp_frame(mac, vip, op=op, pad=pad) for vip in vips]
