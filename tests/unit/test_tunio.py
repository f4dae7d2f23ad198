"""tunio.open_io's choice and fallback, and the FrameBatch layouts tunring.py reads into.

No TUN here: a pipe stands in for the TUN fd, and io_uring is made to refuse by
replacing UringTunIO, as io_uring_disabled, a seccomp filter or an old kernel would.
tests/integration/test_tunio.py runs every mode on a real TUN.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest

from userlb import tunio, tunring
from userlb.frames import VNET_HDR_LEN, FrameBatch
from userlb.uring import UringUnavailable


class PipeTun:
    snaplen = 2048
    offload = False

    def __init__(self) -> None:
        self.fd, self.w = os.pipe()

    def read_batch(self, batch) -> int:
        return 0

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.w)


@pytest.fixture
def refused(monkeypatch):
    asked = []

    def refuse(tun, batch_size, wake_fd, snaplen=None, sqpoll=False):
        asked.append("sqpoll" if sqpoll else "uring")
        raise UringUnavailable(1, "io_uring_setup: Operation not permitted")
    monkeypatch.setattr(tunring, "UringTunIO", refuse)
    return asked


@pytest.mark.parametrize("mode, tried, level", [
    ("auto", ["uring"], logging.INFO),
    ("uring", ["uring"], logging.WARNING),
    ("sqpoll", ["sqpoll", "uring"], logging.WARNING),
    ("read", [], None),
])
def test_falls_back_to_read_when_io_uring_is_refused(refused, caplog, mode, tried, level):
    tun = PipeTun()
    caplog.set_level(logging.INFO, "userlb.tunio")
    try:
        io = tunio.open_io(tun, mode, 8, tun.w)
        assert isinstance(io, tunio.ReadTunIO) and io.name == "read"
        assert refused == tried
        assert [r.levelno for r in caplog.records] == [level] * len(tried)
        assert list(io.frames(0)) == []
    finally:
        tun.close()


class FloodedTun(PipeTun):
    """A TUN under overload: every read fills the batch, and poll says readable."""

    def __init__(self) -> None:
        super().__init__()
        os.write(self.w, b"x")
        self.reads = 0

    def read_batch(self, batch) -> int:
        self.reads += 1
        batch.count = batch.capacity
        return batch.count


def test_read_io_returns_to_the_worker_after_a_few_full_batches():
    tun = FloodedTun()
    wake_r, wake_w = os.pipe()
    try:
        io = tunio.ReadTunIO(tun, 8, wake_r)
        for _ in range(3):           # each wake-up ends, so control calls and expiry run
            assert [b.count for b in io.frames(0)] == [8] * tunio.MAX_BATCHES_PER_WAKE
        assert tun.reads == 3 * tunio.MAX_BATCHES_PER_WAKE
    finally:
        tun.close()
        os.close(wake_r)
        os.close(wake_w)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="not one of auto, read, uring, sqpoll"):
        tunio.open_io(PipeTun(), "fast", 8, 0)


@pytest.mark.parametrize("batch, rows", [(1, 2), (4, 8), (100, 256), (256, 512), (257, 1024)])
def test_pool_is_a_power_of_two_holding_two_batches(batch, rows):
    assert tunring.pool_rows_for(batch) == rows


def test_inline_vnet_header_sits_just_before_its_row():
    b = FrameBatch(4, 64, vnet=True, inline_vnet=True)
    assert b.buf.flags.c_contiguous and b.buf.shape == (4, 64) and b.vnet.shape == (4, 10)
    for i in range(4):
        assert b.vnet[i].ctypes.data == b.buf[i].ctypes.data - VNET_HDR_LEN
    b.vnet[2] = 7               # the row above gives its last bytes to the header
    assert (b.buf[1, -VNET_HDR_LEN:] == 7).all() and (b.buf[1, :-VNET_HDR_LEN] == 0).all()
    assert (b.buf[2] == 0).all()


def test_window_is_a_view_of_rows():
    b = FrameBatch.from_frames([b"a" * 20, b"b" * 30, b"c" * 40])
    w = b.window(1, 3, 2)
    assert (w.count, w.frames()) == (2, [b"b" * 30, b"c" * 40])
    w.buf[0, 0] = ord("x")
    assert b.frame(1)[:1] == b"x"
    assert b.tail(1).frames() == w.frames()


class IdleEngine:
    def next_deadline(self) -> float:
        return float("inf")

    def expire(self, now: float) -> None:
        pass


@pytest.mark.parametrize("mode", ["read", "auto"])
def test_worker_runs_control_calls_and_stops_without_spinning(mode):
    """A control call wakes the worker, runs between batches and reports its result; an
    idle worker sleeps in its wait (few loop turns) instead of spinning on the eventfd."""
    from userlb.worker import Workers
    tun = PipeTun()
    workers = Workers(IdleEngine(), [tun], batch_size=8, io=mode)
    workers.start()
    try:
        path = workers.paths[0]
        assert path.ready.wait(5)
        turns = []
        for i in range(5):
            assert workers.call(lambda engine, now, i=i: i * 2).result(timeout=5) == i * 2
            turns.append(path.loop_turns)
        time.sleep(0.3)
        assert path.loop_turns - turns[-1] <= 2        # asleep, not spinning
    finally:
        workers.stop()
        tun.close()
    assert not path.is_alive()


class BusyEngine:
    """Counts the table passes a worker asks for; one timer due `due_in` after start."""

    def __init__(self, due_in: float) -> None:
        self.due = time.monotonic() + due_in
        self.deadline_reads = self.batches = 0
        self.expired = []

    def next_deadline(self) -> float:
        self.deadline_reads += 1
        return self.due

    def expire(self, now: float) -> None:
        self.expired.append(now)
        self.due = float("inf")

    def process(self, batch, now):
        self.batches += 1
        return None                 # nothing to write


def test_flooded_worker_reads_the_deadline_rarely_and_still_expires_on_time():
    """Under load every wake-up has frames; the earliest timer (a pass over the table)
    is re-read at most every DEADLINE_RECHECK_S, yet the due timer fires, not early."""
    from userlb import worker as worker_mod
    tun = FloodedTun()
    engine = BusyEngine(due_in=0.3)
    due = engine.due
    path = worker_mod.DataPath(engine, tun, batch_size=8, io="read")
    path.start()
    try:
        limit = time.monotonic() + 10
        while not engine.expired and time.monotonic() < limit:
            time.sleep(0.01)
        reads, batches, began = engine.deadline_reads, engine.batches, time.monotonic()
        while engine.batches - batches < 2000 and time.monotonic() < limit:
            time.sleep(0.01)
        reads, batches = engine.deadline_reads - reads, engine.batches - batches
        span_s = time.monotonic() - began
    finally:
        path.stop()
        tun.close()
    assert len(engine.expired) == 1 and engine.expired[0] >= due
    assert batches >= 2000
    assert reads <= span_s / worker_mod.DEADLINE_RECHECK_S + 2
