"""Read-only views of the engine for listings, metrics and the control socket.

Plain dicts of plain values (JSON-ready), taken on the data-path thread so
they are consistent with one moment. Decides nothing.
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
