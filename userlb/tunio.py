"""EDGE: how a data-path worker moves frames through its TUN queue, chosen at start.

Two implementations with one face: `frames(wait_s)` (wait for the TUN or the wake
eventfd, drain the eventfd if it woke us, then yield FrameBatches of frames read),
`write_rows(batch, rows, lengths)`, `write(frame)`, `close()`, and the attributes
`write_failures` and `name`:

- ReadTunIO ("read"): poll(2), then one readv(2) per frame until EAGAIN or a full
  batch (Tun.read_batch), at most MAX_BATCHES_PER_WAKE batches per wake-up, and one
  write(2) per frame. Works everywhere.
- UringTunIO ("uring", "sqpoll"; tunring.py): a multishot io_uring READ into a ring
  of batch rows, all writes plus the wait in one io_uring_enter(2).

open_io() picks one from `[router] io`: "auto" takes io_uring where the kernel has
what it needs and falls back to "read" otherwise (io_uring_setup refused, e.g.
/proc/sys/kernel/io_uring_disabled or a seccomp filter, or a kernel before 6.7);
"uring" and "sqpoll" ask for that mode and fall back the same way with a warning
(sqpoll first to uring). No decisions about frames here.
"""

from __future__ import annotations

import logging
import os
import select

from userlb.config import IO_MODES
from userlb.frames import FrameBatch

log = logging.getLogger("userlb.tunio")

# Full batches read per wake-up at most: under overload the TUN never runs dry, and the
# worker must still get back to its control calls and expiry between wake-ups. The next
# poll(2) returns at once while frames are queued, so this costs one system call per
# MAX_BATCHES_PER_WAKE batches.
MAX_BATCHES_PER_WAKE = 4


class ReadTunIO:
    """poll(2) + read-until-EAGAIN through Tun.read_batch / Tun.write_rows."""

    name = "read"

    def __init__(self, tun, batch_size: int, wake_fd: int, snaplen: int | None = None) -> None:
        self.tun = tun
        if snaplen is None:
            snaplen = getattr(tun, "snaplen", 2048)
        self.batch = FrameBatch(batch_size, snaplen, vnet=bool(getattr(tun, "offload", False)))
        self.poller = select.poll()
        self.poller.register(tun.fd, select.POLLIN)
        self.poller.register(wake_fd, select.POLLIN)
        self.wake_fd = wake_fd
        self.write_failures = 0

    def frames(self, wait_s: float):
        for fd, _ in self.poller.poll(int(wait_s * 1000) + 1):
            if fd == self.wake_fd:
                drain(fd)
        batch = self.batch
        for _ in range(MAX_BATCHES_PER_WAKE):
            if not self.tun.read_batch(batch):
                break
            yield batch
            if batch.count < batch.capacity:
                break

    def write_rows(self, batch: FrameBatch, rows, out_len) -> None:
        self.write_failures += self.tun.write_rows(batch, rows, out_len)

    def write(self, frame: bytes) -> None:
        self.write_failures += not self.tun.write(frame)

    def close(self) -> None:
        pass


def drain(eventfd: int) -> None:
    """Reset a wake-up eventfd (only when it fired: a read per wake-up is a system call)."""
    try:
        os.eventfd_read(eventfd)
    except BlockingIOError:
        pass


def open_io(tun, mode: str, batch_size: int, wake_fd: int, snaplen: int | None = None):
    """The TUN I/O for `mode` (IO_MODES), falling back as the module docstring says.
    Call it on the thread that will use it: an io_uring ring belongs to its submitter."""
    if mode not in IO_MODES:
        raise ValueError(f"io mode {mode!r} is not one of {', '.join(IO_MODES)}")
    tries = {"auto": ("uring",), "uring": ("uring",), "sqpoll": ("sqpoll", "uring"),
             "read": ()}[mode]
    for choice in tries:
        try:
            from userlb.tunring import UringTunIO
            return UringTunIO(tun, batch_size, wake_fd, snaplen, sqpoll=choice == "sqpoll")
        except (OSError, ValueError) as exc:
            level = logging.INFO if mode == "auto" else logging.WARNING
            log.log(level, "TUN I/O: %s unavailable (%s); trying the next", choice, exc)
    return ReadTunIO(tun, batch_size, wake_fd, snaplen)
