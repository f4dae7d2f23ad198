"""EDGE: `userlb demo --web`: the lab with the web view, reachable from this machine's browser.

The balancer serves the view on the router's client-side address inside the lab
(WEB_ADDRESS, as a real router would on its management side). The lab's addresses are
not routed from the root namespace, so `Forwarder` listens on 127.0.0.1 here and opens
each upstream connection from inside the client namespace (netns.socket_in): a browser
on this machine opens http://127.0.0.1:PORT/ and talks to nothing but the lab. (The
alternative, `ip netns exec <ns> <browser>`, needs a browser that runs as root in a
namespace; the forwarder needs nothing.) `paced_traffic` keeps HTTP requests, UDP echoes
and a few long-lived TCP echo connections flowing until its deadline or Ctrl-C, so the
page has something to show. Bounded: MAX_FORWARDED connections, idle timeouts, and every
thread stops with stop().
"""

from __future__ import annotations

import collections
import secrets
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from userlb.lab import ECHO_PORT, HTTP_PORT, ROUTER_CLIENT_IP, VIP, Lab
from userlb.netns import socket_in

WEB_PORT = 8080
WEB_ADDRESS = f"{ROUTER_CLIENT_IP}:{WEB_PORT}"
LOCAL_PORT = 8080             # preferred port on 127.0.0.1; any free one if taken
MAX_FORWARDED = 32
IDLE_S = 60.0
REQUESTS_PER_S = 8
HELD_ECHOES = 3               # long-lived connections: they show as ActiveConn
CHECK = 'type = "http"\npath = "/"\ninterval_s = 1\nrise = 1\nfall = 2'


def config(lab: Lab, scheduler: str, token: str) -> str:
    """The demo's config plus the web view and an HTTP health check on the web service."""
    services = (lab.service_text("tcp", 80, HTTP_PORT, scheduler, health='on_failure = "quiesce"',
                                 check=CHECK)
                + lab.service_text("udp", ECHO_PORT, ECHO_PORT, scheduler)
                + lab.service_text("tcp", ECHO_PORT, ECHO_PORT, scheduler))
    return lab.config_text(scheduler=scheduler, services=services, trace_connections=1,
                           extra=f'web = "{WEB_ADDRESS}"\nweb_token = "{token}"\n')


def new_token() -> str:
    return secrets.token_hex(16)


class Forwarder:
    """TCP 127.0.0.1:port here → `target` (host, port) reached from inside namespace `ns`."""

    def __init__(self, ns: str, target: tuple[str, int], port: int = LOCAL_PORT) -> None:
        self.ns, self.target, self.wanted = ns, target, port
        self.listener: socket.socket | None = None
        self.port = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> int:
        for port in (self.wanted, 0):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                break
            except OSError:
                sock.close()
        sock.listen(16)
        sock.settimeout(0.2)
        self.listener, self.port = sock, sock.getsockname()[1]
        self._spawn(self._accept)
        return self.port

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for sock in list(self._socks):
                _close(sock)
        for t in self._threads:
            t.join(2.0)
        if self.listener is not None:
            self.listener.close()

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name="web-forwarder")
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with self._lock:
                if len(self._socks) >= 2 * MAX_FORWARDED:
                    client.close()
                    continue
                self._socks.add(client)
            self._spawn(self._pipe, client)

    def _pipe(self, client: socket.socket) -> None:
        upstream = None
        try:
            upstream = socket_in(self.ns, socket.AF_INET, socket.SOCK_STREAM)
            with self._lock:
                self._socks.add(upstream)
            upstream.settimeout(5.0)
            upstream.connect(self.target)
            _splice(client, upstream, self._stop)
        except OSError:
            pass
        finally:
            with self._lock:
                for sock in (client, upstream):
                    if sock is not None:
                        self._socks.discard(sock)
                        _close(sock)


def _splice(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    """Copy both ways until either side closes, IDLE_S passes quietly, or stop is set."""
    peer = {a: b, b: a}
    quiet_since = time.monotonic()
    while not stop.is_set() and time.monotonic() - quiet_since < IDLE_S:
        ready, _, _ = select.select([a, b], [], [], 0.2)
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            peer[sock].sendall(data)
            quiet_since = time.monotonic()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def serve(lab: Lab, seconds: float, token: str, say) -> collections.Counter:
    """Expose the view on 127.0.0.1, say how to open it, run the traffic, stop forwarding."""
    forwarder = Forwarder(lab.client_ns, (ROUTER_CLIENT_IP, WEB_PORT))
    port = forwarder.start()
    try:
        say(f"web view: http://127.0.0.1:{port}/  (open it in a browser on this machine)\n"
            f"  userlb serves it on {WEB_ADDRESS} inside the lab; this demo forwards "
            f"127.0.0.1:{port} to it from the client namespace.\n"
            f"  From inside the lab: ip netns exec {lab.client_ns} "
            f"curl -s http://{WEB_ADDRESS}/api/state\n"
            f"  Token for weight changes (paste it into the page's form): {token}\n"
            f"traffic for {seconds:g} s (Ctrl-C ends it earlier):")
        return paced_traffic(lab, seconds, say)
    finally:
        forwarder.stop()


def paced_traffic(lab: Lab, seconds: float, say) -> collections.Counter:
    """HTTP GETs (REQUESTS_PER_S), a UDP echo a second and HELD_ECHOES long-lived TCP echo
    connections until `seconds` pass; returns who answered the HTTP requests. Ctrl-C
    propagates (the terminal sends it to the lab's processes too) after the clean-up."""
    served: collections.Counter = collections.Counter()
    held = _hold_echoes(lab)
    start = time.monotonic()
    next_report = start + 10
    futures: list = []
    pool = ThreadPoolExecutor(4)
    try:
        while (now := time.monotonic()) < start + seconds:
            futures.append(pool.submit(_one_get, lab))
            if len(futures) % REQUESTS_PER_S == 0:
                pool.submit(_udp_echo, lab)
                _poke(held)
            if now >= next_report:
                _collect(futures, served)
                say(f"  {now - start:4.0f} s: " + ", ".join(
                    f"{k} {n}" for k, n in sorted(served.items())))
                next_report += 10
            time.sleep(1 / REQUESTS_PER_S)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for sock in held:
            sock.close()
    _collect(futures, served)
    return served


def _collect(futures: list, served: collections.Counter) -> None:
    done = [f for f in futures if f.done()]
    for f in done:
        futures.remove(f)
        if not f.cancelled():
            served[f.result()] += 1


def _one_get(lab: Lab) -> str:
    try:
        return lab.http_get("/", timeout_s=3.0)[1].get("x-server", "?")
    except (OSError, ValueError, IndexError) as exc:
        return f"failed: {exc.__class__.__name__}"


def _udp_echo(lab: Lab) -> None:
    sock = lab.client_socket(socket.SOCK_DGRAM)
    try:
        sock.settimeout(1.0)
        sock.sendto(b"ping", (VIP, ECHO_PORT))
        sock.recv(2048)
    except OSError:
        pass
    finally:
        sock.close()


def _hold_echoes(lab: Lab) -> list[socket.socket]:
    held = []
    for _ in range(HELD_ECHOES):
        sock = lab.client_socket()
        try:
            sock.settimeout(2.0)
            sock.connect((VIP, ECHO_PORT))
            held.append(sock)
        except OSError:
            sock.close()
    return held


def _poke(held: list[socket.socket]) -> None:
    for sock in held:
        try:
            sock.sendall(b"still here\n")
            sock.recv(2048)
        except OSError:
            pass
