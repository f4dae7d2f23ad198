"""EDGE: TUN reads and writes through io_uring (spec/perf.md, "The TUN ceiling").

What it does: one multishot READ on the TUN fd fills a provided-buffer ring whose
buffers are the rows of a pool FrameBatch (twice the batch size, rounded up to a power
of two), so the kernel reads straight into rows, as Tun.read_batch() does, and
consecutive reads land in consecutive rows. frames(wait_s) submits the writes queued
since the last call and waits for completions in the same io_uring_enter(), then
yields the rows read as FrameBatch windows of at most `batch_size` rows (one more
where the pool wraps). write_rows() queues one WRITE per row; a row goes back to the
buffer ring once its write has completed, oldest first, so the ring keeps its order.
With offload each row's virtio_net_hdr sits just before the row (FrameBatch
inline_vnet): one buffer takes header and datagram in one read, one WRITE sends both.
A multishot POLL on the worker's wake eventfd ends a wait for control calls (and
drains the eventfd; the worker reads it no other time).

The ring is set up with SINGLE_ISSUER | DEFER_TASKRUN: the kernel does the reads as
task work inside our own wait, on our core, with no extra wake-ups (the spec's
measured configuration). With sqpoll=True a kernel thread submits and reads instead,
on another core (spec: 60 -> 80 kpps for a second busy core).

What it does not do: parse, decide, or count anything but I/O. It needs a kernel with
IORING_OP_READ_MULTISHOT (6.7); tunio.open_io() falls back to read-until-EAGAIN
when this class raises UringUnavailable.
"""

from __future__ import annotations

import errno
import logging

import numpy as np

from userlb import uring
from userlb.frames import VNET_HDR_LEN, FrameBatch
from userlb.tunio import drain

log = logging.getLogger("userlb.tunring")

READ_TAG, WAKE_TAG, CANCEL_TAG = 1, 2, 3      # user_data; a WRITE's is WRITE_TAG + its row
WRITE_TAG = 1 << 32
FEW = 32               # completions or writes handled in plain Python (numpy's fixed cost
                       # per call, ~1 us, is most of the cost at a few frames per wake-up)
MAX_WINDOWS = 4096     # cached windows; in steady state a few (row, count) pairs recur
BGID = 0                                       # our one buffer group
FILE_POS = (1 << 64) - 1                       # off = -1: a stream, no position


def pool_rows_for(batch_size: int) -> int:
    """Rows in the pool: a power of two >= 2 x batch_size (one batch being written
    while the kernel reads the next into the other half)."""
    return 1 << (2 * max(1, batch_size) - 1).bit_length()


