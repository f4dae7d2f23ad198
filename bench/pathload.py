"""EDGE: load generators and router counters for the path bench.

What it does: runs one bounded load from the client namespace (iperf3 TCP with
parallel streams, iperf3 paced 64-byte UDP, wrk HTTP keep-alive), each client
address against its own VIP port, and measures the router around it: packets
the router received on its veths, the router core's busy time (wall clock less
/proc/stat's idle), the forwarder process's CPU from /proc/PID/stat, and the
TUN's drops. drop_counters() reads every place a packet can be dropped on its way
(the TUN queue, the veths, the router core's backlog, the receivers' and senders'
UDP socket buffers, and the forwarder's own counters when it has them), so an
overload step says where the lost packets went. Every subprocess has a deadline;
one that overruns it is killed and reported.

What it does not do: pick rates or decide what is loss-free (path.py does).

Mirrors: spec/perf.md B2's load commands and B1's "router core busy".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass

from userlb.lab import ROUTER_CLIENT_IF, TUN_NAME, VIP, Lab, client_ip
from userlb.netns import exec_argv, ip_cmd

from userlb.bench.pathlab import HTTP_VPORT, LOAD_CPU, ROUTER_CPU, iperf_ports, pinned

UDP_PAYLOAD_BYTES = 64
GRACE_S = 15.0                  # a load may overrun its nominal duration by this much
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Snapshot:
    t: float
    core_busy_us: float         # router core (core_times_us)
    core_total_us: float
    load_busy_us: float         # load core: generators, receivers, real servers
    router_rx: int              # packets received on rc0 and the server-side veths
    tun_tx_dropped: int
    proc_cpu: int               # forwarder process utime + stime, jiffies


def core_times_us(cpu: int) -> tuple[float, float]:
    """(busy, wall) microseconds of one core: busy = wall clock - idle.

    /proc/stat's idle and iowait are exact on a NO_HZ kernel (get_cpu_idle_time_us,
    kept at every idle entry and exit, on the monotonic clock), but its busy columns
    are sampled at the timer tick, and a core that wakes for short bursts (a forwarder
    at 40 kpps) is mostly found idle at the tick: their sum undercounted such a core
    several times over here. So busy is the wall clock less the idle time."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = line.split()
                wall_us = time.monotonic() * 1e6
                return wall_us - (int(v[4]) + int(v[5])) * 1e6 / CLK_TCK, wall_us
    return 0.0, 0.0


def _proc_cpu(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])       # utime, stime (proc(5) fields 14, 15)
    except (OSError, IndexError, ValueError):
        return 0


def _link_stats(lab: Lab) -> tuple[int, int]:
    out = ip_cmd(lab.router_ns, "-s", "-j", "link", "show").stdout
    router_devs = {ROUTER_CLIENT_IF, *(lab.server_name(i) for i in range(lab.servers))}
    rx = dropped = 0
    for link in json.loads(out):
        stats = link.get("stats64", {})
        if link["ifname"] in router_devs:
            rx += stats.get("rx", {}).get("packets", 0)
        elif link["ifname"] == TUN_NAME:
            dropped += stats.get("tx", {}).get("dropped", 0)
    return rx, dropped


def snapshot(lab: Lab, pid: int | None) -> Snapshot:
    busy, total = core_times_us(ROUTER_CPU)
    load_busy, _ = core_times_us(LOAD_CPU)
    rx, dropped = _link_stats(lab)
    return Snapshot(time.monotonic(), busy, total, load_busy, rx, dropped, _proc_cpu(pid))


def router_figures(a: Snapshot, b: Snapshot) -> dict:
    """What the router did between two snapshots."""
    packets = b.router_rx - a.router_rx
    busy_s = (b.core_busy_us - a.core_busy_us) / 1e6
    proc_s = (b.proc_cpu - a.proc_cpu) / CLK_TCK
    total_s = (b.core_total_us - a.core_total_us) / 1e6
    load_s = (b.load_busy_us - a.load_busy_us) / 1e6
    return {"window_s": b.t - a.t, "router_packets": packets,
            "router_pps": packets / max(b.t - a.t, 1e-9),
            "router_core_busy": min(1.0, max(0.0, busy_s / total_s)) if total_s else 0.0,
            "load_core_busy": min(1.0, max(0.0, load_s / total_s)) if total_s else 0.0,
            "router_core_us_per_packet": busy_s * 1e6 / packets if packets else None,
            "forwarder_cpu_s": proc_s,
            "forwarder_us_per_packet": proc_s * 1e6 / packets if packets and proc_s else None,
            "tun_tx_dropped": b.tun_tx_dropped - a.tun_tx_dropped}


