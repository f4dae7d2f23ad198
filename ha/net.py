"""EDGE: the HA sockets: VRRP (IP protocol 112), heartbeat (UDP), gratuitous ARP, sync.

What it does: opens and wraps the four kinds of socket ha/runner.py needs, each
bound to one interface (SO_BINDTODEVICE), all non-blocking:
  * `VrrpSocket`: raw IPv4 socket for protocol 112 that joins 224.0.0.18 on its
    interface and sends whole datagrams (IP_HDRINCL) from the interface's own
    address with TTL 255 and TOS 0xc0, as keepalived; multicast loop off, so a
    router never hears itself (RFC 5798 §5.1.1, §7.1).
  * `HeartbeatSocket`: UDP bound to (own address, 539) on one interface, sending
    to the partner's address on the same segment (pulse binds the same way).
  * `GarpSocket`: AF_PACKET socket that writes ha/garp.py's frames from the
    interface's real MAC (read back from the socket's own address).
  * `SyncSocket`: UDP multicast 224.0.0.81:8848 with TTL 1 on one interface, as
    the kernel's sync daemon (spec §5.1); loop off.
`HaLink` bundles them for one router and is the only thing the runner touches,
so tests can hand the runner a fake with the same methods (style rule 10).

Sync transport, and why it is not authenticated: the messages are the kernel's
IPVS sync v1 datagrams (ha/sync.py says why that format), which have no
authentication field, so they go where the kernel sends them: link-local
multicast with TTL 1 on the private (real-server) segment, never routed.
Receivers take them only from the partner's address on that segment when it
is configured, only when not MASTER, and only for configured services and real
servers (connsync.import_entries), so a forger on that segment can at most
pre-create connection entries; it cannot move a VIP, because the heartbeat,
which can, is HMAC-authenticated (ha/heartbeat.py). Use IPsec below it if the
segment is not trusted.

What it does not do: decide anything, encode adverts or heartbeats, or keep time.
"""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Callable, Iterator

from userlb.ha import garp, vrrp
from userlb.ha.config import HaConfig, Protocol

log = logging.getLogger("userlb.ha.net")

ETH_P_ARP = 0x0806
RECV_BYTES = 65535


def _ip_mreqn(group: IPv4Address, ifindex: int) -> bytes:
    # struct ip_mreqn { in_addr imr_multiaddr; in_addr imr_address; int imr_ifindex; }
    return struct.pack("=4s4si", group.packed, bytes(4), ifindex)


def _bind_device(sock: socket.socket, ifname: str) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())


def _multicast(sock: socket.socket, ifname: str, group: IPv4Address, ttl: int) -> None:
    """Join `group` on `ifname`, send multicast out of it with `ttl`, never loop back."""
    index = socket.if_nametoindex(ifname)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _ip_mreqn(group, index))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _ip_mreqn(IPv4Address(0), index))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)


def drain(sock: socket.socket) -> Iterator[tuple[bytes, tuple]]:
    """Every datagram waiting on a non-blocking socket, with its source."""
    while True:
        try:
            yield sock.recvfrom(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return


class VrrpSocket:
    """Protocol 112 on one interface; adverts sourced from `saddr` (that interface's address)."""

    def __init__(self, ifname: str, saddr: IPv4Address) -> None:
        self.ifname, self.saddr = ifname, saddr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, vrrp.IPPROTO_VRRP)
        try:
            _bind_device(self.sock, ifname)
            _multicast(self.sock, ifname, vrrp.VRRP_GROUP4, vrrp.VRRP_TTL)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self._ident = 0

    def send(self, adv: vrrp.Advert) -> None:
        # RFC 5798 §5.1.1.1: the source is the sending interface's primary address.
        adv = vrrp.Advert(adv.vrid, adv.priority, adv.max_advert_int_cs, adv.addrs, self.saddr)
        self._ident = (self._ident + 1) & 0xFFFF
        self.sock.sendto(vrrp.encode_ip(adv, ident=self._ident), (str(vrrp.VRRP_GROUP4), 0))


class HeartbeatSocket:
    """UDP heartbeat on one interface: bound to (own address, port), sends to the partner."""

    def __init__(self, ifname: str, own: IPv4Address, peer: IPv4Address | None, port: int) -> None:
        self.ifname, self.own, self.peer, self.port = ifname, own, peer, port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind_device(self.sock, ifname)
            self.sock.bind((str(own), port))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def send(self, datagram: bytes) -> None:
        if self.peer is not None:
            self.sock.sendto(datagram, (str(self.peer), self.port))


