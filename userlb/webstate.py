"""The web view's picture of the cluster: what GET /api/state returns, as plain dicts.

What it does: `collect(engine, now, ...)` takes one consistent look at the engine on
the data-path thread (services, real servers with weight, counters, kernel-style rates
and health, drops, the busiest clients, and the traced packets recorded since the last
look); `sample(hop)` turns one traced packet (as read and as written) into addresses,
ports, flags, the path it took (client → router → real server or back) and a one-line
label of its rewrite; `routers(...)` gives this router and, when HA tells us, its peer
with their roles; `build_state(...)` assembles the JSON document the page polls.

What it does not do: I/O, clocks (`now` is passed in), scapy (too slow to run on
every poll: trace.py's render and pcapng do the checksum-verified dissection), or
decide anything. The one write is `prune()`, which bounds the engine's FlowTrace
while the web view keeps sampling (oldest finished connections go first).

Mirrors the LVS overview's Figure 10-1: clients, an active (and backup) router with the
VIPs, real servers on a private segment.
"""

from __future__ import annotations

import struct

import numpy as np

from userlb import metrics
from userlb.conntable import CONN_F_TEMPLATE
from userlb.services import int_to_ip
from userlb.trace import TraceHop

PER_CONNECTION = 12        # packets of one sampled connection shown (SYN .. FIN)
TRACE_KEEP = 256           # traced connections kept in the engine while the web view samples
CLIENTS_SHOWN = 4
CLIENT_SCAN_MAX = 50_000   # connections looked at to find the busiest clients
_PROTO = {1: "ICMP", 6: "TCP", 17: "UDP"}
_TCP_FLAGS = "FSRPAUEC"


# -- on the data-path thread -----------------------------------------------------------
def collect(engine, now: float, since_s: float | None, health_of=None) -> dict:
    """One look at the engine (run via DataPath.call): counters, rates, health, clients,
    and the traced packets newer than `since_s` (None: only the newest connection's)."""
    snap = metrics.snapshot_for_metrics(engine, now, health_of=health_of)
    live = [rt for rt in engine.services if rt is not None]
    for svc, rt in zip(snap["services"], live):
        c = rt.config
        svc.update(protocol=c.protocol.upper(), port=c.port, fwmark=c.fwmark,
                   vips=sorted({c.vip} if not c.fwmark else {m[1] for m in c.match}))
    snap["clients"] = top_clients(engine)
    snap["hops"] = harvest(engine.trace.hops, since_s)
    prune(engine.trace.hops, engine.traced)
    snap["now_s"] = now
    return snap


def top_clients(engine, limit: int = CLIENTS_SHOWN) -> list[dict]:
    """The client addresses with the most connections (templates excluded), vectorised."""
    t = engine.table
    ids = t.live_ids()[:CLIENT_SCAN_MAX]
    ids = ids[(t.flags[ids] & CONN_F_TEMPLATE) == 0]
    if not len(ids):
        return []
    addrs, counts = np.unique(t.caddr[ids], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:limit]
    return [{"address": int_to_ip(addrs[i]), "connections": int(counts[i])} for i in order]


def harvest(hops: dict[int, list[TraceHop]], since_s: float | None,
            per_connection: int = PER_CONNECTION) -> list[TraceHop]:
    """Packets recorded after `since_s`, oldest first, at most `per_connection` of each
    connection (counted from its first packet). With since_s None: the newest connection."""
    if since_s is None:
        newest = max(hops.values(), key=lambda h: h[-1].time_s if h else -1.0, default=[])
        return list(newest[:per_connection])
    out = [h for packets in hops.values() for h in packets[:per_connection]
           if h.time_s > since_s]
    return sorted(out, key=lambda h: h.time_s)


def prune(hops: dict[int, list[TraceHop]], traced, keep: int = TRACE_KEEP) -> int:
    """Forget the oldest connections no longer traced (ended) beyond `keep`; returns how
    many. `traced` is the engine's per-connection flag array."""
    excess = len(hops) - keep
    gone = [conn for conn in hops if not traced[conn]][:max(excess, 0)]
    for conn in gone:
        del hops[conn]
    return len(gone)


def set_weight(engine, service: str, address: str, port: int, weight: int) -> int:
    """Set a real server's weight in the service named as /api/state names it ("TCP
    198.18.1.100:80", "FWM 7"); returns the old weight. KeyError when either is unknown."""
    for index, rt in enumerate(engine.services):
        if rt is None:
            continue
        c = rt.config
        if metrics.service_label(c.protocol, c.vip, c.port, c.fwmark) == service:
            old = int(rt.dests.weight[rt.find(address, port)])
            engine.edit_dest(index, address, port, weight)
            return old
    raise KeyError(f"no service {service!r}")


