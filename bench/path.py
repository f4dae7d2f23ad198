"""Packet-path bench: the kernel, a C forwarder on the TUN, and userlb, side by side.

What it does: builds one namespace lab (3 clients, a router, 3 real servers),
splits the two cores as spec/perf.md B1 (router core vs load core), and runs the
data paths one after the other on it (pathlab: nftables DNAT with conntrack;
bench/cfwd.c on userlb's TUN plumbing; `userlb run` as configured by default,
"userlb", and with `[router] offload = false`, "userlb:no-offload"; with `--paths
all` also userlb's TUN I/O variants for small packets, USERLB_VARIANTS: io =
"read", io = "sqpoll", two queues). For each it measures, every load bounded in time:
- TCP bulk Gbit/s: iperf3 -P 2 from each of the 3 client addresses (median of runs);
- the 64-byte UDP loss-free rate: a sweep of paced iperf3 -u -l 64 -b RATE, the
  delivered packets/s at the highest rate with <= 1 % loss;
- delivered packets/s at 2x and 4x that rate (what the sender managed is recorded);
- HTTP requests/s: wrk -c 50 keep-alive through the VIP (nginx on the real servers
  when installed, else the lab's Python http.server, which then is the limit);
- router CPU per packet: the router core's busy time (wall clock less /proc/stat's
  idle) and the forwarder's own CPU (/proc/PID/stat) over the packets the router
  received (a GSO super-packet counts once).
It prints a table of every figure with the ratios of each userlb path over the
kernel and over C, and writes path.json and path.png. `--smoke`: about a second
per load, two sweep steps. `--paths userlb,c` runs those paths (`all`: every one;
ratios only where both sides ran), `--only udp` (or tcp, http; comma-separated) a subset of the loads; figures of a
load not run are None. Each overload step also records where the missing packets
went (pathload.drop_counters: the TUN's tx_dropped, the router's veth and backlog
drops, the receivers' socket-buffer drops, and userlb's own drop counters).

What it does not do: judge the ratios against issue targets, or run without root,
/dev/net/tun, iperf3, wrk, nft and gcc (./dev test installs them).

Mirrors: spec/perf.md B1-B3 (topology, CPU split, load commands, the kernel as the
reference) and "The TUN ceiling for small packets" (the C forwarder as the yardstick).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from userlb.bench import pathlab, pathload
from userlb.bench.harness import Budget, Progress, format_table, metadata, write_json

DEFAULT_MAX_S = {"full": 600.0, "smoke": 150.0}
PARTS = ("tcp", "udp", "http")              # the loads; --only picks some
# userlb's variants: name -> ([router] lines, pinned to the router core, the loads it runs).
# The io and queue variants answer the small-packet target only (64-B UDP); the SQPOLL
# kernel thread and the second queue's worker are meant to use a second core, so those
# two run unpinned (on this 2-core lab, the load core).
USERLB_VARIANTS = {
    "userlb": ("", True, PARTS),                         # the defaults: offload, io_uring
    "userlb:no-offload": ("offload = false", True, PARTS),
    "userlb:read": ('io = "read"', True, ("udp",)),
    "userlb:sqpoll": ('io = "sqpoll"', False, ("udp",)),
    "userlb:2q": ("queues = 2", False, ("udp",)),
}
USERLB_PATHS = tuple(USERLB_VARIANTS)        # the paths given ratios vs kernel and C
RUN_ORDER = ("c", *USERLB_PATHS, "kernel")   # kernel last: its conntrack stays out of the
SHOW_ORDER = ("kernel", "c", *USERLB_PATHS)  # TUN runs
DEFAULT_PATHS = ("c", "userlb", "userlb:no-offload", "kernel")
BASES = ("kernel", "c")
LOSS_FREE = 0.01                            # spec/perf.md: highest rate with <= 1 % loss
FAILS_TO_STOP = 2                           # consecutive lossy steps that end a sweep
OVERLOAD = (2, 4)
STEP_OVERHEAD_S = 1.0                       # iperf3 start-up and result exchange, about
PARAMS = {
    "full": {"tcp_seconds": 5, "tcp_runs": 3, "streams_per_client": 2, "udp_seconds": 3,
             "udp_grid_pps": [5_000, *(10_000 * k for k in range(1, 13))], "udp_refine_steps": 2,
             "overload_seconds": 4,
             "http_seconds": 5, "http_connections": 50},
    "smoke": {"tcp_seconds": 1, "tcp_runs": 1, "streams_per_client": 2, "udp_seconds": 1,
              "udp_grid_pps": [2_000, 5_000], "udp_refine_steps": 0, "overload_seconds": 1,
              "http_seconds": 1, "http_connections": 50},
}
FIGURES = [   # key, label, unit
    ("tcp_gbps", "TCP bulk, iperf3 -P 2 x 3 clients", "Gbit/s"),
    ("udp_loss_free_pps", "64-B UDP loss-free rate (<= 1 % loss)", "pkts/s"),
    ("udp_2x_sent_pps", "64-B UDP sent when asked for 2x loss-free", "pkts/s"),
    ("udp_2x_delivered_pps", "64-B UDP delivered at 2x loss-free", "pkts/s"),
    ("udp_4x_sent_pps", "64-B UDP sent when asked for 4x loss-free", "pkts/s"),
    ("udp_4x_delivered_pps", "64-B UDP delivered at 4x loss-free", "pkts/s"),
    ("http_requests_per_s", "HTTP wrk -c 50 keep-alive", "req/s"),
    ("router_us_per_packet_udp", "router core per packet, UDP loss-free", "us"),
    ("forwarder_us_per_packet_udp", "forwarder process per packet, UDP loss-free", "us"),
    ("router_us_per_packet_tcp", "router core per packet, TCP bulk", "us"),
    ("router_core_busy_tcp", "router core busy, TCP bulk", "share"),
]


def missing_prerequisites() -> list[str]:
    missing = [f"the {tool} command" for tool in pathlab.missing_tools()]
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun")
    return missing


def background_busy(seconds: float = 1.0) -> dict:
    """Each core's busy share over `seconds` before the lab exists (other load skews us)."""
    def sample():
        return {cpu: pathload.core_times_us(cpu) for cpu in range(os.cpu_count() or 1)}
    a = sample()
    time.sleep(seconds)
    b = sample()
    return {f"cpu{c}": max(0.0, (b[c][0] - a[c][0]) / (b[c][1] - a[c][1])) for c in a}


