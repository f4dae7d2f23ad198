"""`userlb demo`: a complete lab showing traffic balanced across real servers.

Builds the namespace lab (one client, a router, three real servers), runs the
balancer in the router namespace, sends a bounded number of real HTTP requests
and UDP datagrams from the client namespace through the VIP, then prints the
requests each real server answered, the service and connection tables as
ipvsadm shows them, and the first connection's packets hop by hop. Bounded in
count and time; the lab is torn down however the demo ends. With `web=True`
(`userlb demo --web`) the balancer also serves the web view and paced traffic runs
for `web_seconds` instead of the burst (webdemo.py).
"""

from __future__ import annotations

import collections
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from userlb import ctlclient, listing, trace, webdemo
from userlb.lab import ECHO_PORT, VIP, Lab

DEADLINE_S = 45.0
SHOW_CONNECTIONS = 12


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def _http_burst(lab: Lab, requests: int, workers: int, deadline: float) -> collections.Counter:
    served: collections.Counter = collections.Counter()

    def one(_: int) -> str:
        if time.monotonic() > deadline:
            return "skipped (deadline)"
        try:
            status, headers, _body = lab.http_get("/", timeout_s=5.0)
            return headers.get("x-server", f"HTTP {status}")
        except OSError as exc:
            return f"failed: {exc.__class__.__name__}"

    with ThreadPoolExecutor(workers) as pool:
        served.update(pool.map(one, range(requests)))
    return served


def _udp_echo(lab: Lab, count: int) -> list[str]:
    replies = []
    for i in range(count):
        sock = lab.client_socket(socket.SOCK_DGRAM)
        sock.settimeout(2.0)
        try:
            sock.sendto(f"ping {i}".encode(), (VIP, ECHO_PORT))
            replies.append(sock.recv(2048).decode())
        except OSError as exc:
            replies.append(f"failed: {exc}")
        finally:
            sock.close()
    return replies


def main(requests: int = 60, scheduler: str = "wlc", out=sys.stdout, web: bool = False,
         web_seconds: float = 60.0) -> int:
    start = time.monotonic()
    signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C ends the demo even when started from a shell that made SIGINT ignored (a
    # background job of a non-interactive shell): the lab's processes get it regardless
    signal.signal(signal.SIGINT, signal.default_int_handler)
    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    with Lab(servers=3) as lab:
        say(f"lab: client {lab.client_ns}, router {lab.router_ns}, "
            f"{lab.servers} real servers; VIP {VIP}")
        token = webdemo.new_token() if web else ""
        balancer = lab.start_balancer(webdemo.config(lab, scheduler, token) if web else
                                      lab.config_text(scheduler=scheduler, trace_connections=1))
        ctl = balancer.ctl_path
        say(f"userlb running in {lab.router_ns} (scheduler {scheduler})\n")
        first = lab.http_get("/")
        served = (webdemo.serve(lab, web_seconds, token, say) if web else
                  _http_burst(lab, requests - 1, 4, start + DEADLINE_S))
        served[first[1].get("x-server", "?")] += 1
        say(f"{sum(served.values())} HTTP requests through {VIP}:80, answered by:")
        for name, n in sorted(served.items()):
            say(f"  {name:<12} {n}")
        say("\nUDP echo through the VIP: " + ", ".join(_udp_echo(lab, 3)))
        view = ctlclient.request(ctl, "services")
        say("\n$ userlb show services\n" + listing.format_services(
            listing.services_from_json(view["services"]), view["table_size"]))
        conns = ctlclient.request(ctl, "conns")
        lines = listing.format_connections(listing.connections_from_json(conns)).splitlines()
        shown = lines[: 2 + SHOW_CONNECTIONS]
        if len(lines) > len(shown):
            shown.append(f"... and {len(lines) - len(shown)} more (userlb show conns)")
        say("$ userlb show conns\n" + "\n".join(shown) + "\n")
        hops = trace.hops_from_json(ctlclient.request(ctl, "trace"))
        say("First connection, hop by hop (checksums verified by scapy; \"(partial)\": TUN "
            "offload, the field holds the pseudo-header sum the kernel completes):")
        say(trace.render([h for h in hops if h.conn == hops[0].conn] if hops else []))
        stats = ctlclient.request(ctl, "stats")
        say(f"\ndrops: {stats['drops'] or 'none'}; "
            f"forwarded unmodified: {stats['passed_unmodified']}")
    say(f"\nlab torn down; demo took {time.monotonic() - start:.1f} s")
    failed = sum(n for k, n in served.items() if not k.startswith("rs"))
    return 0 if failed == 0 and len([k for k in served if k.startswith("rs")]) == 3 else 1
