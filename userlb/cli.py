"""Command line: argparse only; each command calls into its own module.

  userlb run CONFIG          run the balancer (TUN, plumbing, data path, control socket)
  userlb demo [--web]        build the namespace lab and show traffic being balanced
  userlb check-config FILE   validate a config; errors as path:line: message
  userlb show WHAT           services | conns | stats | trace | health | ha, from a
                             running balancer
  userlb reload              re-read the config of a running balancer (as SIGHUP)
  userlb trace [FILTERS]     follow the next connections through the balancer, hop by hop
  userlb adm ARGS            ipvsadm's commands against a running balancer (-L -n, -a, -e, ...)
  userlb lab-cleanup         delete namespaces left by killed lab runs
  userlb bench WHAT          sched | conntable | engine | path [--smoke]: ratios against baselines
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_CTL = "/run/userlb.sock"


def _parser() -> argparse.ArgumentParser:
    from userlb import sched
    p = argparse.ArgumentParser(
        prog="userlb", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="An LVS-NAT load balancer in user space.",
        epilog="schedulers: " + " ".join(sched.available()))
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="run the balancer with a config file")
    r.add_argument("config")
    d = sub.add_parser("demo", help="namespace lab: clients, router, 3 real servers")
    d.add_argument("--requests", type=int, default=60)
    d.add_argument("--scheduler", default="wlc")
    d.add_argument("--web", action="store_true",
                   help="also serve the web view and keep traffic flowing (see --web-seconds)")
    d.add_argument("--web-seconds", type=float, default=60.0,
                   help="with --web: seconds of traffic before the lab is torn down")
    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("config")
    s = sub.add_parser("show", help="ask a running balancer")
    s.add_argument("what", choices=["services", "conns", "stats", "trace", "health", "ha"])
    s.add_argument("--ctl", default=DEFAULT_CTL, help="control socket path")
    s.add_argument("--pcap", metavar="FILE",
                   help="with `trace`: also write the packets before and after NAT as "
                        "annotated pcapng (wireshark/tshark -r FILE)")
    sub.add_parser("lab-cleanup", help="remove namespaces of killed lab runs")
    t = sub.add_parser("trace", help="live: the next connections' packets, hop by hop, with "
                                     "classification, the scheduler's view and state changes")
    t.add_argument("--ctl", default=DEFAULT_CTL, help="control socket path")
    t.add_argument("--client", help="only connections from this client address")
    t.add_argument("--vip", help="only connections to this VIP")
    t.add_argument("--server", help="only connections to this real server address")
    t.add_argument("--count", type=int, default=1, help="connections to trace (default 1)")
    t.add_argument("--seconds", type=float, default=30.0, help="stop after this long")
    t.add_argument("--pcap", metavar="FILE", help="also write annotated pcapng at the end")
    rl = sub.add_parser("reload", help="re-read the running balancer's config and apply the "
                                       "differences (as SIGHUP)")
    rl.add_argument("--ctl", default=DEFAULT_CTL, help="control socket path")
    sub.add_parser("adm", help="ipvsadm's commands and options against a running balancer "
                               "(userlb adm [--ctl PATH] -L -n ...)")
    b = sub.add_parser("bench", help="benchmarks against same-run baselines (python -m userlb.bench)",
                       add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["adm"]:                 # ipvsadm's own option syntax (-Ln, -p [t]) first
        return _adm(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "run":
        from userlb.daemon import run
        return run(args.config)
    if args.command == "demo":
        from userlb.demo import main as demo
        try:
            return demo(requests=args.requests, scheduler=args.scheduler, web=args.web,
                        web_seconds=args.web_seconds)
        except KeyboardInterrupt:          # Ctrl-C/SIGTERM: the lab is already torn down
            print("\ninterrupted: lab torn down", file=sys.stderr)
            return 130
    if args.command == "check-config":
        from userlb import config, configload
        try:
            cfg, warnings = configload.load_any(args.config)
        except config.ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        for warning in warnings:
            print(warning, file=sys.stderr)
        print(f"{args.config}: OK ({len(cfg.services)} service(s)"
              + (f", {len(warnings)} warning(s))" if warnings else ")"))
        return 0
    if args.command == "show":
        return _show(args)
    if args.command == "reload":
        return _reload(args)
    if args.command == "trace":
        from userlb.livetrace import follow
        return follow(args)
    if args.command == "bench":
        from userlb.bench.__main__ import main as bench
        return bench(args.args)
    if args.command == "lab-cleanup":
        from userlb.lab import cleanup_stale
        print("\n".join(cleanup_stale()) or "nothing to clean up")
        return 0
    _parser().print_help()
    return 0


def _adm(argv: list[str]) -> int:
    """`userlb adm [--ctl PATH] <ipvsadm arguments>`: run remotely, print as ipvsadm does."""
    from userlb import ctlclient
    ctl = DEFAULT_CTL
    if argv[:1] == ["--ctl"] and len(argv) > 1:
        ctl, argv = argv[1], argv[2:]
    stdin = sys.stdin.read() if ("-R" in argv or "--restore" in argv) else None
    try:
        out = ctlclient.request(ctl, "adm", argv=argv, stdin=stdin)
    except ctlclient.ControlError as exc:
        print(f"userlb: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(out["stdout"])
    sys.stderr.write(out["stderr"])
    return int(out["exit_code"])


def _reload(args) -> int:
    from userlb import ctlclient
    try:
        result = ctlclient.request(args.ctl, "reload", timeout_s=60)
    except ctlclient.ControlError as exc:
        print(f"userlb: reload refused: {exc}", file=sys.stderr)
        return 1
    for line in result["warnings"]:
        print(line, file=sys.stderr)
    print("\n".join(result["applied"]) or "no changes")
    return 0


def _show(args) -> int:
    from userlb import ctlclient, listing, trace
    try:
        result = ctlclient.request(args.ctl, "services" if args.what == "health" else args.what)
    except ctlclient.ControlError as exc:
        print(f"userlb: {exc}", file=sys.stderr)
        return 1
    if args.what == "services":
        print(listing.format_services(listing.services_from_json(result["services"]),
                                      result["table_size"]), end="")
    elif args.what == "health":
        for svc in result["services"]:
            print(f"{svc['protocol']}  {svc['vip']}:{svc['port']}")
            for d in svc["dests"]:
                print(f"  -> {d['address']}:{d['port']:<6} weight {d['weight']:<6} {d['health']}")
    elif args.what == "conns":
        print(listing.format_connections(listing.connections_from_json(result)), end="")
    elif args.what == "trace":
        hops = trace.hops_from_json(result)
        if args.pcap:
            import time
            with open(args.pcap, "wb") as f:
                f.write(trace.to_pcapng(hops, epoch_s=time.time() - time.monotonic()))
        for conn in dict.fromkeys(h.conn for h in hops):
            print(f"connection {conn}:\n" + trace.render([h for h in hops if h.conn == conn]))
    else:
        print(json.dumps(result, indent=2))
    return 0
