"""EDGE: the router's kernel plumbing around the TUN, through netlink (pyroute2).

install() makes the router hand VIP traffic and real-server replies to userlb:
- a /32 route for each VIP into the TUN (main table);
- policy routing: packets arriving on the server-side interface are looked up
  in a table whose default route is the TUN, so replies enter userlb;
- a proxy-ARP entry for each VIP on the client-side interface, so the router
  answers ARP for the VIP (proxy_delay 0: answer at once);
- IPv4 forwarding on, reverse-path filtering off for the TUN (packets written
  back carry client or real-server sources that are not routed via the TUN),
  ICMP redirects off.
remove() undoes exactly what install() did, in reverse order, restoring each
sysctl's old value; it tolerates a partial install. No policy lives here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NTF_PROXY

log = logging.getLogger("userlb.plumbing")

SYSCTL = Path("/proc/sys/net")


@dataclass
class RouterPlumbing:
    tun: str
    client_interface: str
    server_interface: str
    vips: list[str]
    table: int = 100
    rule_priority: int = 100
    _undo: list = field(default_factory=list)
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

    def install(self) -> None:
        self._ipr = IPRoute()
        tun = self._index(self.tun)
        client = self._index(self.client_interface)
        self._index(self.server_interface)
        self._sysctl("ipv4/ip_forward", "1")
        self._sysctl("ipv4/conf/all/rp_filter", "0")
        self._sysctl(f"ipv4/conf/{self.tun}/rp_filter", "0")
        self._sysctl("ipv4/conf/all/send_redirects", "0")
        self._sysctl(f"ipv4/conf/{self.client_interface}/send_redirects", "0")
        self._sysctl(f"ipv4/neigh/{self.client_interface}/proxy_delay", "0")
        self._route("add", dst="0.0.0.0/0", oif=tun, table=self.table)
        self._ipr.rule("add", iifname=self.server_interface, table=self.table,
                       priority=self.rule_priority)
        self._undo.append(lambda: self._ipr.rule("del", iifname=self.server_interface,
                                                 table=self.table, priority=self.rule_priority))
        for vip in self.vips:
            self.add_vip(vip, tun, client)
        log.info("plumbing installed: %d VIP(s) via %s, replies from %s", len(self.vips),
                 self.tun, self.server_interface)

    def _route(self, op: str, **kw) -> None:
        self._ipr.route(op, **kw)
        if op == "add":
            self._undo.append(lambda: self._ipr.route("del", **kw))

    def add_vip(self, vip: str, tun: int | None = None, client: int | None = None) -> None:
        tun = self._index(self.tun) if tun is None else tun
        client = self._index(self.client_interface) if client is None else client
        self._route("add", dst=f"{vip}/32", oif=tun)
        self._ipr.neigh("add", dst=vip, ifindex=client, flags=NTF_PROXY)
        self._undo.append(lambda: self._ipr.neigh("del", dst=vip, ifindex=client,
                                                  flags=NTF_PROXY))

    def remove(self) -> None:
        while self._undo:
            step = self._undo.pop()
            try:
                step()
            except (NetlinkError, OSError) as exc:
                log.warning("plumbing cleanup step failed: %s", exc)
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
