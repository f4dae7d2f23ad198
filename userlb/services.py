"""Virtual services and their real servers: config dataclasses and DestTable.

A VirtualService is (protocol, VIP, port) plus a scheduler and real servers.
DestTable is one service's real servers as a struct of numpy arrays in the
kernel's *scan order*: a server added later goes to the head of the list
(`__ip_vs_update_dest` uses list_add_rcu), so a service built by adding A, B, C
in that order scans C, B, A. Every scheduler tie-break follows this order.

DestTable carries the counters schedulers read (activeconns, inactconns,
persistconns, the OVERLOAD flag) and per-server statistics. It does no I/O and
does not decide anything; the engine binds connections, schedulers pick rows.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from itertools import count

import numpy as np

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}
PROTOCOL_NAMES = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", 0: "IP"}

# include/uapi/linux/ip_vs.h
DEST_F_AVAILABLE = 0x1
DEST_F_OVERLOAD = 0x2


def ip_to_int(addr: str) -> int:
    """Dotted quad → host-order u32."""
    return int(ipaddress.IPv4Address(addr))


def int_to_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(int(value)))


@dataclass(frozen=True)
class RealServer:
    """One real server of a service, as configured."""

    address: str
    """IPv4 address of the real server (on the router's server-side network)."""
    port: int = 0
    """Destination port; 0 keeps the client's destination port."""
    weight: int = 1
    """Relative capacity, 0..65535; 0 quiesces (no new connections)."""
    u_threshold: int = 0
    """Upper connection threshold (active + inactive); 0 = none. Reaching it sets OVERLOAD."""
    l_threshold: int = 0
    """Lower threshold that clears OVERLOAD again; 0 = 3/4 of u_threshold."""


@dataclass(frozen=True)
class VirtualService:
    """(protocol, VIP, port) with its scheduler and real servers, in configuration order."""

    protocol: str
    """"tcp" or "udp"."""
    vip: str
    """Virtual IPv4 address clients connect to."""
    port: int
    """Virtual port."""
    scheduler: str = "wlc"
    """IPVS scheduler name (ipvsadm -s), default wlc as ipvsadm."""
    reals: tuple[RealServer, ...] = ()
    """Real servers in the order they are added (scan order is the reverse)."""
    sched_flags: tuple[str, ...] = ()
    """Scheduler flags, e.g. ("sh-fallback", "sh-port")."""
    persistent_s: int = 0
    """Persistence timeout in seconds; 0 = not persistent."""
    netmask: str = "255.255.255.255"
    """Persistence granularity (client address mask)."""
    fwmark: int = 0
    """Firewall mark (ipvsadm -f); non-zero makes this a fwmark service that groups the
    (protocol, address, port) triples of `match` (a TUN has no netfilter mark)."""
    match: tuple[tuple[str, str, int], ...] = ()
    """For fwmark services: (protocol, address, port) triples carrying the mark; port 0
    matches every port of that address."""

    @property
    def proto(self) -> int:
        return PROTOCOLS[self.protocol]

    @property
    def key(self) -> tuple[int, int, int]:
        """(protocol, VIP, port); (0, mark, 0) for a fwmark service, as its templates."""
        if self.fwmark:
            return (0, self.fwmark, 0)
        return (self.proto, ip_to_int(self.vip), self.port)


_uids = count(1)

_COUNTER_FIELDS = ("activeconns", "inactconns", "persistconns")
_STAT_FIELDS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")


@dataclass
class DestTable:
    """One service's real servers in scan order, as parallel numpy arrays.

    Columns: uid (stable identity across edits), addr (u32 host order), port,
    weight, last_weight (latest non-zero weight, for mh), activeconns,
    inactconns, persistconns, flags (AVAILABLE|OVERLOAD), u_threshold,
    l_threshold, and statistics conns/inpkts/outpkts/inbytes/outbytes.
    """

    uid: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    addr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    port: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint16))
    weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    last_weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    activeconns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    inactconns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    persistconns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    u_threshold: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    l_threshold: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    conns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    inpkts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    outpkts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    inbytes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    outbytes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    COLUMNS = ("uid", "addr", "port", "weight", "last_weight", *_COUNTER_FIELDS, "flags",
               "u_threshold", "l_threshold", *_STAT_FIELDS)

    def __len__(self) -> int:
        return len(self.addr)

    @classmethod
    def from_reals(cls, reals: tuple[RealServer, ...] | list[RealServer]) -> "DestTable":
        """Add the servers one by one in the given order, as ipvsadm -a would (head insertion)."""
        table = cls()
        for rs in reals:
            table.add(ip_to_int(rs.address), rs.port, rs.weight, rs.u_threshold, rs.l_threshold)
        return table

    @classmethod
    def build(cls, addrs, ports, weights, **columns) -> "DestTable":
        """A table whose rows are given directly in scan order (tests, benchmarks)."""
        n = len(addrs)
        table = cls()
        table.uid = np.array([next(_uids) for _ in range(n)], np.int64)
        table.addr = np.asarray(addrs, np.uint32)
        table.port = np.asarray(ports, np.uint16)
        table.weight = np.asarray(weights, np.int32)
        table.last_weight = table.weight.copy()
        table.flags = np.full(n, DEST_F_AVAILABLE, np.uint8)
        for name in (*_COUNTER_FIELDS, "u_threshold", "l_threshold", *_STAT_FIELDS):
            setattr(table, name, np.zeros(n, np.int64))
        for name, values in columns.items():
            column = getattr(table, name)
            setattr(table, name, np.asarray(values, column.dtype))
        return table

    def copy(self) -> "DestTable":
        return DestTable(**{name: getattr(self, name).copy() for name in self.COLUMNS})

    def find(self, addr: int, port: int) -> int:
        """Row of (addr, port), or -1."""
        hits = np.flatnonzero((self.addr == addr) & (self.port == port))
        return int(hits[0]) if len(hits) else -1

    def add(self, addr: int, port: int, weight: int = 1, u_threshold: int = 0,
            l_threshold: int = 0) -> int:
        """Insert a new server at the head of the scan order; returns its uid."""
        if weight < 0:
            raise ValueError("weight must be >= 0")
        if l_threshold and u_threshold and l_threshold > u_threshold:
            raise ValueError("l_threshold must not exceed u_threshold")
        uid = next(_uids)
        row = {"uid": uid, "addr": addr, "port": port, "weight": weight, "last_weight": weight,
               "flags": DEST_F_AVAILABLE, "u_threshold": u_threshold, "l_threshold": l_threshold}
        for name in self.COLUMNS:
            column = getattr(self, name)
            value = np.array([row.get(name, 0)], dtype=column.dtype)
            setattr(self, name, np.concatenate([value, column]))
        return uid

    def remove(self, row: int) -> None:
        """Unlink one server (its connections are the engine's business)."""
        for name in self.COLUMNS:
            setattr(self, name, np.delete(getattr(self, name), row))

    def edit(self, row: int, weight: int | None = None, u_threshold: int | None = None,
             l_threshold: int | None = None) -> None:
        """Change weight/thresholds in place, with the kernel's side effects.

        last_weight follows only non-zero weights; OVERLOAD is cleared when the new
        upper threshold is 0 or larger than the old one [ctl: __ip_vs_update_dest].
        """
        if weight is not None:
            if weight < 0:
                raise ValueError("weight must be >= 0")
            self.weight[row] = weight
            if weight:
                self.last_weight[row] = weight
        if u_threshold is not None:
            old = int(self.u_threshold[row])
            if u_threshold == 0 or u_threshold > old:
                self.flags[row] &= ~np.uint8(DEST_F_OVERLOAD)
            self.u_threshold[row] = u_threshold
        if l_threshold is not None:
            self.l_threshold[row] = l_threshold

    @property
    def overloaded(self) -> np.ndarray:
        return (self.flags & DEST_F_OVERLOAD) != 0

    def bind(self, row: int, active: bool) -> None:
        """Count one new connection on `row` (as ip_vs_bind_dest + the first state change).

        `active` is True for a TCP connection opened by a SYN (SYN_RECV is an active
        state), False for UDP. Sets OVERLOAD when u_threshold is reached.
        """
        if active:
            self.activeconns[row] += 1
        else:
            self.inactconns[row] += 1
        u = self.u_threshold[row]
        if u and self.activeconns[row] + self.inactconns[row] >= u:
            self.flags[row] |= DEST_F_OVERLOAD

    def update_overload_on_unbind(self, rows: np.ndarray) -> None:
        """Clear OVERLOAD after connections left `rows` [conn: ip_vs_unbind_dest]."""
        rows = np.unique(rows)
        rows = rows[rows >= 0]
        if not len(rows):
            return
        total = self.activeconns[rows] + self.inactconns[rows]
        lower = self.l_threshold[rows]
        upper = self.u_threshold[rows]
        clear = np.where(lower != 0, total < lower,
                         np.where(upper != 0, total * 4 < upper * 3, True))
        self.flags[rows[clear]] &= ~np.uint8(DEST_F_OVERLOAD)