class GarpSocket:
    """AF_PACKET writer for gratuitous ARP on one interface, from its real MAC."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            self.sock.bind((ifname, ETH_P_ARP))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.mac: bytes = self.sock.getsockname()[4]      # (ifname, proto, pkttype, hatype, addr)

    def send(self, vips: list[IPv4Address]) -> int:
        """One frame per VIP; returns how many the kernel refused."""
        failed = 0
        for frame in garp.garp_frames(self.mac, vips):
            try:
                self.sock.send(frame)
            except OSError:
                failed += 1
        return failed


class SyncSocket:
    """IPVS sync v1 multicast on one interface (224.0.0.81:8848, TTL 1, as the kernel)."""

    def __init__(self, ifname: str, group: IPv4Address, port: int) -> None:
        self.ifname, self.group, self.port = ifname, group, port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind_device(self.sock, ifname)
            self.sock.bind((str(group), port))
            _multicast(self.sock, ifname, group, 1)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, (str(self.group), self.port))


@dataclass
class HaLink:
    """All sockets of one router's HA; `open_link(config)` builds it from the config."""

    config: HaConfig
    adverts: list = field(default_factory=list)      # VrrpSocket | HeartbeatSocket per path
    garps: dict = field(default_factory=dict)        # ifname → GarpSocket
    sync: SyncSocket | None = None

    def readers(self) -> list[tuple[str, socket.socket]]:
        """(kind, socket) pairs to watch: kind is "advert" or "sync"."""
        pairs = [("advert", s.sock) for s in self.adverts]
        return pairs + ([("sync", self.sync.sock)] if self.sync else [])

    def send_vrrp(self, adv: vrrp.Advert) -> int:
        return self._each(lambda s: s.send(adv))

    def send_heartbeat(self, build: Callable[[], bytes]) -> int:
        """`build` makes a fresh datagram per path (each gets its own sequence number)."""
        return self._each(lambda s: s.send(build()))

    def _each(self, send: Callable) -> int:
        failed = 0
        for path in self.adverts:
            try:
                send(path)
            except OSError as exc:
                failed += 1
                log.debug("advert on %s failed: %s", path.ifname, exc)
        return failed

    def send_garp(self, ifname: str, vips: list[IPv4Address]) -> int:
        sock = self.garps.get(ifname)
        return len(vips) if sock is None else sock.send(vips)

    def send_sync(self, datagram: bytes) -> bool:
        try:
            self.sync.send(datagram)
            return True
        except OSError as exc:
            log.debug("sync send failed: %s", exc)
            return False

    def mac(self, ifname: str) -> str:
        sock = self.garps.get(ifname)
        return sock.mac.hex(":") if sock else ""

    def close(self) -> None:
        for s in [*self.adverts, *self.garps.values(), *([self.sync] if self.sync else [])]:
            s.sock.close()
        self.adverts, self.garps, self.sync = [], {}, None


def _paths(config: HaConfig) -> list[tuple[str, IPv4Address, IPv4Address | None]]:
    """(interface, own address, partner address) for each advert/heartbeat path."""
    paths = [(config.interface, config.primary, config.peer)]
    if config.private_address is not None and config.private_interface:
        paths.append((config.private_interface, config.private_address, config.peer_private))
    return paths


def open_link(config: HaConfig) -> HaLink:
    """Open every socket the config asks for; on failure close what was opened and raise."""
    link = HaLink(config)
    try:
        for ifname, own, peer in _paths(config):
            if config.protocol is Protocol.VRRP:
                link.adverts.append(VrrpSocket(ifname, own))
            else:
                link.adverts.append(HeartbeatSocket(ifname, own, peer, config.heartbeat_port))
        for ifname in dict.fromkeys(filter(None, (config.interface, config.private_interface))):
            link.garps[ifname] = GarpSocket(ifname)
        sync_if = config.sync_interface or config.private_interface or config.interface
        if config.sync:
            link.sync = SyncSocket(sync_if, config.sync_group, config.sync_port)
    except OSError:
        link.close()
        raise
    return link
