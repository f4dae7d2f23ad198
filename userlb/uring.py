"""EDGE: a minimal io_uring binding (ctypes): setup, mmap'd rings, enter, register.

What it does: io_uring_setup(2) with the rings mmap'd and viewed as numpy arrays
(SQEs and CQEs as structured records, so a batch of submissions or completions is
a few array operations, not a Python loop), io_uring_enter(2) with an optional
timeout (IORING_ENTER_EXT_ARG), the opcode probe, and a provided-buffer ring
(IORING_REGISTER_PBUF_RING) whose buffers can be any memory, such as a
FrameBatch's rows. What it does not do: decide what to read or write (tunring.py
does), or hide the kernel's names: constants are the uapi's (include/uapi/linux/
io_uring.h), without the IORING_ prefix where it only repeats.

Why not PyPI's liburing: its own docstrings mark the multishot read "coded but not
tested" and the batch-completion call as likely to segfault (spec/perf.md, "The TUN
ceiling"); the raw system calls are three and the rings are plain shared memory.

Memory ordering: without SQPOLL every kernel access to the rings happens inside our
own io_uring_enter() (DEFER_TASKRUN runs completions there too), and a system call
is a full barrier. With SQPOLL a kernel thread reads the SQ tail and the buffer ring
concurrently: stores that publish a tail must not pass the stores before them, which
x86-64's total store order guarantees; Ring refuses SQPOLL on other machines.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import struct

import numpy as np

SYS_SETUP, SYS_ENTER, SYS_REGISTER = 425, 426, 427    # the same on every architecture

# setup flags
SETUP_SQPOLL = 1 << 1
SETUP_SUBMIT_ALL = 1 << 7
SETUP_COOP_TASKRUN = 1 << 8
SETUP_SINGLE_ISSUER = 1 << 12
SETUP_DEFER_TASKRUN = 1 << 13
# features
FEAT_SINGLE_MMAP = 1 << 0
FEAT_EXT_ARG = 1 << 8
# enter flags
ENTER_GETEVENTS, ENTER_SQ_WAKEUP, ENTER_EXT_ARG = 1, 2, 8
# SQ ring flags
SQ_NEED_WAKEUP = 1
# opcodes
OP_NOP, OP_POLL_ADD, OP_ASYNC_CANCEL, OP_READ, OP_WRITE = 0, 6, 14, 22, 23
OP_READ_MULTISHOT = 49
# SQE flags, poll flags
IOSQE_BUFFER_SELECT = 1 << 5
POLL_ADD_MULTI = 1
POLLIN = 0x1
# CQE flags
CQE_F_BUFFER, CQE_F_MORE = 1, 2
CQE_BUFFER_SHIFT = 16
# register opcodes
REGISTER_PROBE, REGISTER_PBUF_RING, UNREGISTER_PBUF_RING = 8, 22, 23
OFF_SQ_RING, OFF_CQ_RING, OFF_SQES = 0, 0x8000000, 0x10000000

SQE = np.dtype([("opcode", "u1"), ("flags", "u1"), ("ioprio", "u2"), ("fd", "i4"),
                ("off", "u8"), ("addr", "u8"), ("len", "u4"), ("op_flags", "u4"),
                ("user_data", "u8"), ("buf_group", "u2"), ("personality", "u2"),
                ("splice_fd_in", "i4"), ("addr3", "u8"), ("pad", "u8")])
CQE = np.dtype([("user_data", "u8"), ("res", "i4"), ("flags", "u4")])
assert SQE.itemsize == 64 and CQE.itemsize == 16

_PARAMS = struct.Struct("=10I" "8IQ" "8IQ")    # io_uring_params: 10 u32, sq_off, cq_off
_SQ_OFF = ("head", "tail", "ring_mask", "ring_entries", "flags", "dropped", "array")
_CQ_OFF = ("head", "tail", "ring_mask", "ring_entries", "overflow", "cqes", "flags")
_GETEVENTS_ARG = struct.Struct("=QIIQ")          # sigmask, sigmask_sz, min_wait_usec, ts
_CQE = struct.Struct("=QiI")
_U32 = struct.Struct("=I")

_libc = ctypes.CDLL(None, use_errno=True)         # CDLL: the GIL is released in syscall()
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 7


class UringUnavailable(OSError):
    """io_uring cannot be used here (kernel, sysctl, seccomp, or a missing feature)."""


def _call(nr: int, *args: int) -> int:
    ret = _syscall(nr, *args, *([0] * (6 - len(args))))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _addr(buf) -> int:
    """Address of a writable buffer (numpy array, mmap, bytearray)."""
    if isinstance(buf, np.ndarray):
        return buf.ctypes.data
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


class Ring:
    """One io_uring instance. `sqes`/`cqes` are numpy views of the shared rings."""

    def __init__(self, entries: int, sqpoll: bool = False, sq_idle_ms: int = 1000) -> None:
        if sqpoll and platform.machine() not in ("x86_64", "AMD64"):
            raise UringUnavailable(0, "SQPOLL needs x86-64's store ordering (see uring.py)")
        flags = (SETUP_SQPOLL if sqpoll else
                 SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN) | SETUP_SUBMIT_ALL
        params = bytearray(_PARAMS.size)
        struct.pack_into("=5I", params, 8, flags, 0, sq_idle_ms if sqpoll else 0, 0, 0)
        try:
            self.fd = _call(SYS_SETUP, entries, _addr(params))
        except OSError as exc:
            raise UringUnavailable(exc.errno, f"io_uring_setup: {exc.strerror}") from None
        self.sqpoll = sqpoll
        self.flags = flags
        try:
            self._map(_PARAMS.unpack(params))
        except BaseException:
            os.close(self.fd)
            raise

    def _map(self, p: tuple) -> None:
        sq_entries, cq_entries, features = p[0], p[1], p[5]
        sq_off = dict(zip(_SQ_OFF, p[10:17]))
        cq_off = dict(zip(_CQ_OFF, p[19:26]))
        if not (features & FEAT_SINGLE_MMAP and features & FEAT_EXT_ARG):
            raise UringUnavailable(0, "io_uring without SINGLE_MMAP/EXT_ARG (kernel < 5.11)")
        size = max(sq_off["array"] + 4 * sq_entries, cq_off["cqes"] + CQE.itemsize * cq_entries)
        self._rings = mmap.mmap(self.fd, size, offset=OFF_SQ_RING)
        self._sqe_map = mmap.mmap(self.fd, SQE.itemsize * sq_entries, offset=OFF_SQES)
        u32 = np.frombuffer(self._rings, np.uint32)
        u32[sq_off["array"] // 4: sq_off["array"] // 4 + sq_entries] = np.arange(sq_entries)
        del u32
        self._u32 = memoryview(self._rings).cast("I")     # plain ints: cheaper than numpy
        self._sq_head, self._sq_tail = sq_off["head"] // 4, sq_off["tail"] // 4
        self._sq_flags = sq_off["flags"] // 4
        self._cq_head, self._cq_tail = cq_off["head"] // 4, cq_off["tail"] // 4
        self._cqes_off = cq_off["cqes"]
        self.sq_mask, self.cq_mask = sq_entries - 1, cq_entries - 1
        self.sqes = np.frombuffer(self._sqe_map, SQE)
        self.cqes = np.frombuffer(self._rings, CQE, cq_entries, cq_off["cqes"])
        self._tail = self._u32[self._sq_tail]       # ours: SQEs written, not yet published
        self._arg = bytearray(_GETEVENTS_ARG.size + 16)   # getevents_arg, then the timespec
        self._arg_addr = _addr(self._arg)
        self._arg_ns = -1                               # the timeout packed in _arg

    # -- submission ------------------------------------------------------------------
    def sq_space(self) -> int:
        return self.sq_mask + 1 - ((self._tail - self._u32[self._sq_head]) & 0xFFFFFFFF)

    def push(self, records: np.ndarray) -> None:
        """Copy SQE records (dtype SQE) into the ring; publish() or enter() submits them."""
        n = len(records)
        if n > self.sq_space():
            raise BufferError("submission queue full")
        start = self._tail & self.sq_mask
        first = min(n, self.sq_mask + 1 - start)
        self.sqes[start:start + first] = records[:first]
        if first < n:
            self.sqes[:n - first] = records[first:]
        self._tail = (self._tail + n) & 0xFFFFFFFF

    def push_one(self, sqe: bytes, length: int | None = None) -> None:
        """One SQE from its 64 bytes, with `len` replaced when given (no numpy: for the
        few-frames case, where numpy's fixed cost per call dominates)."""
        if not self.sq_space():
            raise BufferError("submission queue full")
        at = (self._tail & self.sq_mask) * 64
        self._sqe_map[at:at + 64] = sqe
        if length is not None:
            _U32.pack_into(self._sqe_map, at + 24, length)
        self._tail = (self._tail + 1) & 0xFFFFFFFF

    def publish(self) -> int:
        """Make pushed SQEs visible to the kernel; returns how many are pending."""
        pending = (self._tail - self._u32[self._sq_tail]) & 0xFFFFFFFF
        self._u32[self._sq_tail] = self._tail
        return pending

    def enter(self, wait_nr: int = 0, timeout_s: float | None = None) -> None:
        """Submit what was pushed and wait for `wait_nr` completions (or the timeout).
        With SQPOLL the kernel thread submits; this only wakes it when it sleeps."""
        to_submit = self.publish()
        flags = 0
        if self.sqpoll:
            if to_submit and self._u32[self._sq_flags] & SQ_NEED_WAKEUP:
                flags |= ENTER_SQ_WAKEUP
            to_submit = 0
            if not (flags or wait_nr):
                return
        if wait_nr:
            flags |= ENTER_GETEVENTS
        arg = argsz = 0
        if wait_nr and timeout_s is not None:
            ns = max(0, int(timeout_s * 1e9))
            if ns != self._arg_ns:
                struct.pack_into("=QIIQqq", self._arg, 0, 0, 8, 0,
                                 self._arg_addr + _GETEVENTS_ARG.size, ns // 10**9, ns % 10**9)
                self._arg_ns = ns
            flags |= ENTER_EXT_ARG
            arg, argsz = self._arg_addr, _GETEVENTS_ARG.size
        if _syscall(SYS_ENTER, self.fd, to_submit, wait_nr, flags, arg, argsz) < 0:
            err = ctypes.get_errno()
            if err not in (62, 4, 16):            # ETIME, EINTR; EBUSY: CQ overflow, reap first
                raise OSError(err, os.strerror(err))

    # -- completion ------------------------------------------------------------------
    def ready(self) -> int:
        """Completions waiting in the CQ."""
        return (self._u32[self._cq_tail] - self._u32[self._cq_head]) & 0xFFFFFFFF

    def reap_few(self, n: int) -> list[tuple[int, int, int]]:
        """The next n completions as (user_data, res, flags) tuples; frees their slots."""
        head, mask, base = self._u32[self._cq_head], self.cq_mask, self._cqes_off
        out = [_CQE.unpack_from(self._rings, base + ((head + i) & mask) * 16) for i in range(n)]
        self._u32[self._cq_head] = (head + n) & 0xFFFFFFFF
        return out

    def reap(self) -> np.ndarray:
        """Every completion now in the CQ, as a copy (dtype CQE); frees their slots."""
        head = self._u32[self._cq_head]
        n = self.ready()
        if not n:
            return self.cqes[:0].copy()
        start = head & self.cq_mask
        if start + n <= self.cq_mask + 1:
            out = self.cqes[start:start + n].copy()
        else:
            out = np.concatenate((self.cqes[start:], self.cqes[:start + n - self.cq_mask - 1]))
        self._u32[self._cq_head] = (head + n) & 0xFFFFFFFF
        return out

    # -- registration ----------------------------------------------------------------
    def supports(self, opcode: int) -> bool:
        """IORING_REGISTER_PROBE: is `opcode` implemented by this kernel?"""
        probe = bytearray(16 + 8 * 256)
        _call(SYS_REGISTER, self.fd, REGISTER_PROBE, _addr(probe), 256)
        flags = struct.unpack_from("=H", probe, 16 + 8 * opcode + 2)[0]   # ops[opcode].flags
        return opcode <= probe[0] and bool(flags & 1)                    # IO_URING_OP_SUPPORTED

    def close(self) -> None:
        if self.fd >= 0:
            self.sqes = self.cqes = None                  # drop the views before unmapping
            self._u32.release()
            for m in (self._sqe_map, self._rings):
                try:
                    m.close()
                except BufferError:
                    pass                                   # a caller still holds a view
            os.close(self.fd)
            self.fd = -1


class BufRing:
    """A provided-buffer ring (group `bgid`) over buffers at `addrs`, each `length` bytes.

    The kernel takes buffers in ring order and names the one it filled in each CQE
    (bid). The entries are written once, buffer i in slot i; release(n) gives back the
    n oldest taken buffers by moving the tail, so the ring stays in that order and
    consecutive reads land in consecutive buffers. Callers release in the order the
    kernel took (tunring.py keeps a FIFO for that)."""

    ENTRY = np.dtype([("addr", "u8"), ("len", "u4"), ("bid", "u2"), ("resv", "u2")])

    def __init__(self, ring: Ring, bgid: int, addrs: np.ndarray, length: int) -> None:
        entries = len(addrs)
        if entries & (entries - 1) or not 0 < entries <= 32768:
            raise ValueError("a buffer ring holds a power of two of buffers, at most 32768")
        self.ring, self.bgid, self.entries = ring, bgid, entries
        self._map = mmap.mmap(-1, self.ENTRY.itemsize * entries)       # page-aligned
        table = np.frombuffer(self._map, self.ENTRY)
        table["addr"], table["len"], table["bid"] = addrs, length, np.arange(entries)
        del table
        self._tail = np.frombuffer(self._map, np.uint16, 1, 14)  # overlays bufs[0].resv
        reg = bytearray(struct.pack("=QIHH3Q", _addr(self._map), entries, bgid, 0, 0, 0, 0))
        try:
            _call(SYS_REGISTER, ring.fd, REGISTER_PBUF_RING, _addr(reg), 1)
        except OSError as exc:
            self._tail = None
            self._map.close()
            raise UringUnavailable(exc.errno, f"PBUF_RING: {exc.strerror}") from None
        self.tail = 0
        self.release(entries)

    def release(self, n: int) -> None:
        """Give the n oldest taken buffers back (all `entries` of them at the start)."""
        self.tail = (self.tail + n) & 0xFFFF
        self._tail[0] = self.tail                     # publish after the entries (x86 TSO)

    def close(self) -> None:
        if self._tail is None:
            return
        reg = bytearray(struct.pack("=QIHH3Q", 0, 0, self.bgid, 0, 0, 0, 0))
        try:
            _call(SYS_REGISTER, self.ring.fd, UNREGISTER_PBUF_RING, _addr(reg), 1)
        except OSError:
            pass
        self._tail = None
        try:
            self._map.close()
        except BufferError:
            pass
