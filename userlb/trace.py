"""Packet-flow traces: record chosen connections' packets before and after NAT, render them.

The engine marks the next N new connections (optionally only those matching a
filter on VIP, client or real server) as traced and hands every packet of theirs
to FlowTrace.record() with the frame as read and as written, plus a note: the
classification (new connection or table hit), for a new one the scheduler's
view (servers considered with weight, counters and overhead, and the pick), and
the state transition with its timeout. Nothing is recorded for untraced
connections, so tracing costs nothing while it is off.
render() dissects the recorded bytes with scapy for display (never on the data
path: it runs when somebody asks for a trace) and prints one hop per line:
addresses, ports, TCP flags and checksums before and after the rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PACKETS_PER_CONNECTION = 32


@dataclass
class TraceHop:
    """One packet of a traced connection, as userlb read and wrote it."""

    conn: int
    direction: str        # "in" (client → VIP) or "out" (real server → client)
    time_s: float
    before: bytes
    after: bytes
    note: dict = field(default_factory=dict)


@dataclass
class FlowTrace:
    """Recorded hops, by connection id, bounded per connection."""

    hops: dict[int, list[TraceHop]] = field(default_factory=dict)
    decisions: dict[int, dict] = field(default_factory=dict)   # conn → the scheduler's view

    def record(self, conn: int, direction: str, time_s: float, before: bytes, after: bytes,
               note: dict | None = None) -> None:
        packets = self.hops.setdefault(conn, [])
        if len(packets) < MAX_PACKETS_PER_CONNECTION:
            note = dict(note or {})
            if not packets and conn in self.decisions:
                note["decision"] = self.decisions.pop(conn)
            packets.append(TraceHop(conn, direction, time_s, before, after, note))

    def as_json(self, since_s: float | None = None) -> list[dict]:
        return [{"conn": h.conn, "direction": h.direction, "time_s": h.time_s,
                 "before": h.before.hex(), "after": h.after.hex(), "note": h.note}
                for hops in self.hops.values() for h in hops
                if since_s is None or h.time_s > since_s]


def hops_from_json(items: list[dict]) -> list[TraceHop]:
    return [TraceHop(i["conn"], i["direction"], i["time_s"], bytes.fromhex(i["before"]),
                     bytes.fromhex(i["after"]), i.get("note", {})) for i in items]


def scheduler_view(config, dests, row: int) -> dict:
    """What the scheduler saw for a new connection: servers in scan order and the pick."""
    from userlb.services import int_to_ip
    servers = [{"server": f"{int_to_ip(dests.addr[i])}:{int(dests.port[i])}",
                "weight": int(dests.weight[i]), "active": int(dests.activeconns[i]),
                "inactive": int(dests.inactconns[i]),
                "overhead": int(dests.activeconns[i]) * 256 + int(dests.inactconns[i]),
                "overloaded": bool(dests.overloaded[i])} for i in range(len(dests))]
    return {"service": f"{config.protocol.upper()} {config.vip}:{config.port}"
            if not config.fwmark else f"FWM {config.fwmark}",
            "scheduler": config.scheduler, "servers": servers,
            "pick": servers[row]["server"] if 0 <= row < len(servers) else None}


def matches(flt: dict | None, caddr: int, vaddr: int, daddr: int) -> bool:
    """A trace filter {"client", "vip", "server"} (host-order ints, any subset) on one entry."""
    if not flt:
        return True
    return all(flt.get(k) in (None, v) for k, v in (("client", caddr), ("vip", vaddr),
                                                     ("server", daddr)))


_TCP_FLAGS = "FSRPAUEC"


def _flags(value: int) -> str:
    return "".join(c for bit, c in enumerate(_TCP_FLAGS) if value & (1 << bit)) or "."


def describe(frame: bytes, l4_partial: bool = False) -> dict:
    """Fields of one IPv4 frame for display, with checksum validity checked by scapy.
    `l4_partial`: the TUN flagged the frame NEEDS_CSUM (offload), so its TCP/UDP checksum
    field holds the folded pseudo-header sum, which the NIC or the stack completes later;
    that is what is checked then."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    ip = IP(frame)
    info = {"src": ip.src, "dst": ip.dst, "ttl": ip.ttl, "ip_csum": ip.chksum,
            "ip_csum_ok": IP(bytes(ip)).chksum == _recomputed(ip, IP), "proto": ip.proto}
    for layer, name in ((TCP, "TCP"), (UDP, "UDP"), (ICMP, "ICMP")):
        if layer in ip:
            l4 = ip[layer]
            info["l4"] = name
            info["l4_csum"] = l4.chksum
            if l4_partial and layer is not ICMP:
                info["l4_csum_partial"] = True
                info["l4_csum_ok"] = (l4.chksum - _pseudo_header_sum(ip)) % 0xFFFF == 0
            else:
                info["l4_csum_ok"] = l4.chksum == _recomputed(ip, layer)
            if layer is not ICMP:
                info["sport"], info["dport"] = l4.sport, l4.dport
            if layer is TCP:
                info["flags"] = _flags(int(l4.flags))
            break
    return info


