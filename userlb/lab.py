"""EDGE: the namespace lab shared by `userlb demo` and the integration tests.

Topology (all addresses in 198.18.0.0/15, nothing in the root namespace):

    client ns  eth0 198.18.1.2+  ──veth──  rc0 198.18.1.1   router ns
    (VIP 198.18.1.100 is on this segment:                     ulb0 (TUN, made by userlb run)
     the router answers ARP for it)                            br-rs 198.18.2.1
    server ns i eth0 198.18.2.(10+i) ──veth── rs<i> (bridged into br-rs)
    default route via 198.18.2.1

Each real server runs userlb.labserver (HTTP on 8080, UDP and TCP echo on 7).
The balancer itself is started with start_balancer(), inside the router
namespace, as `python -m userlb run CONFIG`. Everything is torn down by
stop(): on normal exit, on exceptions, at interpreter exit and on SIGTERM/SIGINT
when used as a context manager. Namespaces are named ulb-<pid>-<n>-<role>, so
cleanup_stale() can remove what a killed run left behind.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from userlb.netns import exec_argv, ip_cmd, list_namespaces, run, socket_in

CLIENT_PREFIX = "198.18.1."
ROUTER_CLIENT_IP = "198.18.1.1"
VIP = "198.18.1.100"
SERVER_PREFIX = "198.18.2."
ROUTER_SERVER_IP = "198.18.2.1"
HTTP_PORT = 8080      # real servers' HTTP port (the VIP serves port 80)
ECHO_PORT = 7         # UDP and TCP echo on the real servers and the VIP
ROUTER_CLIENT_IF = "rc0"
ROUTER_SERVER_IF = "br-rs"
TUN_NAME = "ulb0"

_counter = itertools.count(1)


def client_ip(i: int) -> str:
    return f"{CLIENT_PREFIX}{2 + i}"


def server_ip(i: int) -> str:
    return f"{SERVER_PREFIX}{11 + i}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete lab namespaces whose creating process is gone; return their names."""
    removed = []
    for ns in list_namespaces():
        parts = ns.split("-")
        if len(parts) >= 4 and parts[0] == "ulb" and parts[1].isdigit():
            if not _pid_alive(int(parts[1])):
                run(["ip", "netns", "del", ns], check=False)
                removed.append(ns)
    return removed


