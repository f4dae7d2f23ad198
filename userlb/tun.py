"""EDGE: the TUN device: open it (python-pytun) and move frames in batches.

Tun() creates the device (IFF_TUN | IFF_NO_PI: raw IPv4, no packet
info), sets its MTU and brings it up; open_queues() opens several queues of one
IFF_MULTI_QUEUE device (tuntap.rst), one Tun each. read_batch() fills a FrameBatch with one
readv(2) per frame, straight into the preallocated rows, until the queue is
empty (EAGAIN) or the batch is full; write_rows() writes chosen rows back.
pytun's own read()/write() allocate per packet and are not used on the data
path (spec/perf.md A5). No parsing or policy here.

With `offload=True` the device is opened with IFF_VNET_HDR and TUNSETOFFLOAD
(CSUM | TSO4 | TSO6, plus USO4 | USO6 where the kernel has them): every read and
write carries a 10-byte virtio_net_hdr, and TCP arrives as super-packets of up to
64 KiB (spec/perf.md A1). read_batch() scatters each read into the batch's `vnet`
row (the header) and its buf row (the datagram, from byte 0 as without offload);
write_rows() gathers the two back with one writev(2), the header unchanged, so the
kernel segments and completes the checksum as it announced.
"""

from __future__ import annotations

import fcntl
import os

import numpy as np
from pytun import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TUN, IFF_VNET_HDR, TunTapDevice

from userlb.frames import OFFLOAD_SNAPLEN, VNET_HDR_LEN, FrameBatch

TUNSETOFFLOAD = 0x400454D0                   # _IOW('T', 208, unsigned int)
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
TUN_F_USO4, TUN_F_USO6 = 0x20, 0x40          # kernel >= 6.2; optional, as in wireguard-go
_NO_VNET_HDR = bytes(VNET_HDR_LEN)           # for frames we originate: no offload asked


def _disable_ipv6(ifname: str) -> None:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass      # no IPv6 in this kernel or namespace: nothing to silence


def open_queues(name: str, queues: int = 1, mtu: int = 1500, offload: bool = False) -> list["Tun"]:
    """The device with `queues` queues (IFF_MULTI_QUEUE when more than one), one Tun each.
    The kernel spreads the frames it sends into the device over the queues by flow hash
    (tun_automq_select_queue); a frame written to any queue enters the stack alike."""
    if queues == 1:
        return [Tun(name, mtu, offload)]
    opened: list[Tun] = []
    try:
        for i in range(queues):
            opened.append(Tun(name, mtu, offload, multi_queue=True, configure=i == 0))
    except BaseException:
        for tun in opened:
            tun.close()
        raise
    return opened


class Tun:
    """One open queue of a TUN device (the only one without multi_queue); `fd` is
    non-blocking. `configure` sets the device's MTU and brings it up (the first queue)."""

    def __init__(self, name: str, mtu: int = 1500, offload: bool = False,
                 multi_queue: bool = False, configure: bool = True) -> None:
        self.offload = offload
        self.dev = TunTapDevice(name=name,
                                flags=IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
                                | (IFF_MULTI_QUEUE if multi_queue else 0))
        if offload:
            base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
            try:
                fcntl.ioctl(self.dev.fileno(), TUNSETOFFLOAD, base | TUN_F_USO4 | TUN_F_USO6)
            except OSError:
                fcntl.ioctl(self.dev.fileno(), TUNSETOFFLOAD, base)
        if configure:
            self.dev.mtu = mtu
            _disable_ipv6(self.dev.name)     # no router solicitations/MLD into our own reader
            self.dev.up()
        self.name = self.dev.name
        self.fd = self.dev.fileno()
        os.set_blocking(self.fd, False)
        self._views: dict[int, list[memoryview]] = {}
        self._hdrs: dict[int, list[memoryview]] = {}

    @property
    def snaplen(self) -> int:
        """Row size a batch needs for this device (super-packets with offload)."""
        return OFFLOAD_SNAPLEN if self.offload else 2048

    def new_batch(self, capacity: int) -> FrameBatch:
        return FrameBatch(capacity, self.snaplen, vnet=self.offload)

    def _rows(self, batch: FrameBatch) -> list[memoryview]:
        key = id(batch.buf)
        views = self._views.get(key)
        if views is None:
            views = [memoryview(batch.buf[i]) for i in range(batch.capacity)]
            self._views = {key: views}
        return views

    def _hdr_rows(self, batch: FrameBatch) -> list[memoryview]:
        if batch.vnet is None:
            raise ValueError("offload TUN needs a FrameBatch with vnet headers")
        key = id(batch.vnet)
        views = self._hdrs.get(key)
        if views is None:
            views = [memoryview(batch.vnet[i]) for i in range(batch.capacity)]
            self._hdrs = {key: views}
        return views

    def read_batch(self, batch: FrameBatch) -> int:
        """Read frames into `batch` until EAGAIN or full; returns batch.count."""
        if self.offload:
            return self._read_batch_vnet(batch)
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

    def _read_batch_vnet(self, batch: FrameBatch) -> int:
        rows, hdrs = self._rows(batch), self._hdr_rows(batch)
        length = batch.length
        i = 0
        fd = self.fd
        cap = batch.capacity
        while i < cap:
            try:
                n = os.readv(fd, (hdrs[i], rows[i]))
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if n < VNET_HDR_LEN:
                continue                  # cannot happen with IFF_VNET_HDR; never a row
            length[i] = n - VNET_HDR_LEN
            i += 1
        batch.count = i
        return i

    def write_rows(self, batch: FrameBatch, rows: np.ndarray, out_len: np.ndarray) -> int:
        """Write rows `rows` with lengths `out_len`; returns frames the kernel refused."""
        views = self._rows(batch)
        if self.offload:
            hdrs = self._hdr_rows(batch)
            failed = 0
            fd = self.fd
            for row, n in zip(rows.tolist(), out_len.tolist()):
                try:
                    os.writev(fd, (hdrs[row], views[row][:n]))
                except OSError:
                    failed += 1
            return failed
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
            if self.offload:
                os.writev(self.fd, (_NO_VNET_HDR, frame))
            else:
                os.write(self.fd, frame)
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.dev.close()