def _recomputed(ip, layer) -> int:
    """What scapy computes for `layer`'s checksum when asked to fill it in."""
    from scapy.layers.inet import IP

    copy = IP(bytes(ip))
    target = copy if layer is IP else copy[layer]
    del target.chksum
    rebuilt = IP(bytes(copy))
    return rebuilt.chksum if layer is IP else rebuilt[layer].chksum


def _pseudo_header_sum(ip) -> int:
    """RFC 793/768 pseudo-header (addresses, protocol, L4 length) summed and folded, not
    complemented: a CHECKSUM_PARTIAL field (spec/perf.md A1)."""
    from userlb.checksum import fold32

    l4_len = ip.len - ip.ihl * 4
    words = [int.from_bytes(bytes(ip)[i:i + 2], "big") for i in (12, 14, 16, 18)]
    return fold32(sum(words) + ip.proto + l4_len)


def _endpoint(info: dict, side: str) -> str:
    port = info.get("sport" if side == "src" else "dport")
    return f"{info[side]}:{port}" if port is not None else info[side]


def _csum(info: dict, key: str) -> str:
    ok = info.get(f"{key}_ok")
    partial = " (partial)" if info.get(f"{key}_partial") else ""
    return f"0x{info[key]:04x}{partial}{'' if ok else ' (BAD)'}"


def _note_lines(note: dict) -> list[str]:
    lines = []
    d = note.get("decision")
    if d:
        lines.append(f"   classification: new connection for {d['service']}; "
                     f"{d['scheduler']} considered (scan order):")
        for s in d["servers"]:
            mark = "  ← picked" if s["server"] == d["pick"] else ""
            lines.append(f"     {s['server']:<21} weight {s['weight']:<5} active {s['active']:<5}"
                         f" inactive {s['inactive']:<5} overhead {s['overhead']:<7}"
                         f"{' OVERLOAD' if s['overloaded'] else ''}{mark}".rstrip())
    elif "state_before" in note:
        lines.append("   classification: connection table hit")
    if "state_before" in note:
        lines.append(f"   state {note['state_before']} → {note['state_after']}, "
                     f"expires in {note['timeout_s']:g} s")
    return lines


def render(hops: list[TraceHop], limit: int = 8) -> str:
    """Hop-by-hop text for one connection's first `limit` packets."""
    lines = []
    if not hops:
        return "(no packets recorded)"
    t0 = hops[0].time_s
    for n, hop in enumerate(hops[:limit], 1):
        partial = bool(hop.note.get("l4_csum_partial"))
        before, after = describe(hop.before, partial), describe(hop.after, partial)
        flags = before.get("flags", before.get("l4", ""))
        if hop.direction == "in":
            what = ("client → VIP", "after DNAT (to real server)")
        else:
            what = ("real server → client", "after SNAT (from VIP)")
        lines.append(f"#{n} +{(hop.time_s - t0) * 1000:.1f} ms  {before.get('l4', '?')} [{flags}]")
        lines.extend(_note_lines(hop.note))
        for label, info in ((what[0], before), (what[1], after)):
            lines.append(f"   {label:<28} {_endpoint(info, 'src'):>21} → "
                         f"{_endpoint(info, 'dst'):<21} ip_csum {_csum(info, 'ip_csum')}  "
                         f"{info.get('l4', 'l4').lower()}_csum {_csum(info, 'l4_csum')}")
    return "\n".join(lines)


def to_pcapng(hops: list[TraceHop], epoch_s: float = 0.0) -> bytes:
    """Each traced packet as read (interface 0) and as written (interface 1), annotated."""
    from userlb import pcapng

    packets = []
    for hop in hops:
        partial = bool(hop.note.get("l4_csum_partial"))
        before, after = describe(hop.before, partial), describe(hop.after, partial)
        what = "DNAT" if hop.direction == "in" else "SNAT"
        note = (f"userlb conn {hop.conn} {hop.direction}: {what} "
                f"{_endpoint(before, 'src')} > {_endpoint(before, 'dst')} becomes "
                f"{_endpoint(after, 'src')} > {_endpoint(after, 'dst')}; "
                f"ip_csum {_csum(before, 'ip_csum')} -> {_csum(after, 'ip_csum')}, "
                f"l4_csum {_csum(before, 'l4_csum')} -> {_csum(after, 'l4_csum')}")
        t = epoch_s + hop.time_s
        packets.append(pcapng.Packet(0, t, hop.before, f"as read from the TUN; {note}"))
        packets.append(pcapng.Packet(1, t, hop.after, f"as written to the TUN; {note}"))
    return pcapng.write(["tun-read (before NAT)", "tun-write (after NAT)"], packets)
