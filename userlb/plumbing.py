"""EDGE: the router's kernel plumbing around the TUN, through netlink (pyroute2).

install() makes the router hand VIP traffic and real-server replies to userlb:
- a /32 route for each VIP into the TUN (main table);
- policy routing: packets arriving on the server-side interface are looked up
  in a table whose default route is the TUN, so replies enter userlb;
- a proxy-ARP entry for each VIP on the client-side interface, so the router
  answers ARP for the VIP (proxy_delay 0: answer at once);
- IPv4 forwarding on, reverse-path filtering off for the TUN (packets written
  back carry client or real-server sources that are not routed via the TUN),
  ICMP redirects off;
- the TUN's queue bounded to `txqueuelen` frames (tun_queue_length: two read
  batches, at least TUN_TXQUEUELEN), so that under overload the kernel drops the
  excess at once and counts it (the device's tx_dropped, reported as the
  tun_queue_full drop) instead of queueing it behind a growing delay.
The VIP part (routes, proxy ARP, the floating gateway address the real servers
use) is claim()/release(), so an HA backup can install the rest and claim the
VIPs on takeover. remove() undoes exactly what was done, in reverse order,
restoring each sysctl's old value; it tolerates a partial install. No policy
lives here.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NTF_PROXY

log = logging.getLogger("userlb.plumbing")

SYSCTL = Path("/proc/sys/net")
TUN_TXQUEUELEN = 512
"""Frames the kernel may queue on the TUN for userlb to read; past them it drops
(tx_dropped). Under overload the queue is always full, so its length buys no
throughput, only delay: 512 frames wait about 10 ms at 50 kpps. Below the loss-free
rate it must absorb what arrives while userlb processes one batch and while it is
off the CPU for a scheduler tick (4 ms at HZ=250): at 50 kpps each is about 200-250
frames, i.e. two batches of the default 256. The kernel's own default for a TUN is
500 (a txqueuelen others may have raised, e.g. by a udev rule, is put back to this)."""


def tun_queue_length(batch_size: int) -> int:
    """The TUN's txqueuelen for a data path reading `batch_size` frames per batch: two
    batches (one in the engine, one arriving meanwhile), at least TUN_TXQUEUELEN."""
    return max(TUN_TXQUEUELEN, 2 * batch_size)


@dataclass
class RouterPlumbing:
    tun: str
    client_interface: str
    server_interface: str
    vips: list[str]
    table: int = 100
    rule_priority: int = 100
    gateway: str | None = None
    """Floating address (with prefix, e.g. "198.18.2.1/24") the real servers route through;
    claimed and released with the VIPs (lvs.cf nat_router)."""
    txqueuelen: int | None = TUN_TXQUEUELEN
    """The TUN's queue length (None: leave it as it is)."""
    _undo: list = field(default_factory=list)
    _claimed: list = field(default_factory=list)
    _ipr: IPRoute | None = None

    def _index(self, ifname: str) -> int:
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise RuntimeError(f"no interface named {ifname!r} in this namespace")
        return found[0]

    def _sysctl(self, rel: str, value: str) -> None:
        path = SYSCTL / rel
        old = path.read_text().strip()
        if old != value:
            path.write_text(value)
            self._undo.append(lambda: path.write_text(old))

    def install(self, claim: bool = True) -> None:
        """Base plumbing; with claim=False the VIPs wait for claim() (an HA backup)."""
        self._ipr = IPRoute()
        tun = self._index(self.tun)
        self._index(self.client_interface)
        self._index(self.server_interface)
        self._sysctl("ipv4/ip_forward", "1")
        self._sysctl("ipv4/conf/all/rp_filter", "0")
        self._sysctl(f"ipv4/conf/{self.tun}/rp_filter", "0")
        self._sysctl("ipv4/conf/all/send_redirects", "0")
        self._sysctl(f"ipv4/conf/{self.client_interface}/send_redirects", "0")
        self._sysctl(f"ipv4/neigh/{self.client_interface}/proxy_delay", "0")
        self._queue_length(tun)
        self._ipr.route("add", dst="0.0.0.0/0", oif=tun, table=self.table)
        self._undo.append(lambda: self._ipr.route("del", dst="0.0.0.0/0", oif=tun,
                                                  table=self.table))
        try:
            self._ipr.rule("add", iifname=self.server_interface, table=self.table,
                           priority=self.rule_priority)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:    # left by a SIGKILLed predecessor: take it over
                raise
        self._undo.append(lambda: self._ipr.rule("del", iifname=self.server_interface,
                                                 table=self.table, priority=self.rule_priority))
        if claim:
            self.claim()
        else:
            self._sweep()
        log.info("plumbing installed: %d VIP(s) via %s, replies from %s%s", len(self.vips),
                 self.tun, self.server_interface, "" if claim else " (VIPs not claimed)")

    def _queue_length(self, tun: int) -> None:
        if self.txqueuelen is None:
            return
        old = self._ipr.get_links(tun)[0].get_attr("IFLA_TXQLEN")
        if old != self.txqueuelen:
            self._ipr.link("set", index=tun, txqlen=self.txqueuelen)
            self._undo.append(lambda: self._ipr.link("set", index=tun, txqlen=old))

    def _gateway_parts(self) -> tuple[str, int]:
        addr, _, prefix = self.gateway.partition("/")
        return addr, int(prefix or 32)

    def _sweep(self) -> None:
        """Drop what a killed predecessor may have left claimed (a proxy-ARP entry and the
        gateway address outlive a SIGKILLed userlb; the VIP routes die with its TUN), so a
        backup starts without answering ARP for addresses it does not hold."""
        client = self._index(self.client_interface)
        for vip in self.vips:
            try:
                self._ipr.neigh("del", dst=vip, ifindex=client, flags=NTF_PROXY)
            except NetlinkError:
                pass
        if self.gateway:
            addr, prefix = self._gateway_parts()
            try:
                self._ipr.addr("del", index=self._index(self.server_interface), address=addr,
                               prefixlen=prefix)
            except NetlinkError:
                pass

    @property
    def claimed(self) -> bool:
        return bool(self._claimed)

    def claim(self) -> None:
        """Route the VIPs into the TUN, answer ARP for them, hold the gateway address."""
        if self._claimed:
            return
        tun = self._index(self.tun)
        client = self._index(self.client_interface)
        for vip in self.vips:
            self._ipr.route("add", dst=f"{vip}/32", oif=tun)
            self._claimed.append(lambda vip=vip: self._ipr.route("del", dst=f"{vip}/32", oif=tun))
            self._ipr.neigh("replace", dst=vip, ifindex=client, flags=NTF_PROXY)
            self._claimed.append(lambda vip=vip: self._ipr.neigh("del", dst=vip, ifindex=client,
                                                                 flags=NTF_PROXY))
        if self.gateway:
            server = self._index(self.server_interface)
            addr, prefix = self._gateway_parts()
            try:
                self._ipr.addr("add", index=server, address=addr, prefixlen=prefix)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:      # left by a killed predecessor: ours now
                    raise
            self._claimed.append(lambda: self._ipr.addr("del", index=server, address=addr,
                                                        prefixlen=prefix))

    def release(self) -> None:
        """Undo claim(): the VIPs and the gateway address go to whoever claims them next."""
        self._run(self._claimed)

    def remove(self) -> None:
        self.release()
        self._run(self._undo)
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    @staticmethod
    def _run(steps: list) -> None:
        while steps:
            step = steps.pop()
            try:
                step()
            except (NetlinkError, OSError) as exc:
                log.warning("plumbing cleanup step failed: %s", exc)
