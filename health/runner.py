"""EDGE: runs the checks of a configuration on the running asyncio (or uvloop) loop.

What it does: one task per check. Each task waits until the policy says the check is due (first
runs are jittered by the policy's seeded schedule, so starts are staggered), takes a slot of a
semaphore that bounds how many probes run at once, runs the probe, feeds the result to the
policy with loop.time(), and passes every resulting event to on_change. start() also reports the
initial table (alpha servers down, sorry server if quorum is lost at start); stop() cancels every
task and waits for them, and a cancelled external check leaves no child process behind.

What it does not do: decide anything (policy.py) or touch the engine (control.py applies events).
It mirrors keepalived's checker thread loop, with time read once per result and passed in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable

from userlb.health.policy import HealthEvent, HealthPolicy
from userlb.health.probes import Prober, run_check
from userlb.health.spec import CheckId, ProbeResult, ServiceHealth

log = logging.getLogger(__name__)


class HealthRunner:
    """Checks of a configuration, run until stop(); events go to on_change."""

    def __init__(self, services: Iterable[ServiceHealth], on_change: Callable[[HealthEvent], None], *,
                 seed: int = 0, max_concurrent: int = 64, prober: Prober = run_check,
                 emit_initial: bool = True) -> None:
        self._services = tuple(services)
        self._on_change = on_change
        self._seed = seed
        self._max_concurrent = max_concurrent
        self._prober = prober
        self._emit_initial = emit_initial
        self._tasks: dict[CheckId, asyncio.Task] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self.policy: HealthPolicy | None = None

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start(self) -> None:
        """Build the policy at loop.time(), report the initial table, start one task per check."""
        if self.policy is not None:
            raise RuntimeError("runner already started")
        loop = asyncio.get_running_loop()
        self._semaphore = asyncio.Semaphore(self._max_concurrent)
        self.policy = HealthPolicy(self._services, loop.time(), seed=self._seed)
        initial = self.policy.initial_events()
        if self._emit_initial:
            self._emit(initial)
        self._spawn_all()

    async def stop(self) -> None:
        """Cancel every check task and wait until they have ended."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reload(self, services: Iterable[ServiceHealth]) -> None:
        """Switch configuration; unchanged checks keep their state and due time (policy.reload)."""
        if self.policy is None:
            raise RuntimeError("runner not started")
        self._services = tuple(services)
        await self.stop()
        self._emit(self.policy.reload(self._services, asyncio.get_running_loop().time()))
        self._spawn_all()

    async def __aenter__(self) -> "HealthRunner":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    def _spawn_all(self) -> None:
        for check_id in self.policy.check_ids():
            task = asyncio.create_task(self._check_loop(check_id), name=f"health {check_id}")
            task.add_done_callback(self._task_done)
            self._tasks[check_id] = task

    @staticmethod
    def _task_done(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("health task %s died", task.get_name(), exc_info=task.exception())

    def _emit(self, events: list[HealthEvent]) -> None:
        for event in events:
            try:
                self._on_change(event)
            except Exception:
                log.exception("on_change failed for %r", event)

    async def _check_loop(self, check_id: CheckId) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while self._tasks.get(check_id) is me:   # also ends a task whose cancellation got lost
            delay_s = self.policy.next_due(check_id) - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            check, host, port = self.policy.target(check_id)
            async with self._semaphore:
                result = await self._probe(check, host, port)
            self._emit(self.policy.observe(check_id, result, loop.time()))

    async def _probe(self, check, host: str, port: int) -> ProbeResult:
        try:
            return await self._prober(check, host, port)
        except Exception as exc:        # a fake or future prober that raises still counts as a failure
            return ProbeResult(False, 0.0, f"probe raised {type(exc).__name__}: {exc}")
