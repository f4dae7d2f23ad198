"""The TUN edge's I/O modes on a real TUN in a namespace of the test's own (tunio.py,
tunring.py, tun.open_queues).

A UDP socket in the namespace sends datagrams to an address routed into the TUN; the
test reads them through each I/O mode, reflects each in place (source and destination
swapped: both checksums stay valid, also a partial one under offload) and writes the
rows back, so the socket receives every datagram back, in order, through the kernel.
Batches over a pool smaller than the burst make io_uring wrap its pool and re-arm
its multishot read when the buffers run out.
"""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest

from userlb.netns import in_namespace, ip_cmd, run, socket_in
from userlb.tun import Tun, open_queues
from userlb.tunio import ReadTunIO, open_io

pytestmark = [pytest.mark.root, pytest.mark.tun]

NS = f"ulbtio{os.getpid()}"
DEV = "ulbtio0"
LOCAL, PEER = "198.18.9.1", "198.18.9.2"      # PEER is routed into the TUN
SO_RCVBUFFORCE = 33                            # asm-generic/socket.h; not in Python's socket


@pytest.fixture(scope="module")
def ns():
    run(["ip", "netns", "add", NS])
    try:
        ip_cmd(NS, "link", "set", "lo", "up")
        yield NS
    finally:
        run(["ip", "netns", "del", NS], check=False)


def _open(ns: str, queues: int = 1, offload: bool = False) -> list[Tun]:
    tuns = in_namespace(ns, open_queues, DEV, queues, 1500, offload)
    ip_cmd(ns, "addr", "add", f"{LOCAL}/24", "dev", DEV)
    return tuns


def _reflect(batch) -> np.ndarray:
    """Swap IPv4 addresses and UDP ports of every row in place; the rows to write."""
    n = batch.count
    buf = batch.buf[:n]
    addrs = buf[:, 12:20].copy()
    buf[:, 12:16], buf[:, 16:20] = addrs[:, 4:8], addrs[:, 0:4]
    ports = buf[:, 20:24].copy()
    buf[:, 20:22], buf[:, 22:24] = ports[:, 2:4], ports[:, 0:2]
    return np.arange(n)


def _echo(io, sock, count: int, batch_size: int) -> list[bytes]:
    """Send `count` datagrams, reflect them through `io`, return what comes back."""
    for i in range(count):
        sock.sendto(b"datagram %03d" % i, (PEER, 9))
    read, deadline = 0, time.monotonic() + 10
    while read < count and time.monotonic() < deadline:
        for batch in io.frames(0.2):
            assert 0 < batch.count <= batch_size
            read += batch.count
            rows = _reflect(batch)
            io.write_rows(batch, rows, batch.length[rows])
    for _ in io.frames(0.05):       # submit the last writes (io_uring: on the next wait)
        pass
    got = []
    sock.settimeout(2)
    while len(got) < count:
        data, peer = sock.recvfrom(2048)
        assert peer == (PEER, 9)
        got.append(data)
    return got


@pytest.mark.parametrize("batch_size, burst", [(4, 40), (64, 300)], ids=["few", "many"])
@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
@pytest.mark.parametrize("mode", ["read", "uring", "sqpoll"])
def test_every_mode_reads_and_writes_in_order(ns, mode, offload, batch_size, burst):
    """few: completions and writes take tunring's plain-Python path; many: numpy's."""
    (tun,) = _open(ns, offload=offload)
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    sock = socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    io = open_io(tun, mode, batch_size, wake)
    try:
        if io.name != mode:
            pytest.skip(f"this kernel refuses io_uring {mode} (fell back to {io.name})")
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)   # the whole burst
        sock.bind((LOCAL, 0))
        got = _echo(io, sock, burst, batch_size)
        assert got == [b"datagram %03d" % i for i in range(burst)]
        assert io.write_failures == 0
        if mode != "read":        # a pool of 2 x batch rows for the burst: wrapped, re-armed
            assert io.rearms > 1 and io.read_errors == 0
    finally:
        io.close()
        sock.close()
        tun.close()
        os.close(wake)


def test_wake_eventfd_ends_the_wait(ns):
    (tun,) = _open(ns)
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    io = open_io(tun, "auto", 4, wake)
    try:
        os.eventfd_write(wake, 1)
        start = time.monotonic()
        assert list(io.frames(5.0)) == []
        assert time.monotonic() - start < 1.0
        with pytest.raises(BlockingIOError):     # drained by the I/O, not by the worker
            os.eventfd_read(wake)
    finally:
        io.close()
        tun.close()
        os.close(wake)


def test_multi_queue_spreads_flows_over_queues(ns):
    tuns = _open(ns, queues=2)
    wakes = [os.eventfd(0, os.EFD_NONBLOCK) for _ in tuns]
    ios = [ReadTunIO(t, 64, w) for t, w in zip(tuns, wakes)]
    socks = [socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
    try:
        for i, s in enumerate(socks):
            s.sendto(b"flow %d" % i, (PEER, 9))
        per_queue = [sum(b.count for b in io.frames(0.5)) for io in ios]
        assert sum(per_queue) == 32 and min(per_queue) > 0, per_queue
    finally:
        for s in socks:
            s.close()
        for t in tuns:
            t.close()
        for w in wakes:
            os.close(w)
