"""EDGE: the two-router namespace lab for the HA tests (and for trying failover by hand).

Topology (addresses in 198.18.0.0/15; the two segments are bridges in a
"switch" namespace, so both routers sit on both segments):

    client ns  eth0 198.18.1.2+ ─┐                ┌─ rc0 198.18.1.251  r1 ns  rp0 198.18.2.251 ─┐
                                 ├─ br-c (sw ns) ─┤                                              ├─ br-s (sw ns)
       VIP 198.18.1.100 (floats) ┘                └─ rc0 198.18.1.252  r2 ns  rp0 198.18.2.252 ─┤
                                                                                                ├─ s1 198.18.2.11
    gateway 198.18.2.1/24 (nat_router, floats) is the real servers' default route               └─ s2 198.18.2.12 …

Each router runs `python -m userlb run` (start_router) or keepalived -P
(start_keepalived); real servers run userlb.labserver as in lab.py, whose Lab
this extends (same life cycle: context manager, atexit, and here also SIGTERM;
namespaces named ulb-<pid>-<n>-<role>, so lab.cleanup_stale() removes leftovers).
No failover logic lives here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from userlb import ctlclient
from userlb.lab import ECHO_PORT, HTTP_PORT, VIP, Balancer, Lab, client_ip, server_ip
from userlb.netns import exec_argv, ip_cmd, run

GATEWAY = "198.18.2.1"
GATEWAY_PREFIX = 24
CLIENT_IF = "rc0"
PRIVATE_IF = "rp0"
TUN_NAME = "ulb0"
HA_KEY_HEX = "6b65792d666f722d7573657262646c616221"      # lab key (18 bytes); never in production


def router_ip(r: int, side: str = "c") -> str:
    """Router r's (1 or 2) own address on the client ("c") or private ("p") segment."""
    return f"198.18.{1 if side == 'c' else 2}.{250 + r}"


