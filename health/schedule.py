"""When each check runs next: due times, jittered first runs and bounded concurrency, with `now` passed in.

What it does: keeps one due time per check. A new check's first run is drawn uniformly from
[now, now + warmup] with a seeded random.Random, so the same seed and configuration give the same
plan (keepalived: warmup default random in [0, delay_loop]). due(now) hands out the due checks,
earliest first, never more than max_concurrent at a time; finish() records the next due time the
policy chose. next_deadline() says when a single-timer driver must wake next.

What it does not do: decide intervals (policy.py does, from each check's knobs), sleep, or run
anything. runner.py uses next_due() per check task; a driver with one timer can use due() and
next_deadline() instead.
"""

from __future__ import annotations

import random
from typing import Hashable


class CheckSchedule:
    """Due times of checks keyed by an id, plus which of them are running."""

    def __init__(self, *, seed: int = 0, max_concurrent: int | None = None) -> None:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self._rng = random.Random(seed)
        self.max_concurrent = max_concurrent
        self._due: dict[Hashable, float] = {}
        self._running: set[Hashable] = set()

    def add(self, check_id: Hashable, now: float, warmup_s: float) -> float:
        """Register a check whose first run falls in [now, now + warmup_s]; returns that time."""
        offset_s = self._rng.uniform(0.0, warmup_s) if warmup_s > 0 else 0.0
        self._due[check_id] = now + offset_s
        return self._due[check_id]

    def keep(self, check_id: Hashable, due: float) -> None:
        """Register a check with a known due time (state carried across a reload)."""
        self._due[check_id] = due

    def remove(self, check_id: Hashable) -> None:
        self._due.pop(check_id, None)
        self._running.discard(check_id)

    def next_due(self, check_id: Hashable) -> float:
        """When this check should next start."""
        return self._due[check_id]

    def due(self, now: float) -> list[Hashable]:
        """Checks due at `now` and not running, earliest first, up to the free slots; marks them running."""
        free = len(self._due) if self.max_concurrent is None else self.max_concurrent - len(self._running)
        ready = sorted((t, i, cid) for i, (cid, t) in enumerate(self._due.items())
                       if t <= now and cid not in self._running)
        started = [cid for _, _, cid in ready[:max(free, 0)]]
        self._running.update(started)
        return started

    def finish(self, check_id: Hashable, next_due: float) -> None:
        """The check ran; it is due again at next_due."""
        self._running.discard(check_id)
        if check_id in self._due:
            self._due[check_id] = next_due

    def next_deadline(self) -> float | None:
        """Earliest due time among idle checks; None if nothing can start before a running check ends."""
        if self.max_concurrent is not None and len(self._running) >= self.max_concurrent:
            return None
        idle = [t for cid, t in self._due.items() if cid not in self._running]
        return min(idle, default=None)

    @property
    def running(self) -> frozenset:
        return frozenset(self._running)

    def __len__(self) -> int:
        return len(self._due)