def _softnet_dropped(cpu: int) -> int:
    """Column 2 of /proc/net/softnet_stat (input backlog full) for one CPU (column 13 is
    the CPU number on kernels >= 5.10; else rows are the online CPUs in order)."""
    try:
        with open("/proc/net/softnet_stat") as f:
            rows = [line.split() for line in f]
    except OSError:
        return 0
    for i, row in enumerate(rows):
        if (int(row[12], 16) if len(row) >= 13 else i) == cpu:
            return int(row[1], 16)
    return 0


def _udp_snmp(ns: str) -> dict:
    """The Udp: counters of one namespace's /proc/net/snmp."""
    out = subprocess.run(exec_argv(ns, ["cat", "/proc/net/snmp"]), capture_output=True,
                         text=True, check=False).stdout
    rows = [line.split()[1:] for line in out.splitlines() if line.startswith("Udp:")]
    return dict(zip(rows[0], (int(v) for v in rows[1]))) if len(rows) >= 2 else {}


def _udp_errors(ns: str) -> tuple[int, int]:
    """(RcvbufErrors, SndbufErrors) of UDP in one namespace."""
    udp = _udp_snmp(ns)
    return udp.get("RcvbufErrors", 0), udp.get("SndbufErrors", 0)


def _udp_datagrams(lab: Lab) -> tuple[int, int]:
    """(datagrams the clients sent, datagrams the real servers' sockets received)."""
    sent = _udp_snmp(lab.client_ns).get("OutDatagrams", 0)
    return sent, sum(_udp_snmp(lab.server_ns(i)).get("InDatagrams", 0)
                     for i in range(lab.servers))


def _veth_dropped(ns: str) -> int:
    """rx_dropped + tx_dropped of every link but the TUN in one namespace."""
    out = ip_cmd(ns, "-s", "-j", "link", "show").stdout
    total = 0
    for link in json.loads(out):
        if link["ifname"] != TUN_NAME:
            stats = link.get("stats64", {})
            total += stats.get("rx", {}).get("dropped", 0) + stats.get("tx", {}).get("dropped", 0)
    return total


def drop_counters(lab: Lab, counters=None) -> dict:
    """Every drop counter a lost packet can land in, cumulative; `counters()` adds the
    forwarder's own (userlb's drops by reason), each an int."""
    servers = [lab.server_ns(i) for i in range(lab.servers)]
    out = {"tun_tx_dropped": _link_stats(lab)[1],
           "router_backlog_dropped": _softnet_dropped(ROUTER_CPU),
           "load_backlog_dropped": _softnet_dropped(LOAD_CPU) if LOAD_CPU != ROUTER_CPU else 0,
           "veth_dropped": sum(_veth_dropped(ns) for ns in (lab.router_ns, lab.client_ns,
                                                             *servers)),
           "receiver_rcvbuf_errors": sum(_udp_errors(ns)[0] for ns in servers),
           "sender_sndbuf_errors": _udp_errors(lab.client_ns)[1]}
    if counters is not None:
        out.update(counters())
    return out


def run_parallel(argvs: list[list[str]], timeout_s: float) -> list[tuple[int, str, str]]:
    """Start every argv at once; wait for all until the deadline, then kill stragglers."""
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd="/") for a in argvs]
    deadline = time.monotonic() + timeout_s
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += "\nkilled at the deadline"
        results.append((proc.returncode, out, err))
    return results


def _iperf_argv(lab: Lab, i: int, seconds: int, extra: list[str]) -> list[str]:
    return exec_argv(lab.client_ns, pinned(LOAD_CPU, [
        "iperf3", "-c", VIP, "-p", str(iperf_ports(lab)[i]), "-B", client_ip(i),
        "-t", str(seconds), "-J", "--connect-timeout", "3000", *extra]))


