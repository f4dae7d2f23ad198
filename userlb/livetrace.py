"""EDGE: `userlb trace`: follow new connections through a running balancer, live.

Asks the balancer (control socket) to trace the next --count connections that
match the filters (client, VIP, real server), then polls for recorded packets
and prints one block per packet as it arrives: classification, for a new
connection the scheduler's view and pick, the rewrite with checksums before
and after, the state transition and its timeout. Bounded by --seconds; with
--pcap, the packets go to an annotated pcapng file at the end.
"""

from __future__ import annotations

import sys
import time

from userlb import ctlclient, trace

POLL_S = 0.25


def follow(args, out=sys.stdout) -> int:
    flt = {k: getattr(args, k) for k in ("client", "vip", "server") if getattr(args, k)}
    try:
        ctlclient.request(args.ctl, "trace-next", count=args.count, **flt)
    except ctlclient.ControlError as exc:
        print(f"userlb: {exc}", file=sys.stderr)
        return 1
    print(f"tracing the next {args.count} connection(s)"
          f"{' matching ' + str(flt) if flt else ''} for up to {args.seconds:g} s", file=out,
          flush=True)
    deadline = time.monotonic() + args.seconds
    seen: dict[int, int] = {}
    collected: list[trace.TraceHop] = []
    since = None
    while time.monotonic() < deadline:
        hops = trace.hops_from_json(ctlclient.request(args.ctl, "trace", since_s=since))
        fresh = [h for h in hops if h.conn not in seen or h.time_s > seen[h.conn]]
        for hop in sorted(fresh, key=lambda h: h.time_s):
            seen[hop.conn] = max(seen.get(hop.conn, 0.0), hop.time_s)
            collected.append(hop)
            print(f"connection {hop.conn}\n{trace.render([hop])}", file=out, flush=True)
        if hops:
            since = max(h.time_s for h in hops)
        time.sleep(POLL_S)
    if args.pcap:
        with open(args.pcap, "wb") as f:
            f.write(trace.to_pcapng(collected, epoch_s=time.time() - time.monotonic()))
        print(f"wrote {len(collected)} packet(s) before and after NAT to {args.pcap}", file=out)
    return 0
