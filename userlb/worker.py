"""EDGE: the dedicated data-path thread: drain the TUN in batches, run the engine.

One thread owns the Engine. It blocks in poll(2) on the TUN and a wake-up
eventfd (timeout = the engine's next deadline), then reads frames until EAGAIN
or the batch is full, calls engine.process(batch, now) once, writes the
verdict's rows back and runs engine.expire() when a deadline has passed.
The control plane never touches the engine directly: call(fn) queues fn to run
on this thread between batches and returns a concurrent Future, so control
changes land between batches without locks (no per-packet asyncio callbacks,
spec/perf.md). An exception from the engine is logged and counted and the
batch's frames are dropped; the thread keeps running.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import threading
import time
from concurrent.futures import Future


from userlb.frames import FrameBatch

log = logging.getLogger("userlb.worker")

MAX_IDLE_WAIT_S = 1.0


class DataPath(threading.Thread):
    def __init__(self, engine, tun, batch_size: int = 256, snaplen: int | None = None,
                 clock=time.monotonic) -> None:
        super().__init__(name="userlb-datapath", daemon=True)
        self.engine = engine
        self.tun = tun
        offload = bool(getattr(tun, "offload", False))
        if snaplen is None:
            snaplen = getattr(tun, "snaplen", 2048)
        self.batch = FrameBatch(batch_size, snaplen, vnet=offload)   # vnet: TUN offload headers
        self.clock = clock
        self._calls: collections.deque = collections.deque()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK)
        self._stopping = False
        self.errors = 0            # engine exceptions (each dropped one batch)
        self.write_failures = 0    # frames the kernel refused on write
        self.batches = 0
        self.frames = 0

    # -- control-plane side -----------------------------------------------------------
    def call(self, fn) -> Future:
        """Run fn(engine, now) on the data-path thread; the Future gets its result."""
        fut: Future = Future()
        self._calls.append((fn, fut))
        os.eventfd_write(self._wake, 1)
        return fut

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        os.eventfd_write(self._wake, 1)
        if self.is_alive():
            self.join(timeout_s)

    # -- data-path side ---------------------------------------------------------------
    def run(self) -> None:
        poller = select.poll()
        poller.register(self.tun.fd, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        while not self._stopping:
            now = self.clock()
            wait_s = min(max(self.engine.next_deadline() - now, 0.0), MAX_IDLE_WAIT_S)
            poller.poll(int(wait_s * 1000) + 1)
            self._run_calls()
            self._pump()
            now = self.clock()
            if self.engine.next_deadline() <= now:
                self._guard(self.engine.expire, now)
        os.close(self._wake)

    def _run_calls(self) -> None:
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            pass
        while self._calls:
            fn, fut = self._calls.popleft()
            try:
                fut.set_result(fn(self.engine, self.clock()))
            except Exception as exc:  # reported to the caller, never kills the data path
                fut.set_exception(exc)

    def _pump(self) -> None:
        """Drain the TUN batch by batch until it is empty."""
        batch = self.batch
        while self.tun.read_batch(batch):
            self.batches += 1
            self.frames += batch.count
            verdict = self._guard(self.engine.process, batch, self.clock())
            if verdict is not None:
                self.write_failures += self.tun.write_rows(batch, verdict.rows, verdict.lengths)
                for frame in verdict.extra:
                    self.write_failures += not self.tun.write(frame)
            if batch.count < batch.capacity:
                break

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception:
            self.errors += 1
            log.exception("engine error (batch dropped, data path continues)")
            return None

    def counters(self) -> dict:
        return {"batches": self.batches, "frames": self.frames, "engine_errors": self.errors,
                "write_failures": self.write_failures}