def sweep_udp(lab, path, p: dict, deadline: float, progress: Progress) -> tuple[list, bool]:
    """Paced 64-B UDP up the grid until FAILS_TO_STOP lossy steps, then udp_refine_steps
    bisections between the highest loss-free rate and the lowest lossy one above it (as
    RFC 2544's throughput search: the grid's 10 k steps alone would put a path that passes
    59 k at 50 k). Stops at the deadline; returns the steps and whether it was cut short."""
    steps, fails = [], 0

    def step(rate) -> dict | None:
        if steps and time.monotonic() + p["udp_seconds"] + STEP_OVERHEAD_S > deadline:
            return None
        s = pathload.measured(lab, path.pid, pathload.udp_paced, rate, p["udp_seconds"])
        steps.append(s)
        progress.step(f"{path.name}: UDP {rate:,.0f} pps offered -> {s['delivered_pps']:,.0f} "
                      f"delivered, loss {s['loss']:.2%}, router core "
                      f"{s['router_core_busy']:.0%}, load core {s['load_core_busy']:.0%}")
        return s

    for rate in p["udp_grid_pps"]:
        s = step(rate)
        if s is None:
            return steps, True
        fails = fails + 1 if not passes(s) else 0
        if fails >= FAILS_TO_STOP:
            break
    for _ in range(p.get("udp_refine_steps", 0)):
        best = loss_free(steps)
        above = [s["offered_pps_nominal"] for s in steps if not passes(s) and
                 (best is None or s["offered_pps_nominal"] > best["offered_pps_nominal"])]
        if best is None or not above:
            break
        if step((best["offered_pps_nominal"] + min(above)) / 2) is None:
            return steps, True
    return steps, False


def passes(step: dict) -> bool:
    return step["loss"] <= LOSS_FREE and not step["errors"]


def loss_free(steps: list) -> dict | None:
    ok = [s for s in steps if passes(s)]
    return max(ok, key=lambda s: s["offered_pps_nominal"]) if ok else None


