"""The web view in headless Chromium, inside the lab, with traffic flowing.

Chromium runs in the client namespace (`ip netns exec`), so it reaches the lab's
addresses and nothing else, and is driven over the DevTools protocol on a pipe
(tests/fixtures/cdp.py). The balancer serves the view on the router's client-side
address. First read-only (no web_token): the page shows the three real servers with
their health and counters, a sampled packet's path, and a weight change is refused (403).
Then with a token: quiescing rs1 from the page's form takes effect (the next HTTP
requests avoid it). A screenshot of the page is checked to be a PNG; with
USERLB_WEB_SCREENSHOT=docs/web-view.png it is also saved there for the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.cdp import Browser, chromium_path
from userlb.lab import ECHO_PORT, HTTP_PORT, ROUTER_CLIENT_IP, VIP, Lab, server_ip
from userlb.netns import exec_argv, list_namespaces

pytestmark = [pytest.mark.root, pytest.mark.tun, pytest.mark.timeout(240)]

WEB = f"{ROUTER_CLIENT_IP}:8080"
URL = f"http://{WEB}/"
TOKEN = "lab-token-0123456789abcdef"
RS1 = f"{server_ip(0)}:{HTTP_PORT}"
SERVICE = f"TCP {VIP}:80"
CHECK = 'type = "http"\npath = "/"\ninterval_s = 0.5\nrise = 1\nfall = 2'


@pytest.fixture(scope="module")
def lab():
    if not chromium_path():
        if os.environ.get("CI"):
            pytest.fail("CI must run this test: install Debian's chromium (./dev test does)")
        pytest.skip("needs Debian's chromium (./dev test installs it)")
    with Lab(servers=3) as lab:
        yield lab


def config(lab: Lab, token: str) -> str:
    services = (lab.service_text("tcp", 80, HTTP_PORT, "rr", health='on_failure = "quiesce"',
                                 check=CHECK)
                + lab.service_text("tcp", ECHO_PORT, ECHO_PORT, "rr"))
    return lab.config_text(services=services, extra=f'web = "{WEB}"\nweb_token = "{token}"\n')


class Traffic:
    """HTTP GETs through the VIP (about 20/s) and two held TCP echo connections."""

    def __init__(self, lab: Lab) -> None:
        self.lab, self.stop, self.served = lab, threading.Event(), []
        self.held = []
        for _ in range(2):
            sock = lab.client_socket()
            sock.settimeout(3)
            sock.connect((VIP, ECHO_PORT))
            self.held.append(sock)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.served.append(self.lab.http_get("/", timeout_s=3)[1].get("x-server"))
            except OSError:
                self.served.append("failed")
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.held:
            sock.close()


def api(lab: Lab, method: str, path: str, body: dict | None = None,
        token: str | None = None) -> tuple[int, dict]:
    """One HTTP/1.1 request to the web view from the client namespace."""
    data = json.dumps(body).encode() if body is not None else b""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock = lab.client_socket()
    try:
        sock.settimeout(5)
        sock.connect((ROUTER_CLIENT_IP, 8080))
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {WEB}\r\nConnection: close\r\n{auth}"
                     f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data)
        reply = bytearray()
        while chunk := sock.recv(65536):
            reply += chunk
    finally:
        sock.close()
    head, _, payload = bytes(reply).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def browser(lab: Lab) -> Browser:
    b = Browser(argv_prefix=exec_argv(lab.client_ns, []))
    b.open(URL, width=1480, height=1040)
    return b


SERVERS_UP = """(() => {
  const g = [...document.querySelectorAll('#layer-nodes g.server')];
  return g.length === 3 && g.every(s => s.dataset.health === 'up' && +s.dataset.inactive > 0)
    && g.map(s => s.dataset.server).sort().join(' ');
})()"""
SAMPLED = """(() => {
  const row = document.querySelector('#samples tr.sample td.label');
  const path = document.querySelector('#layer-paths g.sample-path polyline');
  return row && path && row.textContent;
})()"""

RATES_SHOWN = """[...document.querySelectorAll('#services tr.dest')]
  .filter(r => +r.cells[5].textContent > 1).length >= 2"""


def use_form(b: Browser, weight_button: str, token: str = "") -> str:
    b.eval(f"""(() => {{
      const svc = document.getElementById('w-service'); svc.value = {json.dumps(SERVICE)};
      svc.dispatchEvent(new Event('change'));
      document.getElementById('w-server').value = {json.dumps(RS1)};
      document.getElementById('w-token').value = {json.dumps(token)};
      document.getElementById('weight-result').dataset.status = '';
      document.getElementById({json.dumps(weight_button)}).click();
    }})()""")
    return b.wait_for("document.getElementById('weight-result').dataset.status", 10)


def test_read_only_view_in_chromium(lab):
    balancer = lab.start_balancer(config(lab, ""))
    traffic = Traffic(lab)
    try:
        with browser(lab) as b:
            servers = b.wait_for(SERVERS_UP, 20)
            assert servers == " ".join(sorted(server_ip(i) for i in range(3)))
            label = b.wait_for(SAMPLED, 20)
            assert label and (f"→ {VIP}:80 ⇒ 198.18.2.1" in label or f"⇒ {VIP}:80 → " in label)
            assert b.wait_for("document.querySelectorAll('#layer-packets g.packet').length", 10)
            rows = b.eval("[...document.querySelectorAll('#services tr.dest')].map(r => "
                          "[...r.cells].map(c => c.textContent))")
            http_rows = [r for r in rows if r[0].endswith(f":{HTTP_PORT}")]
            assert len(http_rows) == 3 and all(r[1] == "up" and r[2] == "1" for r in http_rows)
            assert use_form(b, "w-quiesce") == "403"
            assert "read-only" in b.eval("document.getElementById('weight-result').textContent")
        status, body = api(lab, "POST", "/api/weight", {"service": SERVICE, "server": RS1,
                                                        "weight": 0}, token="anything")
        assert status == 403 and "read-only" in body["error"]
        status, state = api(lab, "GET", "/api/state")
        assert status == 200 and state["routers"][0]["role"] == "ACTIVE"
        assert all(d["weight"] == 1 for d in state["services"][0]["dests"])
    finally:
        traffic.close()
        balancer.stop()
    assert "failed" not in traffic.served


def test_token_quiesces_a_server_from_the_page(lab, tmp_path):
    balancer = lab.start_balancer(config(lab, TOKEN))
    traffic = Traffic(lab)
    try:
        with browser(lab) as b:
            b.wait_for(SERVERS_UP, 20)
            assert api(lab, "POST", "/api/weight", {"service": SERVICE, "server": RS1,
                                                    "weight": 0}, token="wrong-token")[0] == 401
            assert use_form(b, "w-quiesce", TOKEN) == "200"
            assert b.wait_for("[...document.querySelectorAll('#layer-nodes g.server.quiesced')]"
                              ".map(g => g.dataset.server + ' ' + g.dataset.quiesced).join()",
                              10) == f"{server_ip(0)} TCP :80"
            b.wait_for(SAMPLED, 20)
            b.wait_for(RATES_SHOWN, 10)           # the 2-s estimator's first steps, for the picture
            b.wait_for("!(document.querySelector('#layer-paths g.sample-path')?.dataset.label"
                       f" || '{server_ip(0)}').includes('{server_ip(0)}:')", 10)
            b.wait_for("document.querySelectorAll('#layer-packets g.packet').length", 10)
            png = b.screenshot()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        (tmp_path / "web-view.png").write_bytes(png)
        if target := os.environ.get("USERLB_WEB_SCREENSHOT"):
            shutil.copy(tmp_path / "web-view.png", Path(target))
        after = [lab.http_get("/")[1]["x-server"] for _ in range(30)]
        assert "rs1" not in after and set(after) == {"rs2", "rs3"}
        state = api(lab, "GET", "/api/state")[1]
        weights = {d["name"]: d["weight"] for d in state["services"][0]["dests"]}
        assert weights[RS1] == 0 and state["writable"] is True
    finally:
        traffic.close()
        balancer.stop()


def _start_demo(seconds: int) -> tuple[subprocess.Popen, str, list[str]]:
    """`userlb demo --web` in its own process group (as a terminal runs it); returns it,
    the URL it printed and its output so far."""
    proc = subprocess.Popen([sys.executable, "-m", "userlb", "demo", "--web", "--web-seconds",
                             str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd="/", start_new_session=True)
    lines: list[str] = []
    while not any("web view: http://127.0.0.1:" in line for line in lines):
        line = proc.stdout.readline()
        if not line:
            proc.wait(10)
            pytest.fail("".join(lines))
        lines.append(line)
    return proc, re.search(r"http://127\.0\.0\.1:\d+/", lines[-1]).group(0), lines


def _lab_namespaces(lines: list[str]) -> list[str]:
    """The demo's namespaces still present (its tag is in its first line; other test runs
    may create and delete labs meanwhile, so the whole list is not compared)."""
    tag = re.search(r"client (ulb-\d+-\d+)-c,", lines[0]).group(1)
    return [ns for ns in list_namespaces() if ns.startswith(tag + "-")]


def _get(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never a proxy
    with opener.open(url, timeout=5) as reply:
        return reply.read()


def test_demo_web_serves_on_localhost_and_cleans_up():
    proc, url, lines = _start_demo(6)
    try:
        assert b'<svg id="figure"' in _get(url)
        deadline = time.monotonic() + 5
        while True:                      # the forwarder reaches the lab; traffic flows
            state = json.loads(_get(url + "api/state"))
            if sum(d["conns"] for d in state["services"][0]["dests"]) > 5:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + out
    assert "hop by hop" in out and "lab torn down" in out and "(BAD)" not in out
    assert _lab_namespaces(lines) == []


def test_demo_web_ends_on_ctrl_c_and_cleans_up():
    proc, url, lines = _start_demo(60)
    try:
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)        # as Ctrl-C in a terminal: the whole group
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and "interrupted: lab torn down" in out, "".join(lines) + out
    assert "Traceback" not in out
    assert _lab_namespaces(lines) == []


def test_ha_pair_each_router_shows_its_role_and_its_peers():
    from userlb.halab import HaLab, router_ip
    ha = {"keepalive": 0.2, "deadtime": 1.0}
    with HaLab(servers=2) as pair:
        for r, priority in ((1, 150), (2, 100)):
            text = pair.router_config(r, priority, "heartbeat", **ha).replace(
                "table_size = 4096\n", f'table_size = 4096\nweb = "{router_ip(r)}:8080"\n', 1)
            pair.start_router(r, text)
        assert pair.wait_until(lambda: pair.state(1) == "MASTER" and pair.state(2) == "BACKUP",
                               10)

        def roles(r: int) -> list[tuple]:
            sock = pair.client_socket()
            try:
                sock.settimeout(5)
                sock.connect((router_ip(r), 8080))
                sock.sendall(b"GET /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = bytearray()
                while chunk := sock.recv(65536):
                    reply += chunk
            finally:
                sock.close()
            state = json.loads(bytes(reply).partition(b"\r\n\r\n")[2])
            return [(x["address"], x["role"], x["self"]) for x in state["routers"]]
        assert pair.wait_until(lambda: roles(1)[1][1] == "BACKUP", 5)
        assert roles(1) == [(router_ip(1), "MASTER", True), (router_ip(2), "BACKUP", False)]
        assert roles(2) == [(router_ip(2), "BACKUP", True), (router_ip(1), "MASTER", False)]
        with Browser(argv_prefix=exec_argv(pair.client_ns, [])) as b:
            b.open(f"http://{router_ip(2)}:8080/")
            boxes = b.wait_for("[...document.querySelectorAll('#layer-nodes g.router')]"
                               ".map(g => g.dataset.role + ' ' + g.dataset.self).join(', ')", 10)
        assert boxes == "MASTER false, BACKUP true"   # the active one on top, drawn from r2
