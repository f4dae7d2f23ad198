"""Read-only views of the engine for listings, metrics and the control socket.

Plain dicts of plain values (JSON-ready), taken on the data-path thread so
they are consistent with one moment. with_edge() adds, on the control plane's
side, what the engine cannot see: the TUN device's counters (tunstats) and the
data-path thread's, with their drops under drops.EDGE_DROP_REASONS next to the
engine's. Decides nothing.
"""

from __future__ import annotations

import numpy as np

from userlb import tcpstate
from userlb.conntable import CONN_F_TEMPLATE
from userlb.persist import TEMPLATE_PROTO_BIT, TEMPLATE_STATE_NAMES
from userlb.services import PROTOCOL_NAMES, int_to_ip


def dest_row(d, i: int) -> dict:
    """Real server `i` of DestTable `d`: address, weight, counters, thresholds, statistics."""
    return {"address": int_to_ip(d.addr[i]), "addr": int(d.addr[i]), "port": int(d.port[i]),
            "weight": int(d.weight[i]), "active": int(d.activeconns[i]),
            "inactive": int(d.inactconns[i]), "persist": int(d.persistconns[i]),
            "u_threshold": int(d.u_threshold[i]), "l_threshold": int(d.l_threshold[i]),
            "conns": int(d.conns[i]), "inpkts": int(d.inpkts[i]),
            "outpkts": int(d.outpkts[i]), "inbytes": int(d.inbytes[i]),
            "outbytes": int(d.outbytes[i]), "overloaded": bool(d.overloaded[i])}


def services(engine) -> list[dict]:
    out = []
    for rt in engine.services:
        if rt is None:                  # deleted service
            continue
        c, d = rt.config, rt.dests
        dests = [dest_row(d, i) for i in range(len(d))]
        out.append({"protocol": c.protocol.upper(), "vip": c.vip, "port": c.port,
                    "scheduler": c.scheduler, "flags": list(c.sched_flags),
                    "persistent_s": c.persistent_s, "netmask": c.netmask, "fwmark": c.fwmark,
                    "key": list(c.key),
                    "dests": dests})
    return out


def connections(engine, now: float) -> list[dict]:
    t = engine.table
    ids = np.asarray(t.live_ids())
    rows = []
    for i in ids.tolist():
        proto = int(t.proto[i]) & ~TEMPLATE_PROTO_BIT
        template = bool(t.flags[i] & CONN_F_TEMPLATE)
        names = TEMPLATE_STATE_NAMES if template else tcpstate.STATE_NAMES
        rows.append({"id": i, "protocol": PROTOCOL_NAMES.get(proto, str(proto)),
                     "expires_s": max(0.0, float(t.expires[i]) - now),
                     "state": names[int(t.state[i])], "template": template,
                     "caddr": int_to_ip(t.caddr[i]), "cport": int(t.cport[i]),
                     "vaddr": int_to_ip(t.vaddr[i]), "vport": int(t.vport[i]),
                     "daddr": int_to_ip(t.daddr[i]), "dport": int(t.dport[i])})
    return rows


def stats(engine) -> dict:
    return {"drops": engine.drop_counts(), "passed_unmodified": engine.passed,
            "connections": len(engine.table), "table_size": engine.table.capacity}


def edge_drops(tun: dict | None, datapath: dict | None) -> dict[str, int]:
    """drops.EDGE_DROP_REASONS from the TUN's counters (tunstats.tun_counters) and the
    data path's (DataPath.counters()); a source that is None gives none."""
    out = {}
    if tun is not None:
        out["tun_queue_full"] = int(tun.get("tx_dropped", 0))
    if datapath is not None:
        out["write_refused"] = int(datapath.get("write_failures", 0))
    return out


def with_edge(stats_: dict, tun: dict | None, datapath: dict | None) -> dict:
    """`stats` (above) plus "tun" and "datapath" sections, and the edge drops that are not
    zero under "drops" (as engine.drop_counts lists only reasons that happened)."""
    drops = dict(stats_["drops"])
    drops.update({k: v for k, v in edge_drops(tun, datapath).items() if v})
    return {**stats_, "drops": drops, "tun": tun, "datapath": datapath}