def measure_tcp(lab, path, p: dict, progress: Progress) -> list:
    runs = []
    for _ in range(p["tcp_runs"]):
        runs.append(pathload.measured(lab, path.pid, pathload.tcp_bulk, p["tcp_seconds"],
                                      p["streams_per_client"]))
        progress.step(f"{path.name}: TCP {runs[-1]['gbps']:.2f} Gbit/s, router core "
                      f"{runs[-1]['router_core_busy']:.0%} busy")
    return runs


def overload_step(lab, path, k: int, base: float, p: dict, progress: Progress) -> dict:
    """Paced UDP at k x the loss-free rate, with every drop counter around it."""
    step = pathload.measured(lab, path.pid, pathload.udp_paced, k * base, p["overload_seconds"],
                             counters=getattr(path, "counters", True))
    step["overload_factor"] = k
    drops = step["drops"]
    progress.step(f"{path.name}: UDP at {k}x = {k * base:,.0f} pps offered -> "
                  f"{step['delivered_pps']:,.0f} delivered (sent {step['sent_pps']:,.0f}; "
                  f"lost {step['lost']:,}: " +
                  ", ".join(f"{n} {v:,}" for n, v in drops.items() if v) + ")")
    return step


def measure_path(lab, path, p: dict, deadline: float, progress: Progress,
                 only: tuple = PARTS) -> dict:
    """The chosen loads (`only`) against one data path, started and stopped here."""
    tcp, sweep, truncated, best, overload, http = [], [], False, None, [], None
    path.start()
    try:
        status = lab.http_get("/", timeout_s=5)[0]
        progress.step(f"{path.name}: up, HTTP through the VIP answers {status}")
        if "tcp" in only:
            tcp = measure_tcp(lab, path, p, progress)
        if "udp" in only:
            reserve = len(OVERLOAD) * (p["overload_seconds"] + STEP_OVERHEAD_S) + 2 + (
                p["http_seconds"] if "http" in only else 0)
            sweep, truncated = sweep_udp(lab, path, p, deadline - reserve, progress)
            best = loss_free(sweep)
            base = best["delivered_pps"] if best else p["udp_grid_pps"][0]
            overload = [overload_step(lab, path, k, base, p, progress) for k in OVERLOAD]
        if "http" in only:
            http = pathload.measured(lab, path.pid, pathload.http_wrk, p["http_seconds"],
                                     p["http_connections"])
            progress.step(f"{path.name}: HTTP {http['requests_per_s']:,.0f} req/s")
    finally:
        detail = path.stop()
    return {"http_check_status": status, "tcp": tcp, "udp_sweep": sweep,
            "udp_sweep_truncated": truncated, "udp_loss_free_step": best,
            "overload": overload, "http": http, "detail": detail,
            "figures": figures(tcp, sweep, best, overload, http, p)}