# -- decoding traced packets (struct only) ----------------------------------------------
def decode(frame: bytes) -> dict:
    """Addresses, ports, protocol and TCP flags of one IPv4 frame (RFC 791/793/768)."""
    if len(frame) < 20 or frame[0] >> 4 != 4:
        return {"proto": "?", "src": "?", "dst": "?"}
    ihl = (frame[0] & 0x0F) * 4
    proto = frame[9]
    info = {"proto": _PROTO.get(proto, str(proto)), "src": int_to_ip(_u32(frame, 12)),
            "dst": int_to_ip(_u32(frame, 16))}
    if proto in (6, 17) and len(frame) >= ihl + 4:
        info["sport"], info["dport"] = struct.unpack_from("!HH", frame, ihl)
    if proto == 6 and len(frame) >= ihl + 14:
        flags = frame[ihl + 13]
        info["flags"] = "".join(c for bit, c in enumerate(_TCP_FLAGS) if flags & (1 << bit)) or "."
    return info


def _u32(frame: bytes, offset: int) -> int:
    return struct.unpack_from("!I", frame, offset)[0]


def endpoint(info: dict, side: str) -> str:
    port = info.get("sport" if side == "src" else "dport")
    return f"{info[side]}:{port}" if port is not None else info[side]


def sample(hop: TraceHop, seq: int) -> dict:
    """One traced packet for the page: before/after, its path and the rewrite label."""
    before, after = decode(hop.before), decode(hop.after)
    what = before.get("flags", before["proto"])
    if hop.direction == "in":       # client → VIP, DNAT to the real server
        client, server, vip = endpoint(before, "src"), endpoint(after, "dst"), endpoint(
            before, "dst")
        label = f"{client} → {vip} ⇒ {server}"
        path = ["client", "router", "server"]
    else:                           # real server → client, SNAT to the VIP
        client, server, vip = endpoint(before, "dst"), endpoint(before, "src"), endpoint(
            after, "src")
        label = f"{server} → {client} ⇒ {vip} → {client}"
        path = ["server", "router", "client"]
    return {"seq": seq, "conn": hop.conn, "direction": hop.direction, "time_s": hop.time_s,
            "proto": before["proto"], "flags": what, "nat": "DNAT" if hop.direction == "in"
            else "SNAT", "client": client, "server": server, "vip": vip, "path": path,
            "before": {"src": endpoint(before, "src"), "dst": endpoint(before, "dst")},
            "after": {"src": endpoint(after, "src"), "dst": endpoint(after, "dst")},
            "label": f"{what} {label}"}


# -- routers and the whole document -------------------------------------------------------
def peer_role(protocol: str, state: str, heard_recently: bool) -> str:
    """What this router's HA state says about its peer. VRRP backups are silent (RFC 5798
    §6.4.2: only a master advertises); heartbeat peers both send (pulse)."""
    if state == "BACKUP":
        return "MASTER" if heard_recently else "unknown (silent)"
    if state == "MASTER":
        if protocol == "heartbeat":
            return "BACKUP" if heard_recently else "down (silent)"
        return "BACKUP" if heard_recently else "unknown (VRRP backups are silent)"
    return "unknown"


def routers(ha: dict | None, heard_recently: bool, address: str,
            peer: str | None) -> list[dict]:
    """This router (role from HA, or "ACTIVE" without HA; `address`: where the view is
    served) and, with HA, its peer (`peer`: its configured address, if any)."""
    if ha is None:
        return [{"name": "router", "address": address, "role": "ACTIVE", "ha": None,
                 "self": True}]
    out = [{"name": "this router", "address": ha.get("primary"), "role": ha.get("state", "?"),
            "ha": ha.get("protocol"), "priority": ha.get("priority"), "self": True,
            "since_s": ha.get("since_s")}]
    out.append({"name": "peer", "address": peer, "self": False, "ha": ha.get("protocol"),
                "role": peer_role(ha.get("protocol", ""), ha.get("state", ""), heard_recently)})
    return out


def build_state(snap: dict, samples: list[dict], router_list: list[dict],
                web_writable: bool) -> dict:
    """The /api/state document."""
    drops = {k: v for k, v in snap.get("drops", {}).items() if v}
    vips = sorted({v for s in snap["services"] for v in s.get("vips", ())})
    return {"routers": router_list, "vips": vips, "services": snap["services"],
            "clients": snap.get("clients", []), "drops": drops,
            "connections": snap.get("connections", 0), "table_size": snap.get("table_size", 0),
            "passed_unmodified": snap.get("passed_unmodified", 0), "samples": samples,
            "writable": web_writable}