class UringTunIO:
    """The TUN edge over io_uring; the same frames/write_rows/write face as tunio.ReadTunIO."""

    def __init__(self, tun, batch_size: int, wake_fd: int, snaplen: int | None = None,
                 sqpoll: bool = False) -> None:
        self.name = "sqpoll" if sqpoll else "uring"
        self.tun, self.batch_size = tun, batch_size
        self.vnet = bool(getattr(tun, "offload", False))
        rows = pool_rows_for(batch_size)
        if snaplen is None:
            snaplen = getattr(tun, "snaplen", 2048)
        self.pool = FrameBatch(rows, snaplen, vnet=self.vnet, inline_vnet=True)
        self.mask = rows - 1
        self.hdr = VNET_HDR_LEN if self.vnet else 0
        self.ring = uring.Ring(2 * rows, sqpoll=sqpoll)
        try:
            if not self.ring.supports(uring.OP_READ_MULTISHOT):
                raise uring.UringUnavailable(0, "no IORING_OP_READ_MULTISHOT (kernel < 6.7)")
            first = self.pool.buf.ctypes.data - self.hdr      # row 0's buffer, header included
            addrs = first + snaplen * np.arange(rows, dtype=np.uint64)
            self.bufs = uring.BufRing(self.ring, BGID, addrs, snaplen + self.hdr)
        except BaseException:
            self.ring.close()
            raise
        self.write_tmpl = np.zeros(rows, uring.SQE)
        t = self.write_tmpl
        t["opcode"], t["fd"], t["off"] = uring.OP_WRITE, tun.fd, FILE_POS
        t["addr"], t["user_data"] = addrs, WRITE_TAG + np.arange(rows, dtype=np.uint64)
        self.write_sqes = [t[i].tobytes() for i in range(rows)]     # the few-frames path
        self.read_sqe = self._sqe(uring.OP_READ_MULTISHOT, tun.fd, READ_TAG,
                                  flags=uring.IOSQE_BUFFER_SELECT, off=FILE_POS).tobytes()
        self.wake_sqe = self._sqe(uring.OP_POLL_ADD, wake_fd, WAKE_TAG,
                                  op_flags=uring.POLLIN, length=uring.POLL_ADD_MULTI).tobytes()
        self.read_armed = self.wake_armed = False
        self.wake_fd = wake_fd
        self.next_bid = 0          # the buffer (row) the kernel fills next
        self.held = 0              # rows taken by the kernel and not yet given back
        self._pending = bytearray(rows)       # 1: the row's WRITE has not completed
        self.pending = np.frombuffer(self._pending, np.bool_)   # the same, for numpy
        self.n_pending = 0
        self._unsubmitted = 0      # WRITEs queued since the last enter
        self._start = 0            # pool row of the window being yielded
        self._windows_made: dict = {}            # (row, count) -> FrameBatch window
        self.write_failures = 0    # WRITEs the kernel refused (completed with an error)
        self.read_errors = 0       # multishot READs ended by an error other than ENOBUFS
        self.rearms = 0            # multishot READs submitted (1 + one per end)

    @staticmethod
    def _sqe(opcode: int, fd: int, user_data: int, flags: int = 0, off: int = 0,
             op_flags: int = 0, length: int = 0) -> np.ndarray:
        sqe = np.zeros(1, uring.SQE)
        sqe["opcode"], sqe["fd"], sqe["user_data"], sqe["flags"] = opcode, fd, user_data, flags
        sqe["off"], sqe["op_flags"], sqe["len"], sqe["buf_group"] = off, op_flags, length, BGID
        return sqe

    # -- the worker's face -------------------------------------------------------------
    def frames(self, wait_s: float):
        """Submit queued writes, wait up to wait_s for completions, yield the rows read."""
        self._arm()
        ring = self.ring
        # the writes complete inline, in this call: waiting for them alone would return at
        # once with no frames and cost another enter, so wait for one completion more
        ring.enter(1 + self._unsubmitted, wait_s)
        self._unsubmitted = 0
        n = ring.ready()
        if not n:
            return
        if n <= FEW:
            reads = self._completions_few(ring.reap_few(n))
            self._release()
            if reads is not None:
                yield from self._reads_few(*reads)
        else:
            reads = self._completions(ring.reap())
            self._release()
            if reads is not None:
                yield from self._reads(*reads)

    def write_rows(self, batch: FrameBatch, rows: np.ndarray, out_len: np.ndarray) -> None:
        """Queue one WRITE per row of the window just yielded (submitted by the next wait)."""
        k = len(rows)
        if not k:
            return
        if k <= FEW:
            start, hdr, pending, push, sqes = (self._start, self.hdr, self._pending,
                                               self.ring.push_one, self.write_sqes)
            for row, n in zip(rows.tolist(), out_len.tolist()):
                row += start
                push(sqes[row], n + hdr)
                pending[row] = 1
        else:
            pool_rows = np.asarray(rows, np.intp) + self._start
            sqes = self.write_tmpl[pool_rows]
            sqes["len"] = np.asarray(out_len) + self.hdr
            self.pending[pool_rows] = True
            self.ring.push(sqes)
        self.n_pending += k
        self._unsubmitted += k

    def write(self, frame: bytes) -> None:
        """A frame the engine originated (rare: ICMP): written at once, not through the ring."""
        self.write_failures += not self.tun.write(frame)

    # -- inside ------------------------------------------------------------------------
    def _arm(self) -> None:
        if not self.read_armed and self.held <= self.mask:    # a buffer is free to read into
            self.ring.push_one(self.read_sqe)
            self.read_armed = True
            self.rearms += 1
        if not self.wake_armed:
            self.ring.push_one(self.wake_sqe)
            self.wake_armed = True

    def _completions_few(self, cqes: list) -> tuple | None:
        """Account a few completions in plain Python; the reads' (res, flags) or None."""
        res_r, flags_r = [], []
        pending = self._pending
        for user_data, res, flags in cqes:
            if user_data >= WRITE_TAG:
                pending[user_data - WRITE_TAG] = 0
                self.n_pending -= 1
                if res < 0:
                    self.write_failures += 1
            elif user_data == READ_TAG:
                res_r.append(res)
                flags_r.append(flags)
            elif user_data == WAKE_TAG:
                self._woken(flags)
        return (res_r, flags_r) if res_r else None

    def _completions(self, cq: np.ndarray) -> tuple | None:
        """The same over many completions with numpy."""
        user_data, res, flags = cq["user_data"], cq["res"], cq["flags"]
        writes = user_data >= WRITE_TAG
        if writes.any():
            rows = (user_data[writes] - WRITE_TAG).astype(np.intp)
            self.pending[rows] = False
            self.n_pending -= len(rows)
            self.write_failures += int((res[writes] < 0).sum())
        wakes = user_data == WAKE_TAG
        if wakes.any():
            self._woken(int(flags[wakes][-1]))
        reads = user_data == READ_TAG
        return (res[reads], flags[reads]) if reads.any() else None

    def _woken(self, flags: int) -> None:
        drain(self.wake_fd)
        if not flags & uring.CQE_F_MORE:
            self.wake_armed = False

    def _release(self) -> None:
        """Give back the oldest held rows whose writes are done (all yielded rows were
        processed before this call: the worker drained the previous frames())."""
        n = self.held
        if not n:
            return
        if self.n_pending:
            oldest = (self.next_bid - n) & self.mask
            busy = np.flatnonzero(self.pending[(oldest + np.arange(n)) & self.mask])
            if len(busy):
                n = int(busy[0])
        if n:
            self.bufs.release(n)
            self.held -= n

    def _read_ended(self, res: int) -> None:
        """The multishot READ posted its last CQE: _arm() submits a new one."""
        self.read_armed = False
        if res < 0 and res != -errno.ENOBUFS:       # ENOBUFS: every row held; re-armed later
            self.read_errors += 1
            if self.read_errors == 1:
                log.warning("io_uring READ on the TUN ended: %s",
                            errno.errorcode.get(-res, res))

    def _reads_few(self, res_l: list, flags_l: list):
        if not flags_l[-1] & uring.CQE_F_MORE:
            self._read_ended(res_l[-1])
        start = bid = self.next_bid
        length, hdr, k = self.pool.length, self.hdr, 0
        limit = self.pool.snaplen - hdr
        for res, flags in zip(res_l, flags_l):
            if flags & uring.CQE_F_BUFFER:
                if flags >> uring.CQE_BUFFER_SHIFT != bid:
                    raise RuntimeError(f"io_uring buffer order lost at row {bid}")
                n = res - hdr
                length[bid] = n if n <= limit else self.pool.snaplen   # see _set_lengths
                bid = (bid + 1) & self.mask
                k += 1
        if k:
            yield from self._windows(start, k)

    def _reads(self, res: np.ndarray, flags: np.ndarray):
        if not (flags[-1] & uring.CQE_F_MORE):
            self._read_ended(int(res[-1]))
        got = (flags & uring.CQE_F_BUFFER) != 0
        if not got.all():
            res, flags = res[got], flags[got]
        k = len(res)
        if not k:
            return
        start = self.next_bid
        bids = flags >> uring.CQE_BUFFER_SHIFT
        if bids[0] != start or bids[-1] != (start + k - 1) & self.mask:
            raise RuntimeError(f"io_uring buffer order lost: expected {start}, got {bids[:4]}")
        self._set_lengths(start, k, res)
        yield from self._windows(start, k)

    def _windows(self, start: int, k: int):
        """Rows start.. (k of them, wrapping) are read: hold them and yield them as windows."""
        self.next_bid = (start + k) & self.mask
        self.held += k
        pos, windows = start, self._windows_made
        while k:
            n = min(k, self.batch_size, self.mask + 1 - pos)
            self._start = pos
            window = windows.get((pos, n))       # views: made once, reused (~1 us each)
            if window is None:
                if len(windows) >= MAX_WINDOWS:
                    windows.clear()
                window = windows[pos, n] = self.pool.window(pos, pos + n, n)
            window.count = n
            yield window
            pos, k = (pos + n) & self.mask, k - n

    def _set_lengths(self, start: int, k: int, res: np.ndarray) -> None:
        lengths = res - self.hdr if self.hdr else res
        if self.hdr:   # a frame reaching into the next row's header bytes: counted OVERSIZE
            lengths[lengths > self.pool.snaplen - self.hdr] = self.pool.snaplen
        first = min(k, self.mask + 1 - start)
        self.pool.length[start:start + first] = lengths[:first]
        if first < k:
            self.pool.length[:k - first] = lengths[first:]

    def close(self) -> None:
        """Cancel the READ and wait (bounded) for it to end, then tear the ring down."""
        if self.ring.fd < 0:
            return
        if self.read_armed:
            cancel = self._sqe(uring.OP_ASYNC_CANCEL, -1, CANCEL_TAG)
            cancel["addr"] = READ_TAG
            self.ring.push(cancel)
            for _ in range(10):
                self.ring.enter(1, 0.1)
                cq = self.ring.reap()
                ended = (cq["user_data"] == READ_TAG) & ((cq["flags"] & uring.CQE_F_MORE) == 0)
                if ended.any():
                    break
        self.bufs.close()
        self.ring.close()