@dataclass
class Balancer:
    """A running `userlb run` process in the router namespace."""

    proc: subprocess.Popen
    ctl_path: str
    log_path: str
    config_path: str = ""

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text()
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Lab:
    """Client(s), a router and N real servers in namespaces; see the module docstring."""

    servers: int = 3
    clients: int = 1
    tag: str = field(default_factory=lambda: f"ulb-{os.getpid()}-{next(_counter)}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="userlb-lab-")))
    _procs: list = field(default_factory=list)
    _http: dict = field(default_factory=dict)
    _balancers: list = field(default_factory=list)
    _started: bool = False

    @property
    def client_ns(self) -> str:
        return f"{self.tag}-c"

    @property
    def router_ns(self) -> str:
        return f"{self.tag}-r"

    def server_ns(self, i: int) -> str:
        return f"{self.tag}-s{i + 1}"

    def server_name(self, i: int) -> str:
        return f"rs{i + 1}"

    @property
    def namespaces(self) -> list[str]:
        return [self.client_ns, self.router_ns, *(self.server_ns(i) for i in range(self.servers))]

    # -- life cycle -------------------------------------------------------------------
    def __enter__(self) -> "Lab":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Lab":
        cleanup_stale()
        atexit.register(self.stop)
        self._started = True
        try:
            self._build()
            for i in range(self.servers):
                self._start_server(i, "echo")
                self.start_http(i)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Idempotent teardown: balancers, server processes, namespaces."""
        for balancer in self._balancers:
            balancer.stop()
        self._balancers.clear()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._procs.clear()
        if self._started:
            for ns in self.namespaces:
                run(["ip", "netns", "del", ns], check=False)
            self._started = False
        atexit.unregister(self.stop)

    def _build(self) -> None:
        for ns in self.namespaces:
            run(["ip", "netns", "add", ns])
            ip_cmd(ns, "link", "set", "lo", "up")
        r, c = self.router_ns, self.client_ns
        ip_cmd(c, "link", "add", "eth0", "type", "veth", "peer", "name", ROUTER_CLIENT_IF,
               "netns", r)
        for i in range(self.clients):
            ip_cmd(c, "addr", "add", f"{client_ip(i)}/24", "dev", "eth0")
        ip_cmd(c, "link", "set", "eth0", "up")
        ip_cmd(r, "addr", "add", f"{ROUTER_CLIENT_IP}/24", "dev", ROUTER_CLIENT_IF)
        ip_cmd(r, "link", "set", ROUTER_CLIENT_IF, "up")
        ip_cmd(r, "link", "add", ROUTER_SERVER_IF, "type", "bridge")
        ip_cmd(r, "addr", "add", f"{ROUTER_SERVER_IP}/24", "dev", ROUTER_SERVER_IF)
        ip_cmd(r, "link", "set", ROUTER_SERVER_IF, "up")
        for i in range(self.servers):
            s, port = self.server_ns(i), f"rs{i + 1}"
            ip_cmd(s, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", r)
            ip_cmd(r, "link", "set", port, "master", ROUTER_SERVER_IF, "up")
            ip_cmd(s, "addr", "add", f"{server_ip(i)}/24", "dev", "eth0")
            ip_cmd(s, "link", "set", "eth0", "up")
            ip_cmd(s, "route", "add", "default", "via", ROUTER_SERVER_IP)

    def _start_server(self, i: int, serve: str) -> subprocess.Popen:
        argv = exec_argv(self.server_ns(i), [sys.executable, "-m", "userlb.labserver",
                                             "--name", self.server_name(i), "--serve", serve,
                                             "--http-port", str(HTTP_PORT),
                                             "--udp-port", str(ECHO_PORT),
                                             "--tcp-echo-port", str(ECHO_PORT)])
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
                                text=True)
        self._procs.append(proc)
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"lab server {i + 1} failed: {line}{proc.stderr.read()}")
        return proc

    def start_process(self, ns: str, argv: list[str], **popen_kw) -> subprocess.Popen:
        """Run `argv` in namespace `ns` (cwd /); it is killed with the lab at stop()."""
        proc = subprocess.Popen(exec_argv(ns, argv), cwd="/", **popen_kw)
        self._procs.append(proc)
        return proc

    def start_http(self, i: int) -> None:
        """(Re)start real server i's HTTP process."""
        self._http[i] = self._start_server(i, "http")

    def stop_http(self, i: int) -> None:
        """Kill real server i's HTTP process (its port then refuses connections)."""
        proc = self._http.pop(i)
        proc.kill()
        proc.wait()

    # -- the balancer -----------------------------------------------------------------
    def config_text(self, scheduler: str = "wlc", trace_connections: int = 0,
                    table_size: int = 65536, services: str | None = None, extra: str = "") -> str:
        """A native config for this lab: VIP:80 → servers:8080 and VIP:7/udp+tcp → :7."""
        if services is None:
            services = "".join(
                self.service_text(proto, port, rport, scheduler)
                for proto, port, rport in (("tcp", 80, HTTP_PORT), ("udp", ECHO_PORT, ECHO_PORT),
                                           ("tcp", ECHO_PORT, ECHO_PORT)))
        return (f'[router]\ntun = "{TUN_NAME}"\nclient_interface = "{ROUTER_CLIENT_IF}"\n'
                f'server_interface = "{ROUTER_SERVER_IF}"\ntable_size = {table_size}\n'
                f'ctl_socket = "{self.workdir / "ctl.sock"}"\n'
                f'trace_connections = {trace_connections}\n{extra}\n{services}')

    def service_text(self, proto: str, port: int, rport: int, scheduler: str,
                     weights: list[int] | None = None, health: str = "",
                     check: str = "") -> str:
        """One [[service]] of VIP:port → every real server's rport. `health` is the body of
        a [service.health] table, `check` that of a [[service.real.check]] for each server."""
        check = f"[[service.real.check]]\n{check}\n" if check else ""
        reals = "".join(
            f'[[service.real]]\naddress = "{server_ip(i)}"\nport = {rport}\n'
            f'weight = {weights[i] if weights else 1}\n{check}' for i in range(self.servers))
        health = f"[service.health]\n{health}\n" if health else ""
        return (f'\n[[service]]\nprotocol = "{proto}"\nvip = "{VIP}"\nport = {port}\n'
                f'scheduler = "{scheduler}"\n{health}{reals}')

    def start_balancer(self, config_text: str, timeout_s: float = 20.0,
                       filename: str = "userlb.toml", ctl_path: str | None = None) -> Balancer:
        """`userlb run` in the router namespace on `config_text` saved as `filename` (its
        extension picks the format); `ctl_path` if the config names another socket."""
        cfg = self.workdir / filename
        cfg.write_text(config_text)
        log_path = self.workdir / "userlb.log"
        ctl_path = ctl_path or str(self.workdir / "ctl.sock")
        log = open(log_path, "w")
        argv = exec_argv(self.router_ns, [sys.executable, "-m", "userlb", "run", str(cfg)])
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        log.close()
        balancer = Balancer(proc, ctl_path, str(log_path), str(cfg))
        self._balancers.append(balancer)
        from userlb.ctlclient import wait_ready
        if not wait_ready(ctl_path, proc, timeout_s):
            balancer.stop()
            raise RuntimeError(f"balancer did not come up:\n{balancer.log()}")
        return balancer

    # -- client side ------------------------------------------------------------------
    def client_socket(self, type: int = socket.SOCK_STREAM, client: int = 0,
                      port: int = 0) -> socket.socket:
        """A socket in the client namespace bound to client address `client`."""
        sock = socket_in(self.client_ns, socket.AF_INET, type)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((client_ip(client), port))
        return sock

    def udp_echo(self, count: int = 5, timeout_s: float = 3.0) -> list[tuple]:
        """`count` datagrams b"hello i" to VIP:ECHO_PORT from the client, one at a time;
        each reply as (peer, server name, echoed payload). A lost one raises TimeoutError."""
        sock = self.client_socket(socket.SOCK_DGRAM)
        sock.settimeout(timeout_s)
        replies = []
        with sock:
            for i in range(count):
                sock.sendto(b"hello %d" % i, (VIP, ECHO_PORT))
                data, peer = sock.recvfrom(2048)
                name, _, echoed = data.partition(b":")
                replies.append((peer, name, echoed))
        return replies

    def http_get(self, path: str = "/", timeout_s: float = 5.0, client: int = 0,
                 port: int = 0, host: str = VIP, vport: int = 80) -> tuple[int, dict, bytes]:
        """One HTTP/1.0 GET through the VIP from the client namespace: (status, headers, body)."""
        sock = self.client_socket(client=client, port=port)
        try:
            sock.settimeout(timeout_s)
            sock.connect((host, vport))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = bytearray()
            while chunk := sock.recv(65536):
                data += chunk
        finally:
            sock.close()
        head, _, body = bytes(data).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = lines[0].split()
        if len(fields) < 2 or not fields[1].isdigit():   # e.g. the server died mid-request
            raise ConnectionError(f"no HTTP status line in the reply ({len(data)} bytes)")
        status = int(fields[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        return status, headers, body

    def exec_in(self, ns: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return run(exec_argv(ns, argv), **kw)

    def wait_until(self, predicate, timeout_s: float, interval_s: float = 0.02) -> bool:
        """Poll `predicate` until it is true or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval_s)
        return bool(predicate())