def figures(tcp: list, sweep: list, best: dict | None, overload: list, http: dict | None,
            p: dict) -> dict:
    """The table's figures; those of a load that was not run are None."""
    out = dict.fromkeys([key for key, _, _ in FIGURES] + ["load_core_busy_tcp"])
    if tcp:
        mid = sorted(tcp, key=lambda r: r["gbps"])[len(tcp) // 2]        # the median run
        out.update(tcp_gbps=statistics.median(r["gbps"] for r in tcp),
                   router_us_per_packet_tcp=mid["router_core_us_per_packet"],
                   router_core_busy_tcp=mid["router_core_busy"],
                   load_core_busy_tcp=mid["load_core_busy"])
    if http is not None:
        out["http_requests_per_s"] = http["requests_per_s"]
    if not sweep:
        return out
    grid = p["udp_grid_pps"]
    out.update({
        "udp_loss_free_pps": best["delivered_pps"] if best else 0.0,
        "udp_2x_sent_pps": overload[0]["sent_pps"],
        "udp_2x_delivered_pps": overload[0]["delivered_pps"],
        "udp_4x_sent_pps": overload[1]["sent_pps"],
        "udp_4x_delivered_pps": overload[1]["delivered_pps"],
        "router_us_per_packet_udp": best["router_core_us_per_packet"] if best else None,
        "forwarder_us_per_packet_udp": best["forwarder_us_per_packet"] if best else None,
        "udp_loss_free_at_grid_top": bool(best) and best["offered_pps_nominal"] == grid[-1],
        "udp_loss_free_sender_bound": bool(best) and best["sent_pps"] < 0.95 * best[
            "offered_pps_nominal"],
        "udp_limit": udp_limit(sweep, best),
    })
    return out


def udp_limit(sweep: list, best: dict | None) -> str:
    """The busier core at the first step past the loss-free one: the router's, or the
    load core (generators, receivers and real servers; there the figure is a floor)."""
    past = sorted((s for s in sweep if best is None or s["offered_pps_nominal"] > best[
        "offered_pps_nominal"]), key=lambda s: s["offered_pps_nominal"])
    if not past:
        return "not reached (the grid ended first)"
    router, load = past[0]["router_core_busy"], past[0]["load_core_busy"]
    return (f"router core ({router:.0%} busy)" if router >= load
            else f"load core ({load:.0%} busy; router core {router:.0%})")


def ratios(paths: dict) -> dict:
    """Each userlb path over kernel and over C, for the pairs that both ran."""
    out = {}
    for name in USERLB_PATHS:
        for base in BASES:
            if name not in paths or base not in paths:
                continue
            row = {}
            for key, _, _ in FIGURES:
                a, b = paths[name]["figures"][key], paths[base]["figures"][key]
                row[key] = a / b if a is not None and b else None
            out[f"{name}/{base}"] = row
    return out


TITLES = {"kernel": "kernel", "c": "C (TUN)", **{n: n for n in USERLB_PATHS}}


def table(paths: dict, rat: dict) -> str:
    def cell(v):
        return "-" if v is None else float(v)
    shown = [n for n in SHOW_ORDER if n in paths]
    pairs = list(rat)
    rows = [[f"{label} ({unit})", *(cell(paths[n]["figures"][key]) for n in shown),
             *(cell(rat[r][key]) for r in pairs)]
            for key, label, unit in FIGURES]
    heads = [r.replace("/c", "/C") for r in pairs]
    text = format_table(["figure", *(TITLES[n] for n in shown), *heads], rows)
    limits = "; ".join(f"{n}: {paths[n]['figures']['udp_limit']}" for n in shown
                       if paths[n]["figures"]["udp_limit"] is not None)
    text += f"\n64-B UDP past the loss-free rate, the busier core: {limits}" if limits else ""
    lost = "; ".join(f"{n} {s['overload_factor']}x: " + (", ".join(
        f"{r} {v:,}" for r, v in s["drops"].items() if v) or "none counted") + f" of {s['lost']:,}"
        for n in shown for s in paths[n]["overload"])
    return text + (f"\n64-B UDP overload, lost packets by where they were dropped: {lost}"
                   if lost else "")


def run_lab(p: dict, budget: Budget, progress: Progress, setup: dict,
            names: tuple = RUN_ORDER, only: tuple = PARTS) -> dict:
    paths = {}
    with pathlab.Lab(servers=3, clients=3) as lab:
        setup["cpu_split"] = pathlab.split_cpus(lab)
        pathlab.start_iperf_servers(lab)
        setup["http_server"] = pathlab.start_http_servers(lab)
        if not pathlab.wait_listening(lab):
            raise RuntimeError("the real servers' iperf3/HTTP listeners did not come up")
        tmp = pathlab.tempdir()
        try:
            binary = pathlab.build_cfwd(tmp)
            for i, name in enumerate(names):
                deadline = time.monotonic() + budget.share(len(names) - i)
                if name == "kernel":
                    path = pathlab.KernelPath(lab)
                elif name == "c":
                    path = pathlab.CPath(lab, binary)
                else:
                    router, pinned, _ = USERLB_VARIANTS[name]
                    path = pathlab.UserlbPath(lab, name, router, pinned)
                paths[name] = measure_path(lab, path, p, deadline, progress,
                                           loads_of(name, only))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def loads_of(name: str, only: tuple) -> tuple:
    """The loads `name` runs among those asked for."""
    mine = USERLB_VARIANTS[name][2] if name in USERLB_VARIANTS else PARTS
    return tuple(part for part in only if part in mine)


def _names(text: str, allowed: tuple, what: str) -> tuple:
    if text == "all":
        return allowed
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names or not set(names) <= set(allowed):
        raise argparse.ArgumentTypeError(f"a comma-separated subset of "
                                         f"{','.join(allowed)}, not {text!r}")
    return names


def parse_options(argv: list[str]) -> dict:
    """The path bench's own options: --paths NAME,NAME and --only LOAD,LOAD."""
    p = argparse.ArgumentParser(prog="userlb bench path", add_help=False)
    p.add_argument("--paths", type=lambda t: _names(t, SHOW_ORDER, "--paths"), default=None,
                   help=f"run these paths ({','.join(SHOW_ORDER)}, or all; "
                        f"default {','.join(DEFAULT_PATHS)})")
    p.add_argument("--only", type=lambda t: _names(t, PARTS, "--only"), default=None,
                   help="run only these loads (tcp,udp,http; default all)")
    args = p.parse_args(argv)
    return {k: v for k, v in vars(args).items() if v is not None}


def run(mode: str, max_seconds: float, out: Path, seed: int = 1,
        paths: tuple | None = None, only: tuple | None = None) -> dict:
    if missing := missing_prerequisites():
        raise RuntimeError("the path bench needs " + ", ".join(missing) +
                           " (./dev test installs the tools)")
    p = PARAMS[mode]
    names = tuple(n for n in RUN_ORDER if n in (paths or DEFAULT_PATHS))
    only = tuple(part for part in PARTS if part in (only or PARTS))
    budget = Budget(max_seconds)

    def steps(loads):
        return (("tcp" in loads) * p["tcp_runs"] + ("http" in loads)
                + ("udp" in loads) * (len(p["udp_grid_pps"]) + p["udp_refine_steps"]
                                      + len(OVERLOAD)))
    progress = Progress("path", sum(1 + steps(loads_of(n, only)) for n in names))
    setup = {"background_busy": background_busy(), "tools": pathlab.tool_versions(),
             "cfwd": "bench/cfwd.c -v (virtio header, TSO4/TSO6/CSUM offload), gcc -O2"}
    affinity = os.sched_getaffinity(0)
    if pathlab.cpu_split_possible():         # this process and what it starts: the load core
        os.sched_setaffinity(0, {pathlab.LOAD_CPU})
    try:
        results = run_lab(p, budget, progress, setup, names, only)
    finally:
        os.sched_setaffinity(0, affinity)
    rat = ratios(results)
    text = table(results, rat)
    print(text)
    busy = max(setup["background_busy"].values())
    if busy > 0.1:
        print(f"note: the machine was {busy:.0%} busy before the run; figures are skewed",
              file=sys.stderr)
    payload = {"bench": "path", "meta": metadata(mode), "params": p, "setup": setup,
               "selection": {"paths": list(names), "only": list(only)},
               "figures": [{"key": k, "label": l, "unit": u} for k, l, u in FIGURES],
               "paths": {n: results[n] for n in SHOW_ORDER if n in results}, "ratios": rat,
               "table": text,
               "elapsed_s": time.perf_counter() - budget.start, "files": {}}
    json_path = Path(out) / "path.json"
    payload["files"] = {"json": str(json_path),
                        "png": plot(Path(out) / "path.png", results, rat)}
    write_json(json_path, payload)
    return payload


def plot(path: Path, paths: dict, rat: dict) -> str | None:
    """Delivered vs offered 64-B UDP per path, and each userlb path's ratios
    per figure."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written", file=sys.stderr)
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    for name in (n for n in SHOW_ORDER if n in paths):
        pts = sorted((s["sent_pps"] / 1e3, s["delivered_pps"] / 1e3)
                     for s in paths[name]["udp_sweep"] + paths[name]["overload"])
        if pts:
            left.plot(*zip(*pts), marker="o", ms=3, label=name)
    left.set(title="64-byte UDP through the router", xlabel="sent (kpps)",
             ylabel="delivered (kpps)")
    left.grid(True, lw=0.3)
    left.legend()
    keys = [k for k, _, _ in FIGURES]
    pairs = [tuple(r.split("/")) for r in rat]
    width = 0.8 / max(1, len(pairs))
    for j, (name, base) in enumerate(pairs):
        ys = [rat[f"{name}/{base}"][k] or 0.0 for k in keys]
        right.bar([i + (j - (len(pairs) - 1) / 2) * width for i in range(len(keys))], ys,
                  width, label=f"{name} / {base}")
    right.axhline(1.0, color="black", lw=0.8)
    right.set_xticks(range(len(keys)), keys, rotation=35, ha="right", fontsize=7)
    right.set(title="userlb's ratios (CPU rows: > 1 means more CPU)", yscale="log")
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
