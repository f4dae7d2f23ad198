"""EDGE: the data-path threads: drain a TUN queue in batches, run the engine.

A DataPath thread owns one TUN queue. It waits on the queue and a wake-up eventfd
(timeout = the engine's next deadline) through its TUN I/O (tunio.py: io_uring where
the kernel allows, else poll(2) + read-until-EAGAIN), calls engine.process(batch, now)
once per batch read, hands the verdict's rows back to the I/O to write, and runs
engine.expire() when a deadline has passed (the deadline is re-read at most every
DEADLINE_RECHECK_S, after control calls and after each expiry). The control plane
never touches the engine directly: call(fn) queues fn to run on the first worker between batches and
returns a concurrent Future, so control changes land between batches (no per-packet
asyncio callbacks, spec/perf.md). An exception from the engine is logged and counted
and the batch's frames are dropped; the thread keeps running.

With a multi-queue TUN (`[router] queues` > 1), Workers runs one DataPath per queue
over one Engine: every engine call (process, expire, control calls) holds one lock, so
the workers agree on every scheduling decision and connection (a NAT connection's two
directions hash to different queues, spec/perf.md A2), while their reads, writes and
the kernel's forwarding work run in parallel outside it (system calls release the
GIL). The first worker alone runs control calls and expiry.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from concurrent.futures import Future

from userlb.tunio import open_io

log = logging.getLogger("userlb.worker")

MAX_IDLE_WAIT_S = 1.0
DEADLINE_RECHECK_S = 0.25
"""How stale the primary worker's copy of engine.next_deadline() may get. Finding the
earliest timer is a pass over the whole table (ConnTable.next_deadline), too much for
every wake-up under load (at 40 k packets/s with ~13 frames per wake it cost 1 µs per
packet); between passes a connection whose timer moved earlier (a FIN: 15 min -> 2 min)
is expired up to this much late. A control call forces a fresh pass."""


class DataPath(threading.Thread):
    def __init__(self, engine, tun, batch_size: int = 256, snaplen: int | None = None,
                 clock=time.monotonic, io: str = "auto", lock=None, primary: bool = True,
                 name: str = "userlb-datapath") -> None:
        super().__init__(name=name, daemon=True)
        self.engine = engine
        self.tun = tun
        self.batch_size, self.snaplen, self.io_mode = batch_size, snaplen, io
        self.io = None             # opened on the thread itself (an io_uring has one issuer)
        self.lock = lock if lock is not None else threading.Lock()   # held for engine calls
        self.primary = primary     # runs control calls and expiry
        self.clock = clock
        self._calls: collections.deque = collections.deque()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK)
        self._stopping = False
        self.ready = threading.Event()   # set once the I/O is open (self.io says which)
        self.errors = 0            # engine exceptions (each dropped one batch)
        self.batches = 0
        self.frames = 0
        self.loop_turns = 0        # waits: with no traffic, about one per MAX_IDLE_WAIT_S

    @property
    def write_failures(self) -> int:
        """Frames the kernel refused on write."""
        return self.io.write_failures if self.io is not None else 0

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
        try:
            self.io = open_io(self.tun, self.io_mode, self.batch_size, self._wake, self.snaplen)
        finally:
            self.ready.set()
        log.info("%s: TUN I/O %s", self.name, self.io.name)
        try:
            self._loop()
        finally:
            self.io.close()
            os.close(self._wake)

    def _loop(self) -> None:
        engine, lock, io, clock = self.engine, self.lock, self.io, self.clock
        deadline, checked = 0.0, -DEADLINE_RECHECK_S     # engine.next_deadline() at `checked`
        while not self._stopping:
            self.loop_turns += 1
            wait_s = MAX_IDLE_WAIT_S
            if self.primary:
                now = clock()
                if now - checked >= DEADLINE_RECHECK_S:
                    with lock:
                        deadline, checked = engine.next_deadline(), now
                wait_s = min(max(deadline - now, 0.0), wait_s)
            for batch in io.frames(wait_s):
                self._process(batch)
            if self._run_calls():
                checked = -DEADLINE_RECHECK_S
            if self.primary and clock() >= deadline:
                with lock:
                    now = checked = clock()
                    deadline = engine.next_deadline()
                    if deadline <= now:      # else the copy was stale: one pass, no expiry
                        self._guard(engine.expire, now)
                        deadline = engine.next_deadline()

    def _run_calls(self) -> bool:
        """Queued control calls (the I/O drains the wake eventfd when it fires); whether
        any ran."""
        if not self._calls:
            return False
        while self._calls:
            fn, fut = self._calls.popleft()
            try:
                with self.lock:
                    result = fn(self.engine, self.clock())
                fut.set_result(result)
            except Exception as exc:  # reported to the caller, never kills the data path
                fut.set_exception(exc)
        return True

    def _process(self, batch) -> None:
        """One batch read: the engine's verdict, then its writes."""
        self.batches += 1
        self.frames += batch.count
        with self.lock:
            verdict = self._guard(self.engine.process, batch, self.clock())
        if verdict is not None:
            self.io.write_rows(batch, verdict.rows, verdict.lengths)
            for frame in verdict.extra:
                self.io.write(frame)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception:
            self.errors += 1
            log.exception("engine error (batch dropped, data path continues)")
            return None

    def counters(self) -> dict:
        """What `userlb show stats` reports under "datapath"; read_rearms and read_errors
        count io_uring's multishot READs (submitted; ended by an error), 0 with "read"."""
        return {"batches": self.batches, "frames": self.frames, "engine_errors": self.errors,
                "write_failures": self.write_failures,
                "read_rearms": getattr(self.io, "rearms", 0),
                "read_errors": getattr(self.io, "read_errors", 0)}


class Workers:
    """One DataPath per TUN queue over one engine and one lock (module docstring);
    call() and stop() as a single DataPath's."""

    def __init__(self, engine, queues, batch_size: int = 256, io: str = "auto") -> None:
        lock = threading.Lock()
        self.paths = [DataPath(engine, q, batch_size, io=io, lock=lock, primary=i == 0,
                               name=f"userlb-datapath{i}" if len(queues) > 1 else
                               "userlb-datapath")
                      for i, q in enumerate(queues)]

    def start(self) -> None:
        for path in self.paths:
            path.start()

    def call(self, fn) -> Future:
        return self.paths[0].call(fn)

    def stop(self, timeout_s: float = 5.0) -> None:
        for path in self.paths:
            path.stop(timeout_s)

    def counters(self) -> dict:
        total: dict = {}
        for path in self.paths:
            for key, value in path.counters().items():
                total[key] = total.get(key, 0) + value
        return total
