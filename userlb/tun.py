"""EDGE: the TUN device: open it (python-pytun) and move frames in batches.

open_tun() creates the device (IFF_TUN | IFF_NO_PI: raw IPv4, no packet
info), sets its MTU and brings it up. read_batch() fills a FrameBatch with one
readv(2) per frame, straight into the preallocated rows, until the queue is
empty (EAGAIN) or the batch is full; write_rows() writes chosen rows back.
pytun's own read()/write() allocate per packet and are not used on the data
path (spec/perf.md A5). No parsing or policy here.
"""

from __future__ import annotations

import os

import numpy as np
from pytun import IFF_NO_PI, IFF_TUN, TunTapDevice

from userlb.frames import FrameBatch


def _disable_ipv6(ifname: str) -> None:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass      # no IPv6 in this kernel or namespace: nothing to silence


class Tun:
    """An open TUN device; `fd` is non-blocking."""

    def __init__(self, name: str, mtu: int = 1500) -> None:
        self.dev = TunTapDevice(name=name, flags=IFF_TUN | IFF_NO_PI)
        self.dev.mtu = mtu
        _disable_ipv6(self.dev.name)     # no router solicitations/MLD into our own reader
        self.dev.up()
        self.name = self.dev.name
        self.fd = self.dev.fileno()
        os.set_blocking(self.fd, False)
        self._views: dict[int, list[memoryview]] = {}

    def _rows(self, batch: FrameBatch) -> list[memoryview]:
        key = id(batch.buf)
        views = self._views.get(key)
        if views is None:
            views = [memoryview(batch.buf[i]) for i in range(batch.capacity)]
            self._views = {key: views}
        return views

    def read_batch(self, batch: FrameBatch) -> int:
        """Read frames into `batch` until EAGAIN or full; returns batch.count."""
        rows = self._rows(batch)
        length = batch.length
        i = 0
        fd = self.fd
        cap = batch.capacity
        while i < cap:
            try:
                n = os.readv(fd, (rows[i],))
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            length[i] = n
            i += 1
        batch.count = i
        return i

    def write_rows(self, batch: FrameBatch, rows: np.ndarray, out_len: np.ndarray) -> int:
        """Write rows `rows` with lengths `out_len`; returns frames the kernel refused."""
        views = self._rows(batch)
        failed = 0
        fd = self.fd
        for row, n in zip(rows.tolist(), out_len.tolist()):
            try:
                os.write(fd, views[row][:n])
            except OSError:
                failed += 1
        return failed

    def write(self, frame: bytes) -> bool:
        try:
            os.write(self.fd, frame)
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.dev.close()