@dataclass
class HaLab(Lab):
    """Client(s), two routers r1/r2 on both segments, N real servers behind the gateway."""

    servers: int = 2
    routers: dict = field(default_factory=dict)       # r → Balancer (userlb) or Popen (keepalived)
    _old_sigterm: object = None

    def router_ns_of(self, r: int) -> str:
        return f"{self.tag}-r{r}"

    @property
    def switch_ns(self) -> str:
        return f"{self.tag}-sw"

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_ns, self.client_ns, self.router_ns_of(1), self.router_ns_of(2),
                *(self.server_ns(i) for i in range(self.servers))]

    # -- life cycle -------------------------------------------------------------------
    def __enter__(self) -> "HaLab":
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _terminate)
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def stop(self) -> None:
        for r in list(self.routers):
            self.stop_router(r)
        super().stop()

    def _build(self) -> None:
        for ns in self.namespaces:
            run(["ip", "netns", "add", ns])
            ip_cmd(ns, "link", "set", "lo", "up")
        sw = self.switch_ns
        for bridge in ("br-c", "br-s"):
            ip_cmd(sw, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
            ip_cmd(sw, "link", "set", bridge, "up")
        self._wire(self.client_ns, "eth0", "c0", "br-c",
                   [f"{client_ip(i)}/24" for i in range(self.clients)])
        for r in (1, 2):
            ns = self.router_ns_of(r)
            self._wire(ns, CLIENT_IF, f"r{r}c", "br-c", [f"{router_ip(r, 'c')}/24"])
            self._wire(ns, PRIVATE_IF, f"r{r}p", "br-s", [f"{router_ip(r, 'p')}/24"])
        for i in range(self.servers):
            s = self.server_ns(i)
            self._wire(s, "eth0", f"s{i + 1}", "br-s", [f"{server_ip(i)}/24"])
            ip_cmd(s, "route", "add", "default", "via", GATEWAY)

    def _wire(self, ns: str, ifname: str, port: str, bridge: str, addrs: list[str]) -> None:
        """veth `ifname` in `ns`, its peer `port` in the switch's `bridge`."""
        sw = self.switch_ns
        ip_cmd(sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns)
        ip_cmd(sw, "link", "set", port, "master", bridge, "up")
        for addr in addrs:
            ip_cmd(ns, "addr", "add", addr, "dev", ifname)
        ip_cmd(ns, "link", "set", ifname, "up")

    # -- userlb routers -----------------------------------------------------------------
    def ctl_path(self, r: int) -> str:
        return str(self.workdir / f"r{r}.sock")

    def router_config(self, r: int, priority: int, protocol: str = "heartbeat", **ha) -> str:
        """A native config for router r: the lab's services plus an [ha] table."""
        other = 3 - r
        keys = {"protocol": protocol, "primary": router_ip(r, "c"), "priority": priority,
                "private_address": router_ip(r, "p"), "peer": router_ip(other, "c"),
                "peer_private": router_ip(other, "p"), "key": HA_KEY_HEX,
                "nat_router": f"{GATEWAY}/{GATEWAY_PREFIX}", **ha}
        lines = "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items() if v is not None)
        services = "".join(self.service_text(proto, port, rport, "rr")
                           for proto, port, rport in (("tcp", 80, HTTP_PORT),
                                                      ("udp", ECHO_PORT, ECHO_PORT)))
        return (f'[router]\ntun = "{TUN_NAME}"\nclient_interface = "{CLIENT_IF}"\n'
                f'server_interface = "{PRIVATE_IF}"\nctl_socket = "{self.ctl_path(r)}"\n'
                f"table_size = 4096\n{services}\n[ha]\n{lines}")

    def start_router(self, r: int, config_text: str, timeout_s: float = 20.0) -> Balancer:
        cfg = self.workdir / f"r{r}.toml"
        cfg.write_text(config_text)
        log_path = self.workdir / f"r{r}.log"
        with open(log_path, "a") as log:
            argv = exec_argv(self.router_ns_of(r), [sys.executable, "-m", "userlb", "run", str(cfg)])
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        balancer = Balancer(proc, self.ctl_path(r), str(log_path))
        self.routers[r] = balancer
        if not ctlclient.wait_ready(balancer.ctl_path, proc, timeout_s):
            self.stop_router(r)
            raise RuntimeError(f"router r{r} did not come up:\n{balancer.log()}")
        return balancer

    def kill_router(self, r: int) -> None:
        """SIGKILL router r's process (a crash: no priority 0, no clean-up)."""
        proc = self._proc(r)
        proc.kill()
        proc.wait()
        self.routers.pop(r)

    def stop_router(self, r: int, timeout_s: float = 10.0) -> None:
        """SIGTERM router r's process (userlb or keepalived) and wait for it."""
        proc = self._proc(r)
        self.routers.pop(r, None)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _proc(self, r: int) -> subprocess.Popen:
        entry = self.routers[r]
        return entry.proc if isinstance(entry, Balancer) else entry

    def ha(self, r: int) -> dict:
        """Router r's `ha` status from its control socket."""
        return ctlclient.request(self.ctl_path(r), "ha", timeout_s=3.0)

    def state(self, r: int) -> str | None:
        try:
            return self.ha(r)["state"]
        except (ctlclient.ControlError, OSError, ValueError):
            return None

    # -- keepalived (VRRP only) ----------------------------------------------------------------
    def start_keepalived(self, r: int, conf_text: str) -> subprocess.Popen:
        """`keepalived -P -n -l -D` in router r's namespace with its own pid files."""
        conf = self.workdir / f"ka-r{r}.conf"
        conf.write_text(conf_text)
        log_path = self.workdir / f"ka-r{r}.log"
        argv = [keepalived_path() or "keepalived", "--vrrp", "--dont-fork", "--log-console", "--log-detail",
                "--no-syslog", "-f", str(conf), "-p", str(self.workdir / f"ka-r{r}.pid"),
                "-r", str(self.workdir / f"ka-r{r}-vrrp.pid")]
        with open(log_path, "a") as log:
            proc = subprocess.Popen(exec_argv(self.router_ns_of(r), argv), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/")
        self.routers[r] = proc
        return proc

    def keepalived_state(self, r: int) -> str | None:
        """The state keepalived last logged entering ("MASTER", "BACKUP", "FAULT"), or None."""
        found = re.findall(r"Entering (\w+) STATE", self.keepalived_log(r))
        return found[-1] if found else None

    def keepalived_log(self, r: int) -> str:
        try:
            return (self.workdir / f"ka-r{r}.log").read_text()
        except OSError:
            return ""

    # -- observing ----------------------------------------------------------------------
    def http_ok(self, timeout_s: float = 0.5) -> bool:
        """True if one GET through the VIP is answered with 200 within `timeout_s`."""
        try:
            return self.http_get("/", timeout_s=timeout_s)[0] == 200
        except (OSError, ValueError, IndexError):
            return False

    def mac(self, ns: str, ifname: str) -> str:
        return ip_cmd(ns, "-br", "link", "show", ifname).stdout.split()[2]

    def neigh_mac(self, ns: str, address: str) -> str | None:
        """The MAC `ns` holds for `address` (any state but FAILED/INCOMPLETE), or None."""
        for line in ip_cmd(ns, "neigh", "show", address).stdout.splitlines():
            words = line.split()
            if "lladdr" in words and words[-1] not in ("FAILED", "INCOMPLETE"):
                return words[words.index("lladdr") + 1]
        return None


# -- traffic that spans a failover (bounded in count and time) ------------------------------
@dataclass
class Probes:
    """UDP echo probes through the VIP: (sent_at, answered_at or None) per probe, monotonic."""

    results: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def answered(self) -> int:
        return sum(1 for _, got in self.results if got is not None)

    def gap(self) -> tuple[float, float, float] | None:
        """(gap_s, first unanswered sent_at, first answered after it) of the longest outage."""
        best, i, res = None, 0, list(self.results)
        while i < len(res):
            if res[i][1] is None:
                j = i
                while j < len(res) and res[j][1] is None:
                    j += 1
                if j == len(res):
                    break
                gap = (res[j][1] - res[i][0], res[i][0], res[j][1])
                best = gap if best is None or gap[0] > best[0] else best
                i = j
            i += 1
        return best


def run_probes(lab: Lab, probes: Probes, client: int = 0, interval_s: float = 0.01,
               wait_s: float = 0.05, max_probes: int = 4000, max_s: float = 40.0) -> None:
    """Send numbered UDP probes to VIP:7 until probes.stop is set (or the bounds are hit)."""
    sock = lab.client_socket(socket.SOCK_DGRAM, client=client)
    deadline = time.monotonic() + max_s
    try:
        for seq in range(max_probes):
            if probes.stop.is_set() or time.monotonic() > deadline:
                break
            sent = time.monotonic()
            sock.settimeout(wait_s)
            sock.sendto(b"probe %d" % seq, (VIP, ECHO_PORT))
            got = None
            try:
                while got is None:
                    data = sock.recv(2048)
                    if data.endswith(b":probe %d" % seq):     # late answers to earlier probes skip
                        got = time.monotonic()
            except (socket.timeout, OSError):
                pass
            probes.results.append((sent, got))
            time.sleep(max(0.0, interval_s - (time.monotonic() - sent)))
    finally:
        sock.close()


@dataclass
class Download:
    """One paced HTTP download through the VIP (GET /bytes/<n>): what arrived and how it ended."""

    expected: int
    received: int = 0
    error: str = ""
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


def run_download(lab: Lab, dl: Download, rate_bps: float, client: int = 1,
                 stall_s: float = 4.0, max_s: float = 40.0) -> None:
    """Read at most `rate_bps` with a small receive buffer, so the transfer spans seconds;
    ends on completion, a reset, a stall of `stall_s` or `max_s` in all."""
    sock = lab.client_socket(client=client)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    start = time.monotonic()
    try:
        sock.settimeout(stall_s)
        sock.connect((VIP, 80))
        sock.sendall(f"GET /bytes/{dl.expected} HTTP/1.0\r\nHost: {VIP}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed before the headers")
            head += chunk
        dl.received = len(head.partition(b"\r\n\r\n")[2])
        dl.started.set()
        while dl.received < dl.expected:
            if time.monotonic() - start > max_s:
                raise TimeoutError(f"not done after {max_s} s")
            chunk = sock.recv(16384)
            if not chunk:
                raise ConnectionError("closed early")
            dl.received += len(chunk)
            time.sleep(max(0.0, dl.received / rate_bps - (time.monotonic() - start)))
    except (OSError, ConnectionError, TimeoutError) as exc:
        dl.error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
        dl.started.set()
        dl.done.set()


def failover(lab: HaLab, victim: int, survivor: int, download_bytes: int = 3_000_000,
             rate_bps: float = 1_000_000, stall_s: float = 4.0) -> dict:
    """SIGKILL router `victim` while a paced download (client 1) and UDP probes (client 0)
    cross the VIP; returns the outage gap, the takeover time and how the download ended."""
    dl, probes = Download(download_bytes), Probes()
    threads = [threading.Thread(target=run_download, args=(lab, dl, rate_bps),
                                kwargs={"stall_s": stall_s}, daemon=True),
               threading.Thread(target=run_probes, args=(lab, probes), daemon=True)]
    threads[0].start()
    lab.wait_until(lambda: dl.received >= 200_000 or dl.done.is_set(), 10)
    threads[1].start()
    lab.wait_until(lambda: probes.answered() >= 5, 5)
    killed_at, killed_wall = time.monotonic(), time.time()
    lab.kill_router(victim)
    took_over = lab.wait_until(lambda: lab.state(survivor) == "MASTER", 10)
    lab.wait_until(lambda: sum(1 for sent, got in probes.results
                               if got is not None and sent > killed_at) >= 20, 10)
    probes.stop.set()
    dl.done.wait(60)
    for thread in threads:
        thread.join(5)
    master_at = [t["at"] for t in lab.ha(survivor)["transitions"] if t["new"] == "MASTER"]
    gap = probes.gap()
    return {"took_over": took_over,
            "takeover_ms": round((master_at[-1] - killed_wall) * 1000) if master_at else None,
            "gap_ms": round(gap[0] * 1000) if gap else None,
            "gap_starts_after_kill_ms": round((gap[1] - killed_at) * 1000) if gap else None,
            "probes": len(probes.results), "probes_answered": probes.answered(),
            "download": {"expected": dl.expected, "received": dl.received, "error": dl.error}}


def report(name: str, result: dict) -> None:
    """Print a failover measurement and, if USERLB_HA_RESULTS names a file, merge it into
    that JSON file (the README quotes these numbers)."""
    print(f"\nHA {name}: gap {result.get('gap_ms')} ms, takeover {result.get('takeover_ms')} ms "
          f"after the kill; download {result['download']}")
    target = os.environ.get("USERLB_HA_RESULTS")
    if target:
        path = Path(target)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[name] = result
        path.write_text(json.dumps(data, indent=2) + "\n")


def keepalived_path() -> str | None:
    """keepalived's binary (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which("keepalived")
    return found or ("/usr/sbin/keepalived" if os.access("/usr/sbin/keepalived", os.X_OK) else None)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return f'"{value}"'


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)      # unwinds through __exit__, which tears the lab down


__all__ = ["HaLab", "GATEWAY", "CLIENT_IF", "PRIVATE_IF", "HA_KEY_HEX", "VIP", "router_ip"]