def _iperf_json(out: str, err: str) -> dict:
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        return {"error": (err or out).strip()[-300:] or "no output"}
    if doc.get("error"):
        return {"error": doc["error"]}
    return doc.get("end", {})


def tcp_bulk(lab: Lab, seconds: int, streams: int) -> dict:
    """iperf3 -P streams from every client address at once; Gbit/s received in all."""
    argvs = [_iperf_argv(lab, i, seconds, ["-P", str(streams)]) for i in range(lab.clients)]
    ends = [_iperf_json(out, err) for _, out, err in run_parallel(argvs, seconds + GRACE_S)]
    bps = sum(e.get("sum_received", {}).get("bits_per_second", 0.0) for e in ends)
    errors = [e["error"] for e in ends if "error" in e]
    return {"gbps": bps / 1e9, "streams": streams * lab.clients, "errors": errors}


def udp_paced(lab: Lab, total_pps: float, seconds: int) -> dict:
    """iperf3 -u -l 64 -b RATE from every client address, the rate split evenly.

    Sent and delivered are the kernel's counts, not iperf3's: the datagrams the client
    namespace sent (Udp OutDatagrams) and those the real servers' sockets received
    (InDatagrams), which only iperf3's UDP streams use during a step. Under overload
    iperf3's own end-of-test report travels over a TCP control connection through the
    same full queue and can be late or count a late tail as delivered; it is kept as
    iperf_sent and iperf_lost."""
    bps = int(total_pps / lab.clients * UDP_PAYLOAD_BYTES * 8)
    argvs = [_iperf_argv(lab, i, seconds, ["-u", "-l", str(UDP_PAYLOAD_BYTES), "-b", str(bps)])
             for i in range(lab.clients)]
    sent0, got0 = _udp_datagrams(lab)
    ends = [_iperf_json(out, err) for _, out, err in run_parallel(argvs, seconds + GRACE_S)]
    sent1, got1 = _udp_datagrams(lab)
    iperf_sent = iperf_lost = 0
    for e in ends:
        s = e.get("sum", {})
        iperf_sent += s.get("packets", 0)
        iperf_lost += s.get("lost_packets", 0)
    errors = [e["error"] for e in ends if "error" in e]
    sent, delivered = sent1 - sent0, got1 - got0
    return {"offered_pps_nominal": total_pps, "sent_pps": sent / seconds,
            "delivered_pps": delivered / seconds, "sent": sent, "lost": sent - delivered,
            "loss": (sent - delivered) / sent if sent else 1.0, "errors": errors,
            "iperf_sent": iperf_sent, "iperf_lost": iperf_lost}


WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
WRK_SOCKERR = re.compile(r"Socket errors:.*")


def http_wrk(lab: Lab, seconds: int, connections: int) -> dict:
    """wrk -c N keep-alive through the VIP from the first client address."""
    argv = exec_argv(lab.client_ns, pinned(LOAD_CPU, [
        "wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "2s",
        f"http://{VIP}:{HTTP_VPORT}/"]))
    [(code, out, err)] = run_parallel([argv], seconds + GRACE_S)
    rate = WRK_RATE.search(out)
    non2xx = WRK_NON2XX.search(out)
    sockerr = WRK_SOCKERR.search(out)
    result = {"requests_per_s": float(rate.group(1)) if rate else 0.0,
              "non_2xx": int(non2xx.group(1)) if non2xx else 0,
              "socket_errors": sockerr.group(0) if sockerr else "", "errors": []}
    if code != 0 or not rate:
        result["errors"].append((err or out).strip()[-300:] or f"wrk exit {code}")
    return result


def measured(lab: Lab, pid: int | None, load, *args, counters=None) -> dict:
    """load(lab, *args) between two router snapshots: its result plus the router's figures.
    With `counters` (a callable, or True for none of the forwarder's own) the result also
    has "drops": how much each drop counter grew during the load."""
    if counters is not None:
        drops_before = drop_counters(lab, counters if callable(counters) else None)
    before = snapshot(lab, pid)
    result = load(lab, *args)
    after = snapshot(lab, pid)
    out = {**result, **router_figures(before, after)}
    if counters is not None:
        drops_after = drop_counters(lab, counters if callable(counters) else None)
        out["drops"] = {k: v - drops_before.get(k, 0) for k, v in drops_after.items()}
    return out
