"""Overload at the TUN: a bounded queue, and every frame the kernel could not queue for
userlb counted (tun_queue_full) next to the engine's drops in `stats`.

The balancer is stopped (SIGSTOP) while the client sends three queues' worth of UDP to
the VIP, so the kernel must drop what does not fit; after SIGCONT `stats` must account
for every datagram, as read by userlb or dropped at the full queue.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from userlb import ctlclient
from userlb.lab import ECHO_PORT, VIP, Lab
from userlb.plumbing import TUN_TXQUEUELEN
from userlb.tunstats import tun_counters
from userlb.netns import in_namespace

pytestmark = [pytest.mark.root, pytest.mark.tun]

BATCH = 256


def all_threads_stopped(pid: int) -> bool:
    """Every thread of `pid` in the stopped state: SIGSTOP takes effect asynchronously,
    and a data-path thread woken by the first datagram could still read a batch."""
    task = Path(f"/proc/{pid}/task")
    return all((t / "stat").read_text().rpartition(")")[2].split()[0] in ("T", "t")
               for t in task.iterdir())


def tun_counters_once_all_arrived(lab, before: dict, sent: int, timeout_s: float = 10.0) -> dict:
    """The TUN's counters once every datagram sent has reached it: the client's sendto
    returns before the router's softirq has routed them (later still on a busy machine).
    With the reader stopped the queue holds at most TUN_TXQUEUELEN frames (counted in
    tx_packets only when read), so all have arrived once that many fewer than were sent
    were dropped and the count holds still over two more reads 20 ms apart."""
    reads: list[dict] = []

    def settled() -> bool:
        reads.append(in_namespace(lab.router_ns, tun_counters, "ulb0"))
        now = reads[-1]
        return (now["tx_dropped"] - before["tx_dropped"] >= sent - TUN_TXQUEUELEN
                and reads[-3:] == [now] * 3)

    assert lab.wait_until(settled, timeout_s), \
        f"not every datagram reached the TUN within {timeout_s} s: {reads[-1]}"
    return reads[-1]


def test_full_tun_queue_drops_are_counted_and_the_queue_is_bounded():
    with Lab(servers=1) as lab:
        # io = "read": a stopped balancer reads nothing (io_uring's multishot read can
        # still fill its buffer pool, 2 x BATCH rows, so the queue would not be all)
        balancer = lab.start_balancer(lab.config_text(
            scheduler="rr", extra=f'batch_size = {BATCH}\nio = "read"'))
        assert len(lab.udp_echo(count=1)) == 1   # ARP resolved: no datagram waits on it
        before = ctlclient.request(balancer.ctl_path, "stats")
        assert before["tun"]["txqueuelen"] == TUN_TXQUEUELEN
        assert before["datapath"]["write_failures"] == 0
        sent = 3 * TUN_TXQUEUELEN
        sock = lab.client_socket(socket.SOCK_DGRAM)
        balancer.proc.send_signal(signal.SIGSTOP)
        try:
            assert lab.wait_until(lambda: all_threads_stopped(balancer.proc.pid), 5.0)
            for i in range(sent):
                sock.sendto(i.to_bytes(4, "big"), (VIP, ECHO_PORT))
            stopped = tun_counters_once_all_arrived(lab, before["tun"], sent)
        finally:
            balancer.proc.send_signal(signal.SIGCONT)
            sock.close()
        after = ctlclient.request(balancer.ctl_path, "stats")
        tun0, tun1 = before["tun"], after["tun"]
        dropped = tun1["tx_dropped"] - tun0["tx_dropped"]
        # at most the queue (and the reads in flight when it stopped) got through
        assert dropped >= sent - TUN_TXQUEUELEN - BATCH
        assert stopped["tx_dropped"] - tun0["tx_dropped"] == dropped
        assert (tun1["tx_packets"] - tun0["tx_packets"]) + dropped >= sent
        assert after["drops"]["tun_queue_full"] == tun1["tx_dropped"]


def test_plumbing_restores_the_queue_length_it_changed():
    from userlb.lab import ROUTER_CLIENT_IF, ROUTER_SERVER_IF
    from userlb.netns import ip_cmd
    from userlb.plumbing import RouterPlumbing
    with Lab(servers=1) as lab:
        r = lab.router_ns
        ip_cmd(r, "tuntap", "add", "dev", "ulbq0", "mode", "tun")
        ip_cmd(r, "link", "set", "ulbq0", "txqueuelen", "3000", "up")
        plumbing = RouterPlumbing("ulbq0", ROUTER_CLIENT_IF, ROUTER_SERVER_IF, [VIP])
        in_namespace(r, plumbing.install)
        try:
            assert in_namespace(r, tun_counters, "ulbq0")["txqueuelen"] == TUN_TXQUEUELEN
        finally:
            in_namespace(r, plumbing.remove)
        assert in_namespace(r, tun_counters, "ulbq0")["txqueuelen"] == 3000
