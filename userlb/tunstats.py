"""EDGE: the TUN device's kernel counters, by netlink (pyroute2).

What it does: `tun_counters(ifname)` asks the kernel, in the calling thread's
network namespace, for one link's IFLA_STATS64 and txqueuelen and returns them
as plain ints. On a TUN, "tx" is the kernel handing frames to userlb and "rx" is
userlb writing them back, so tx_dropped counts the frames the kernel dropped
because the TUN's queue (txqueuelen frames) was full: userlb read too slowly.
Opens its own netlink socket per call (a few hundred µs), so any thread may call
it; the control plane does, per stats request or metrics scrape, never the data
path.

What it does not do: decide anything, or read /sys (sysfs shows the namespace it
was mounted in, which need not be ours).
"""

from __future__ import annotations

from pyroute2 import IPRoute

FIELDS = ("tx_packets", "tx_dropped", "rx_packets", "rx_dropped", "tx_errors", "rx_errors")


def tun_counters(ifname: str) -> dict | None:
    """{"name", "txqueuelen", *FIELDS} of `ifname`, or None if there is no such link."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
    stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS") or {}
    out = {"name": ifname, "txqueuelen": int(link.get_attr("IFLA_TXQLEN") or 0)}
    out.update({f: int(stats.get(f, 0)) for f in FIELDS})
    return out
