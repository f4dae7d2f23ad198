"""EDGE: the path bench's lab: CPU split, load servers, and the four data paths.

What it does: on a userlb.lab.Lab (3 clients, 3 real servers) it splits the two
cores as spec/perf.md B1 does (RPS steers the router's veths to the router
core, the client and server veths to the load core; load processes are pinned
to the load core, forwarders to the router core), starts iperf3 servers and a
fast HTTP server (nginx, when installed) on the real servers, and runs one of
four data paths in the router namespace at a time:
- KernelPath: nftables DNAT (`numgen inc` per connection for HTTP, a source map
  for iperf3, whose control and data connections must meet one server), with
  conntrack doing the reverse NAT; the VIP is a local address, as on an IPVS
  director; no TUN.
- CPath: bench/cfwd.c built with the system compiler into a temp dir, on
  userlb's own TUN plumbing (userlb.plumbing.RouterPlumbing), with the virtio
  header and TSO/checksum offloads on (`cfwd -v`), so it is the TUN's ceiling
  for bulk TCP as well as for small packets.
- UserlbPath: `userlb run` with the same services (rr for HTTP, sh for iperf3),
  pinned to the router core; variants add `[router]` lines (path.py's USERLB_VARIANTS:
  offload, the io mode, a second queue) and may run unpinned.

What it does not do: generate load or compute figures (pathload, path). It
writes nothing outside the lab's namespaces and its temp dirs.

Mirrors: spec/perf.md B1 (topology, CPU split, kernel path) and "The TUN ceiling".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from userlb.lab import (HTTP_PORT, ROUTER_CLIENT_IF, ROUTER_SERVER_IF, TUN_NAME, VIP, Lab,
                        client_ip, server_ip)
from userlb.netns import exec_argv, in_namespace, ip_cmd, run
from userlb.plumbing import RouterPlumbing

LOAD_CPU, ROUTER_CPU = 0, 1
IPERF_BASE_PORT = 5201          # client i uses VIP:5201+i, served on every real server
HTTP_VPORT = 80
CFWD_SOURCE = Path(__file__).with_name("cfwd.c")
TOOLS = ("iperf3", "wrk", "nft", "gcc", "taskset")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def cpu_split_possible() -> bool:
    return (os.cpu_count() or 1) >= 2


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if cpu_split_possible() else argv


def iperf_ports(lab: Lab) -> list[int]:
    return [IPERF_BASE_PORT + i for i in range(lab.clients)]


def _set_rps(ns: str, dev: str, cpu: int) -> None:
    mask = f"/sys/class/net/{dev}/queues/rx-0/rps_cpus"
    run(exec_argv(ns, ["sh", "-c", f"echo {1 << cpu:x} > {mask}"]))


def split_cpus(lab: Lab) -> dict:
    """RPS masks as spec/perf.md B1: router-side veths → router core, the rest → load core."""
    if not cpu_split_possible():
        return {"split": False, "why": "fewer than 2 CPUs"}
    router_devs = [ROUTER_CLIENT_IF, *(lab.server_name(i) for i in range(lab.servers))]
    for dev in router_devs:
        _set_rps(lab.router_ns, dev, ROUTER_CPU)
    for ns in (lab.client_ns, *(lab.server_ns(i) for i in range(lab.servers))):
        _set_rps(ns, "eth0", LOAD_CPU)
    return {"split": True, "router_cpu": ROUTER_CPU, "load_cpu": LOAD_CPU,
            "rps_router_devs": router_devs, "rps_load_devs": "client and server eth0"}


def start_iperf_servers(lab: Lab) -> None:
    for i in range(lab.servers):
        for port in iperf_ports(lab):
            argv = pinned(LOAD_CPU, ["iperf3", "-s", "-p", str(port), "--idle-timeout", "30"])
            lab.start_process(lab.server_ns(i), argv, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)


NGINX_CONF = """worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {{
        listen {port} reuseport backlog=4096;
        location / {{ return 200 "server={name}\\n"; }}
    }}
}}
"""


def start_http_servers(lab: Lab) -> str:
    """nginx (one worker) on each real server's HTTP port if installed, replacing the lab's
    Python http.server; returns which server answers."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if nginx is None:
        return "python http.server (userlb.labserver)"
    for i in range(lab.servers):
        workdir = lab.workdir / f"nginx-{i + 1}"
        workdir.mkdir(exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=workdir, port=HTTP_PORT, name=lab.server_name(i)))
        lab.stop_http(i)
        argv = pinned(LOAD_CPU, [nginx, "-p", str(workdir), "-c", str(conf)])
        lab.start_process(lab.server_ns(i), argv, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    return "nginx (1 worker per real server)"


class KernelPath:
    """nftables DNAT in the router namespace; conntrack does the reverse NAT."""

    name = "kernel"
    pid = None

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def ruleset(self) -> str:
        lab = self.lab
        rr = ", ".join(f"{i} : {server_ip(i)}" for i in range(lab.servers))
        by_client = ", ".join(f"{client_ip(i)} : {server_ip(i % lab.servers)}"
                              for i in range(lab.clients))
        ports = ", ".join(str(p) for p in iperf_ports(lab))
        return (f"table ip ulbbench {{\n chain pre {{\n"
                f"  type nat hook prerouting priority dstnat; policy accept;\n"
                f"  ip daddr {VIP} tcp dport {HTTP_VPORT} dnat to numgen inc mod {lab.servers}"
                f" map {{ {rr} }} : {HTTP_PORT}\n"
                f"  ip daddr {VIP} meta l4proto {{ tcp, udp }} th dport {{ {ports} }}"
                f" dnat to ip saddr map {{ {by_client} }}\n }}\n}}\n")

    def start(self) -> None:
        r = self.lab.router_ns
        run(exec_argv(r, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
        ip_cmd(r, "addr", "add", f"{VIP}/32", "dev", ROUTER_CLIENT_IF)
        run(exec_argv(r, ["nft", "-f", "-"]), input=self.ruleset())

    def stop(self) -> dict:
        r = self.lab.router_ns
        run(exec_argv(r, ["nft", "delete", "table", "ip", "ulbbench"]), check=False)
        ip_cmd(r, "addr", "del", f"{VIP}/32", "dev", ROUTER_CLIENT_IF, check=False)
        return {}


def build_cfwd(tmpdir: Path) -> Path:
    binary = Path(tmpdir) / "cfwd"
    run(["gcc", "-O2", "-Wall", "-o", str(binary), str(CFWD_SOURCE)])
    return binary


class CPath:
    """bench/cfwd.c on the TUN, with userlb's plumbing around it."""

    name = "c"

    def __init__(self, lab: Lab, binary: Path) -> None:
        self.lab, self.binary = lab, binary
        self.proc: subprocess.Popen | None = None
        self.plumbing = RouterPlumbing(TUN_NAME, ROUTER_CLIENT_IF, ROUTER_SERVER_IF, [VIP])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def argv(self) -> list[str]:
        servers = ",".join(server_ip(i) for i in range(self.lab.servers))
        maps = [f"{HTTP_VPORT}:{HTTP_PORT}:c", *(f"{p}:{p}:s" for p in iperf_ports(self.lab))]
        return [str(self.binary), "-v", TUN_NAME, VIP, servers, *maps]

    def start(self) -> None:
        r = self.lab.router_ns
        self.proc = self.lab.start_process(r, pinned(ROUTER_CPU, self.argv()), text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"cfwd did not start: {line}{self.proc.stderr.read()}")
        run(exec_argv(r, ["sysctl", "-qw", f"net.ipv6.conf.{TUN_NAME}.disable_ipv6=1"]))
        ip_cmd(r, "link", "set", TUN_NAME, "up")
        in_namespace(r, self.plumbing.install)

    def stop(self) -> dict:
        in_namespace(self.lab.router_ns, self.plumbing.remove)
        if self.proc is None:
            return {}
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return {"cfwd_counters": json.loads(lines[-1]) if lines else None,
                "cfwd_stderr": err.strip()}


class UserlbPath:
    """`userlb run` in the router namespace with the bench's services.

    `router` holds extra `[router]` lines (a variant: "offload = false", 'io = "read"',
    "queues = 2"); `pinned` keeps every thread of the balancer on the router core;
    unpinned, its threads may run on every core (the bench itself runs on the load core,
    which the balancer would otherwise inherit): for variants meant to use a second
    core, an SQPOLL kernel thread or a second queue's worker."""

    def __init__(self, lab: Lab, name: str = "userlb", router: str = "",
                 pinned: bool = True) -> None:
        self.lab, self.name, self.router, self.pinned = lab, name, router, pinned
        self.balancer = None

    @property
    def pid(self) -> int | None:
        return self.balancer.proc.pid if self.balancer else None

    def config(self) -> str:
        lab = self.lab
        services = lab.service_text("tcp", HTTP_VPORT, HTTP_PORT, "rr")
        for port in iperf_ports(lab):
            services += "".join(lab.service_text(proto, port, port, "sh")
                                for proto in ("tcp", "udp"))
        return lab.config_text(services=services, extra=self.router)

    def start(self) -> None:
        self.balancer = self.lab.start_balancer(self.config())
        if cpu_split_possible():    # every thread onto the router core, or any core
            cpus = str(ROUTER_CPU) if self.pinned else f"0-{os.cpu_count() - 1}"
            run(["taskset", "-a", "-p", "-c", cpus, str(self.balancer.proc.pid)])

    def stats(self) -> dict | None:
        from userlb import ctlclient
        try:
            return ctlclient.request(self.balancer.ctl_path, "stats", timeout_s=5)
        except Exception as exc:  # a report detail, never a reason to fail the bench
            return {"error": str(exc)}

    def counters(self) -> dict:
        """userlb's own drop counters (engine drops by reason, the data path's refused
        writes and the TUN's counters as `userlb show stats` reports them), flattened."""
        stats = self.stats() or {}
        out = {f"userlb_{k}": int(v) for k, v in stats.get("drops", {}).items()
               if k != "tun_queue_full"}       # pathload reads the TUN's tx_dropped itself
        for k, v in (stats.get("datapath") or {}).items():
            if k in ("write_failures", "engine_errors"):
                out[f"userlb_{k}"] = int(v)
        return out

    def stop(self) -> dict:
        if self.balancer is None:
            return {}
        stats = self.stats()
        code = self.balancer.stop()
        return {"userlb_stats": stats, "userlb_exit": code}


def wait_listening(lab: Lab, timeout_s: float = 10.0) -> bool:
    """True once every real server listens on the HTTP port and every iperf3 port."""
    want = {HTTP_PORT, *iperf_ports(lab)}

    def ready() -> bool:
        for i in range(lab.servers):
            out = run(exec_argv(lab.server_ns(i), ["ss", "-Hltn"]), check=False).stdout
            ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines()
                     if len(line.split()) > 3}
            if not want <= ports:
                return False
        return True

    return lab.wait_until(ready, timeout_s, interval_s=0.1)


def tool_versions() -> dict:
    argvs = {"iperf3": ["iperf3", "--version"], "wrk": ["wrk", "-v"], "nft": ["nft", "--version"],
             "gcc": ["gcc", "--version"], "nginx": ["nginx", "-v"]}
    versions = {}
    for name, argv in argvs.items():
        if shutil.which(argv[0]) or os.path.exists(f"/usr/sbin/{argv[0]}"):
            proc = run(argv, check=False)
            text = (proc.stdout + proc.stderr).strip().splitlines()
            versions[name] = text[0] if text else ""
    return versions


def tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="userlb-bench-path-"))
