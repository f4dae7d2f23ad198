"""Operating a running balancer in the lab: live reload under load, ipvsadm-style adm,
Prometheus metrics, and the example lvs.cf / keepalived.conf running the lab unchanged."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from userlb import ctlclient
from userlb.lab import ECHO_PORT, HTTP_PORT, ROUTER_CLIENT_IP, VIP, Lab
from userlb.netns import in_namespace

pytestmark = [pytest.mark.root, pytest.mark.tun]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
METRICS = f"{ROUTER_CLIENT_IP}:9100"


def config(lab, weights) -> str:
    services = (lab.service_text("tcp", 80, HTTP_PORT, "wrr", weights=weights)
                + lab.service_text("tcp", ECHO_PORT, ECHO_PORT, "wlc"))
    return lab.config_text(services=services, extra=f'metrics = "{METRICS}"\n')


@pytest.fixture(scope="module")
def lab():
    with Lab(servers=3) as lab:
        lab.balancer = lab.start_balancer(config(lab, [1, 1, 1]))
        yield lab


def adm(lab, *args, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "userlb", "adm", "--ctl", lab.balancer.ctl_path,
                           *args], capture_output=True, text=True, input=stdin, timeout=30)


def scrape(lab) -> dict[str, float]:
    def get():
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5) as r:
            return r.read().decode()
    values = collections.defaultdict(float)
    for line in in_namespace(lab.router_ns, get).splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            values[name] += float(line.rsplit(" ", 1)[1])
    return values


class EchoClients:
    """`count` TCP echo connections through the VIP kept busy (bounded rounds and time)."""

    def __init__(self, lab, count=50):
        self.socks = [lab.client_socket() for _ in range(count)]
        for s in self.socks:
            s.settimeout(5)
            s.connect((VIP, ECHO_PORT))
        self.errors, self.rounds, self.stop = [], 0, threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        end = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < end and self.rounds < 10_000:
            for i, s in enumerate(self.socks):
                try:
                    msg = b"%d.%d" % (i, self.rounds)
                    s.sendall(msg)
                    if s.recv(64) != msg:
                        self.errors.append((i, "bad echo"))
                except OSError as exc:
                    self.errors.append((i, repr(exc)))
            self.rounds += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            s.close()


def served_by(lab, n) -> collections.Counter:
    return collections.Counter(lab.http_get("/")[1]["x-server"] for _ in range(n))


def test_reload_under_load_keeps_connections_and_applies_new_weights(lab):
    with EchoClients(lab) as clients:
        assert lab.wait_until(lambda: clients.rounds >= 3, 10)
        Path(lab.balancer.config_path).write_text(config(lab, [1, 0, 0]))
        result = ctlclient.request(lab.balancer.ctl_path, "reload")
        assert sorted(result["applied"]) == ["-e 198.18.2.12:8080 weight",
                                             "-e 198.18.2.13:8080 weight"]
        assert served_by(lab, 20) == {"rs1": 20}          # new weights, new flows
        rounds = clients.rounds
        assert lab.wait_until(lambda: clients.rounds >= rounds + 3, 10)
    assert clients.errors == []                            # zero resets on 50 connections


def test_bad_file_leaves_running_config_in_force(lab):
    path = Path(lab.balancer.config_path)
    good = path.read_text()
    path.write_text(good.replace("weight = 1", "weight = -4", 1))
    with pytest.raises(ctlclient.ControlError) as info:
        ctlclient.request(lab.balancer.ctl_path, "reload")
    assert f"{path}:" in str(info.value) and "weight: must be in 0..65535" in str(info.value)
    path.write_text(good)
    assert len(served_by(lab, 6)) >= 1                     # still balancing


def test_sighup_reloads(lab):
    path = Path(lab.balancer.config_path)
    path.write_text(config(lab, [0, 0, 1]))
    os.kill(lab.balancer.proc.pid, signal.SIGHUP)
    assert lab.wait_until(lambda: "reloaded" in lab.balancer.log(), 10)
    assert served_by(lab, 9) == {"rs3": 9}


def test_adm_lists_like_ipvsadm_and_edits(lab):
    listing = adm(lab, "-L", "-n", "-t", f"{VIP}:80")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("Prot LocalAddress:Port Scheduler Flags")
    assert lines[2] == f"TCP  {VIP}:80 wrr"
    assert lines[3].startswith("  -> 198.18.2.11:8080             Masq    ")
    edit = adm(lab, "-e", "-t", f"{VIP}:80", "-r", "198.18.2.12:8080", "-m", "-w", "5")
    assert edit.returncode == 0, edit.stderr
    assert "198.18.2.12:8080             Masq    5 " in adm(lab, "-Ln").stdout
    bad = adm(lab, "-e", "-t", f"{VIP}:80", "-r", "198.18.2.99:8080", "-w", "5")
    assert bad.returncode != 0 and "No such destination" in bad.stderr


def test_metrics_move_with_traffic(lab):
    before = scrape(lab)
    served_by(lab, 10)
    after = scrape(lab)
    assert after["userlb_connections_total"] >= before["userlb_connections_total"] + 10
    assert after["userlb_packets_total"] > before["userlb_packets_total"]


@pytest.mark.parametrize("example", ["lvs.cf", "keepalived.conf", "userlb.toml"])
def test_example_config_runs_the_lab_unchanged(example):
    with Lab(servers=3) as other:
        text = (EXAMPLES / example).read_text()
        balancer = other.start_balancer(text, filename=example,
                                        ctl_path=_ctl_socket(example, text))
        try:
            assert other.wait_until(lambda: len(served_by(other, 6)) == 3, 20)
        finally:
            balancer.stop()


def _ctl_socket(example: str, text: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith("ctl_socket"):
            return line.split("=", 1)[1].split("#")[0].strip().strip('"')
    return "/run/userlb.sock"
